"""Golden journals of each format load, decode, verify and replay (see tests/golden/make_golden.py):
format 2 (batch rows, written by an earlier tether) after migration 3 moves it to the events
table, and format 3 (one row per event) as this version writes it."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from tests.conftest import tether
from tests.golden.agent import agent
from tether.journal import Store
from tether.journal.batches import decode_batch
from tether.journal.chain import GENESIS
from tether.journal.events import JOURNAL_FORMAT, Event, RunStarted, ToolFinished
from tether.journal.jsontext import decode_json
from tether.journal.migrations import MIGRATIONS
from tether.replay import replay_run

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "v2.db"
GOLDEN_V3 = GOLDEN.with_name("v3.db")
FAILED_RUN_DIVERGENCE = {
    "step": 2,
    "what": "the replay makes more model calls than the recording",
    "original": "1 model calls",
    "replayed": "one more",
}  # what replay reported for the failed run on the journal as version 2 stored it


def _batched_events(db: Path) -> dict[str, list[Event]]:
    """Every run's events as the version-2 batch rows hold them, read before migrating."""
    out: dict[str, list[Event]] = {}
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT run_id, first_seq, last_seq, events FROM event_batches ORDER BY id"
        ).fetchall()
    for run_id, first, last, body in rows:
        before = out.setdefault(run_id, [])
        before += decode_batch(run_id, first, last, body, before[-1].hash if before else GENESIS)
    return out


async def test_golden_v2_journal_migrates_verifies_and_replays(tmp_path: Path) -> None:
    db = tmp_path / "golden.db"
    shutil.copy(GOLDEN, db)
    expected = _batched_events(db)
    assert len(expected) == 4
    store = Store(str(db))  # migration 3 runs here
    try:
        assert store.schema_version == MIGRATIONS[-1][0]
        statuses = {r.id: r.status for r in store.list_runs()}
        assert sorted(statuses.values()) == ["failed", "succeeded", "succeeded", "succeeded"]
        types = set()
        for run_id, events in expected.items():
            assert store.events(run_id) == events
            assert store.count_events(run_id) == len(events)
            types |= {e.type for e in events}
            report = await replay_run(store, run_id, agent)
            if statuses[run_id] == "succeeded":
                assert report.matched, (run_id, report.divergence)
            else:  # as before the migration: a model error is not replayed as one
                assert report.divergence == FAILED_RUN_DIVERGENCE
        assert {"approval_decided", "policy_decision", "model_error"} <= types
        assert [a.status for a in store.list_approvals(status=None)] == ["approved"]
        # every event decodes to its typed form; a read's proposal, carried inside its result
        # in format 2, is upcast into the result's ``proposed``
        datas = [e.data for events in expected.values() for e in events]
        started = [d for d in datas if isinstance(d, RunStarted)]
        assert {d.format for d in started} == {2}
        carried = [d.proposed for d in datas if isinstance(d, ToolFinished) and d.proposed]
        assert [(p.tool, p.decision) for p in carried] == [("lookup", "allow")] * 2
    finally:
        store.close()
    out = tether(db, "verify", "--all")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "4 run(s), every hash chain verifies" in out.stdout


async def test_golden_v3_journal_decodes_to_the_same_payloads_verifies_and_replays(
    tmp_path: Path,
) -> None:
    """Format 3 as written: each stored payload decodes to its typed event and encodes back to
    the same JSON, so a change to an event's shape cannot slip in unnoticed."""
    db = tmp_path / "golden.db"
    shutil.copy(GOLDEN_V3, db)
    store = Store(str(db))
    try:
        runs = {r.id: r.status for r in store.list_runs()}
        assert sorted(runs.values()) == ["failed", "succeeded", "succeeded", "succeeded"]
        for run_id, status in runs.items():
            events = store.events(run_id)
            for ev in events:
                assert ev.data.to_json() == decode_json(ev.payload_json), (run_id, ev.seq)
            first = events[0].data
            assert isinstance(first, RunStarted) and first.format == JOURNAL_FORMAT
            report = await replay_run(store, run_id, agent)
            if status == "succeeded":
                assert report.matched, (run_id, report.divergence)
            else:
                assert report.divergence == FAILED_RUN_DIVERGENCE
    finally:
        store.close()
    out = tether(db, "verify", "--all")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "4 run(s), every hash chain verifies" in out.stdout
