"""Journals written in schema version 2 (batch rows) by an earlier tether load, verify and
replay after migration 3 moves them to the events table (see tests/golden/make_golden.py)."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from tests.conftest import tether
from tests.golden.agent import agent
from tether.journal import Store
from tether.journal.batches import decode_batch
from tether.journal.chain import GENESIS
from tether.journal.events import Event
from tether.journal.migrations import MIGRATIONS
from tether.replay import replay_run

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "v2.db"
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
    finally:
        store.close()
    out = tether(db, "verify", "--all")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "4 run(s), every hash chain verifies" in out.stdout
