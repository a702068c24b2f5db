"""`tether verify` names tampering done with plain SQL on the real tables, on SQLite and
PostgreSQL: events deleted, swapped or edited, a run deleted, an approval row edited, and, with a
journal key, hashes recomputed after an edit."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import tether
from tests.golden.agent import agent
from tether import ScriptedModel, call
from tether.engine import Runtime
from tether.journal import Store
from tether.journal.chain import GENESIS, event_hash
from tether.journal.store import normalise_url


def _approved_run(url: str) -> str:
    """A finished run with an irreversible call a human approved (11 events)."""
    store = Store(url)
    try:
        rt = Runtime(store, model=ScriptedModel([call("refund", order_id="A", amount=20), "done"]))
        waiting = asyncio.run(rt.run(agent, "refund A"))
        rt.approve(store.list_approvals(run_id=waiting.run_id)[0].id, by="alice", agent=agent)
        result = asyncio.run(rt.resume(waiting.run_id, agent))
        assert result.ok
        return result.run_id
    finally:
        store.close()


def _sql(url: str, *statements: str, **params: object) -> None:
    engine = sa.create_engine(normalise_url(url))
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.execute(sa.text(statement), params)
    finally:
        engine.dispose()


def _verify(url: str, *args: str) -> tuple[int, str, dict[str, object]]:
    db = Path(url) if "://" not in url else url  # a PostgreSQL URL is passed on as it is
    out = tether(db, "verify", *args)  # type: ignore[arg-type]
    report = json.loads(tether(db, "verify", *args, "--json").stdout)  # type: ignore[arg-type]
    assert "Traceback" not in out.stdout + out.stderr
    return out.returncode, out.stdout, report


def _count(url: str, run_id: str) -> int:
    engine = sa.create_engine(normalise_url(url))
    try:
        with engine.connect() as conn:
            query = sa.text("SELECT count(*) FROM events WHERE run_id = :r")
            return int(conn.execute(query, {"r": run_id}).scalar_one())
    finally:
        engine.dispose()


def _drop_last(url: str, run_id: str) -> int:
    n = _count(url, run_id)
    _sql(url, "DELETE FROM events WHERE run_id = :r AND seq = :n", r=run_id, n=n)
    return n


def _drop_middle(url: str, run_id: str) -> int:
    _sql(url, "DELETE FROM events WHERE run_id = :r AND seq = 4", r=run_id)
    return 4


def _swap(url: str, run_id: str) -> int:
    _sql(
        url,
        "UPDATE events SET seq = -1 WHERE run_id = :r AND seq = 3",
        "UPDATE events SET seq = 3 WHERE run_id = :r AND seq = 4",
        "UPDATE events SET seq = 4 WHERE run_id = :r AND seq = -1",
        r=run_id,
    )
    return 3


def _edit_payload(url: str, run_id: str) -> int:
    _sql(
        url,
        "UPDATE events SET payload_text = REPLACE(payload_text, '20.0', '2000.0')"
        " WHERE run_id = :r AND seq = 3",
        r=run_id,
    )
    return 3


def _edit_json_column(url: str, run_id: str) -> int:
    """Only the queryable column changes: the hashed text no longer says what it says."""
    cast = "CAST(:p AS jsonb)" if "postgresql" in normalise_url(url) else ":p"
    _sql(url, f"UPDATE events SET payload = {cast} WHERE run_id = :r AND seq = 2", r=run_id, p="{}")
    return 2


@pytest.mark.parametrize(
    ("tamper", "said"),
    [
        (_drop_last, "is missing"),
        (_drop_middle, "is missing"),
        (_swap, "does not match its hash"),
        (_edit_payload, "does not match its hash"),
        (_edit_json_column, "payload column differs"),
    ],
)
def test_verify_names_the_first_tampered_event(
    store_url: str, tamper: Callable[[str, str], int], said: str
) -> None:
    run_id = _approved_run(store_url)
    assert _verify(store_url, "--all")[0] == 0
    seq = tamper(store_url, run_id)
    code, shown, report = _verify(store_url, run_id)
    assert code == 1 and f"run {run_id} event #{seq}" in shown and said in shown
    problems = report["problems"]
    assert isinstance(problems, list) and problems[0]["seq"] == seq


def test_verify_all_names_a_deleted_run(store_url: str) -> None:
    first, second, third = (_approved_run(store_url) for _ in range(3))
    for table, column in (("events", "run_id"), ("approvals", "run_id"), ("runs", "id")):
        _sql(store_url, f"DELETE FROM {table} WHERE {column} = :r", r=second)
    code, shown, report = _verify(store_url, "--all")
    assert code == 1 and f"run {second} is in the run ledger but its row is gone" in shown
    assert report["runs"] == 2
    # the ledger entry deleted as well: the ledger's chain has a gap
    _sql(store_url, "DELETE FROM run_ledger WHERE run_id = :r", r=second)
    code, shown, _ = _verify(store_url, "--all")
    assert code == 1 and "run ledger entry #2 is missing" in shown
    assert first != third


@pytest.mark.parametrize(
    ("column", "value"),
    [("decided_by", "mallory"), ("status", "rejected"), ("args_hash", "0" * 64)],
)
def test_verify_names_an_edited_approval_row(store_url: str, column: str, value: str) -> None:
    run_id = _approved_run(store_url)
    _sql(store_url, f"UPDATE approvals SET {column} = :v WHERE run_id = :r", v=value, r=run_id)
    code, shown, _ = _verify(store_url, run_id)
    assert code == 1 and f"run {run_id} event #" in shown and "approval" in shown


def _rewrite_from(url: str, run_id: str, seq: int) -> None:
    """Edit event ``seq`` and recompute every hash from it on, and the run row's head, as
    someone who can write the database (but holds no key) would."""
    engine = sa.create_engine(normalise_url(url))
    json_value = "CAST(:t AS jsonb)" if "postgresql" in normalise_url(url) else ":t"
    try:
        with engine.begin() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT seq, type, step, ts, payload_text FROM events"
                    " WHERE run_id = :r ORDER BY seq"
                ),
                {"r": run_id},
            ).all()
            prev = GENESIS
            for s, type_, step, ts, text in rows:
                if s == seq:
                    text = text.replace("20.0", "2000.0")
                if s >= seq:
                    digest = event_hash(prev, s, type_, step, ts, text)
                    conn.execute(
                        sa.text(
                            "UPDATE events SET payload_text = CAST(:t AS TEXT),"
                            f" payload = {json_value}, hash = :h"
                            " WHERE run_id = :r AND seq = :s"
                        ),
                        {"t": text, "h": digest, "r": run_id, "s": s},
                    )
                    prev = digest
                else:
                    prev = conn.execute(
                        sa.text("SELECT hash FROM events WHERE run_id = :r AND seq = :s"),
                        {"r": run_id, "s": s},
                    ).scalar_one()
            conn.execute(
                sa.text("UPDATE runs SET head_hash = :h WHERE id = :r"), {"h": prev, "r": run_id}
            )
    finally:
        engine.dispose()


def test_a_keyed_chain_names_a_rewrite_that_recomputed_every_hash(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TETHER_JOURNAL_KEY", "s3cret")
    run_id = _approved_run(store_url)
    assert _verify(store_url, run_id)[0] == 0
    engine = sa.create_engine(normalise_url(store_url))
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM runs")).all()
    stored = " ".join(str(v) for row in rows for v in row)
    engine.dispose()
    assert "s3cret" not in stored and hashlib.sha256(b"s3cret").hexdigest() not in stored
    _rewrite_from(store_url, run_id, 3)
    code, shown, _ = _verify(store_url, run_id)
    assert code == 1 and f"run {run_id} event #3" in shown and "does not match its hash" in shown
    monkeypatch.delenv("TETHER_JOURNAL_KEY")
    code, shown, report = _verify(store_url, run_id)  # no key: links and anchor only
    assert code == 0 and "HMACs not" in shown and report["hashes_unchecked"] == 1


def test_an_unkeyed_chain_cannot_see_a_full_rewrite(store_url: str) -> None:
    """Why the key matters: the same rewrite on an unkeyed run verifies."""
    run_id = _approved_run(store_url)
    _rewrite_from(store_url, run_id, 3)
    code, shown, _ = _verify(store_url, run_id)
    assert code == 0 and "unkeyed" in shown


def test_a_keyed_run_rewritten_as_unkeyed_is_named_by_its_ledger_entry(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Clearing a keyed run's flag and rehashing its events without the key passes the run's
    own chain, but not its keyed entry in the run ledger."""
    monkeypatch.setenv("TETHER_JOURNAL_KEY", "s3cret")
    run_id = _approved_run(store_url)
    _sql(store_url, "UPDATE runs SET keyed = :f WHERE id = :r", f=False, r=run_id)
    _rewrite_from(store_url, run_id, 1)  # every event hashed again, unkeyed
    code, shown, _ = _verify(store_url, run_id)
    assert code == 0  # the run's own chain verifies unkeyed: the ledger is what tells
    code, shown, _ = _verify(store_url, "--all")
    assert code == 1 and f"run {run_id}: its row says unkeyed" in shown
    monkeypatch.delenv("TETHER_JOURNAL_KEY")  # without the key the entry is no plain hash
    code, shown, _ = _verify(store_url, "--all")
    assert code == 1 and "run ledger entry #1 does not match its hash" in shown
