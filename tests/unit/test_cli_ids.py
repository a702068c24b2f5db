"""Selecting runs and approvals by id from the CLI: exact ids, literal prefixes, listings that
print ids the same CLI accepts back. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json

from tests.conftest import tether
from tether.engine.runtime import Runtime, load_agent
from tether.journal.store import MIN_ID_PREFIX, Store

REF = "examples.quickstart.agent:agent"


def start_waiting_run(db: str) -> tuple[str, str]:
    out = tether(db, "run", REF, "--input", "Refund order #1001 please", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["status"] == "waiting_approval"
    return result["run_id"], result["waiting_for"]["approval_id"]


def start_runs(db: str, ids: list[str]) -> None:
    """Runs with ids the caller chose (the Python API allows any id)."""
    store = Store(db)
    runtime = Runtime(store)
    agent = load_agent(REF)
    for run_id in ids:
        asyncio.run(runtime.run(agent, "Refund order #1001 please", run_id=run_id, agent_ref=REF))
    store.close()


def test_an_empty_id_selects_nothing(store_url: str) -> None:
    run_id, approval_id = start_waiting_run(store_url)
    for args in (["approve", ""], ["approve", "  "], ["reject", "", "--reason", "no"]):
        out = tether(store_url, *args)
        assert out.returncode == 2, out.stdout
        assert "an id is required" in out.stderr and "Traceback" not in out.stderr
    cancelled = tether(store_url, "cancel", "")
    assert cancelled.returncode == 2 and "an id is required" in cancelled.stderr
    for args in (["show", ""], ["resume", ""], ["answer", "", "hi"]):
        assert tether(store_url, *args).returncode == 2
    pending = json.loads(tether(store_url, "approvals", "--json").stdout)
    assert [a["id"] for a in pending] == [approval_id]
    assert json.loads(tether(store_url, "runs", "--json").stdout)[0]["status"] == (
        "waiting_approval"
    )
    assert run_id


def test_a_short_prefix_or_a_wildcard_selects_nothing(store_url: str) -> None:
    run_id, approval_id = start_waiting_run(store_url)
    short = approval_id[: MIN_ID_PREFIX - 1]
    out = tether(store_url, "approve", short)
    assert out.returncode == 2 and f"at least {MIN_ID_PREFIX} characters" in out.stderr
    for wildcard in ("%", "_", "%%%%%%", "______"):
        out = tether(store_url, "cancel", wildcard)
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert json.loads(tether(store_url, "approvals", "--json").stdout)[0]["status"] == "pending"
    # a prefix long enough still works, and a whole id always does
    shown = tether(store_url, "show", run_id[:MIN_ID_PREFIX])
    assert shown.returncode == 0 and run_id in shown.stdout


def test_like_wildcards_in_a_prefix_are_literal(store_url: str) -> None:
    start_runs(store_url, ["order_1234", "ab"])
    out = tether(store_url, "show", "order%")  # as a LIKE pattern this matched order_1234
    assert out.returncode == 2 and "no such run" in out.stderr
    out = tether(store_url, "show", "order?1234".replace("?", "_"))
    assert out.returncode == 0 and "run order_1234" in out.stdout
    assert tether(store_url, "show", "orderX").returncode == 2  # `_` is not a wildcard
    exact_short = tether(store_url, "show", "ab")  # a whole id shorter than a prefix matches
    assert exact_short.returncode == 0 and "run ab " in exact_short.stdout


def first_column(table: str) -> list[str]:
    """The first cell of each body row of a Rich table (its header row is drawn with ┃)."""
    rows = [line.split("│") for line in table.splitlines() if line.startswith("│")]
    return [cells[1].strip() for cells in rows]


def test_listed_ids_select_their_record(store_url: str) -> None:
    # caller-chosen ids sharing their first 12 characters, and one id that begins another
    ids = ["customer-0001-a", "customer-0001-b", "order7", "order77"]
    start_runs(store_url, ids)
    listed = first_column(tether(store_url, "runs").stdout)
    assert sorted(listed) == sorted(["customer-0001-a", "customer-0001-b", "order7", "order77"])
    queue = tether(store_url, "approvals").stdout
    run_column = [line.split("│")[2].strip() for line in queue.splitlines() if line.startswith("│")]
    assert sorted(run_column) == sorted(ids)
    for approval_prefix, run_prefix in zip(first_column(queue), run_column, strict=True):
        assert len(approval_prefix) >= MIN_ID_PREFIX
        shown = tether(store_url, "show", run_prefix)
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.startswith(f"run {run_prefix} ")
        out = tether(store_url, "approve", approval_prefix, "--no-resume", "--json")
        assert out.returncode == 0, out.stderr
    assert json.loads(tether(store_url, "approvals", "--json").stdout) == []


def test_a_cut_listing_says_so(store_url: str) -> None:
    start_runs(store_url, [f"run-{i:02d}" for i in range(5)])
    cut = tether(store_url, "runs", "--limit", "2")
    assert cut.returncode == 0
    assert "showing 2 of 5 runs; see more with --limit" in cut.stdout
    assert len(first_column(cut.stdout)) == 2
    whole = tether(store_url, "runs", "--limit", "5")
    assert "showing" not in whole.stdout and len(first_column(whole.stdout)) == 5
