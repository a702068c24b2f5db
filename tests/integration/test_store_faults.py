"""Store faults in the middle of a run: a dropped PostgreSQL connection, a locked SQLite file.

The run's writes are retried on a fresh connection and the run completes with every event
stored once; a store that stays unavailable past the retry budget ends the run with an error
the caller sees, and the journal stored so far still verifies and resumes.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import PG_URL, ROOT, fresh_pg_url
from tether import Agent, ModelRequest, ScriptedModel, ToolCall, tool
from tether.engine import Runtime
from tether.errors import StoreUnavailable
from tether.journal import Store, verify_chain
from tether.journal.faults import StoreRetry
from tether.models.scripted import ScriptItem

SRC_PATH = f"{ROOT / 'src'}{os.pathsep}{ROOT}"


def _terminate(application_name: str) -> int:
    """End every server connection of that application, as an administrator or a failover
    would; returns how many were ended."""
    engine = sa.create_engine(PG_URL)
    try:
        with engine.begin() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = :name AND pid <> pg_backend_pid()"
                ),
                {"name": application_name},
            ).all()
    finally:
        engine.dispose()
    return sum(1 for (ended,) in rows if ended)


def _tool_events(store: Store, run_id: str) -> list[str]:
    return [e.type for e in store.events(run_id) if e.type.startswith("tool_")]


def test_a_run_completes_when_its_postgresql_connections_are_terminated(pg_url: str) -> None:
    name = f"tether_faults_{uuid.uuid4().hex[:8]}"
    url = f"{fresh_pg_url(pg_url)}&application_name={name}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.store_agent", url, "run", "6", "0.3"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": SRC_PATH},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    ended, result = [], ""
    for line in proc.stdout:  # terminate the connections while steps 2 and 4 are in their tool
        if line.strip() in ("STEP 2", "STEP 4"):
            ended.append(_terminate(name))
        if line.startswith("RESULT"):
            result = line
            break
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 0, err
    assert len(ended) == 2 and all(n >= 1 for n in ended), ended
    _, run_id, status = result.split()
    assert status == "succeeded"
    store = Store(url)
    try:
        events = store.events(run_id)
        assert verify_chain(run_id, events) is None
        # every call proposed, started and finished once: nothing lost, nothing written twice
        started = [e for e in events if e.type == "tool_started"]
        finished = [e for e in events if e.type == "tool_finished"]
        assert len(started) == len(finished) == 6
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        assert store.get_run(run_id).status == "succeeded"
    finally:
        store.close()


# -- SQLite: a file locked by another process past the busy timeout ---------------------------

_HOLD = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("LOCKED", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("ROLLBACK")
"""

_holders: list[subprocess.Popen[str]] = []


def _lock_for(db: str, seconds: float) -> None:
    """Have another process take the file's write lock for ``seconds``."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD, db, str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "LOCKED"
    _holders.append(proc)


def _locking_agent(db: str, seconds: float) -> Agent:
    @tool(effect="write", idempotent=True)
    def lock_store(step: int) -> str:
        """Leaves the store locked by another process when it returns."""
        _lock_for(db, seconds)
        return f"locked at step {step}"

    def decide(request: ModelRequest) -> ScriptItem:
        done = sum(1 for m in request.messages if m.role == "tool")
        if done >= 2:
            return "done"
        return ToolCall(f"c{done}", "lock_store", {"step": done + 1})

    return Agent(
        name="locker",
        instructions="Lock the store twice.",
        tools=[lock_store],
        model=ScriptedModel(decide, name="scripted:locker"),
    )


@pytest.fixture(autouse=True)
def _reap_holders() -> object:
    yield None
    while _holders:
        proc = _holders.pop()
        proc.kill()
        proc.wait()


def test_a_run_completes_when_a_sqlite_file_stays_locked_past_the_busy_timeout(
    tmp_path: Path,
) -> None:
    db = str(tmp_path / "locked.db")
    # each write waits 0.1 s for the lock and then fails as `database is locked`; the retries
    # (about 2 s of backoff in all) outlast the other process's 0.8 s
    retry = StoreRetry(attempts=12, first_delay=0.05, max_delay=0.4)
    store = Store(db, busy_timeout=0.1, retry=retry)
    started = time.monotonic()
    result = asyncio.run(Runtime(store).run(_locking_agent(db, 0.8), "go"))
    assert result.status == "succeeded"
    assert time.monotonic() - started >= 1.6  # the writes waited out both locks
    events = store.events(result.run_id)
    assert verify_chain(result.run_id, events) is None
    assert _tool_events(store, result.run_id).count("tool_finished") == 2
    store.close()


def test_a_store_locked_past_the_retry_budget_stops_the_run_with_a_clear_error(
    tmp_path: Path,
) -> None:
    db = str(tmp_path / "locked.db")
    store = Store(db, busy_timeout=0.1, retry=StoreRetry(attempts=3, first_delay=0.05))
    runtime = Runtime(store)
    agent = _locking_agent(db, 30)
    with pytest.raises(StoreUnavailable) as caught:
        asyncio.run(runtime.run(agent, "go"))
    message = str(caught.value)
    assert "store unavailable" in message and "were not written" in message
    assert "tether resume" in message and "database is locked" in message
    assert caught.value.attempts == 3
    for proc in _holders:  # the store comes back
        proc.kill()
        proc.wait()
    run_id = store.run_ids()[0]
    assert run_id in message
    # what was stored before the fault verifies, and the run resumes from it and completes
    stored = store.events(run_id)
    assert verify_chain(run_id, stored) is None
    assert stored[-1].type == "tool_started"
    assert store.get_run(run_id).status == "running"
    resumed = asyncio.run(Runtime(store).resume(run_id, _locking_agent(db, 0.0)))
    assert resumed.status == "succeeded"
    assert verify_chain(run_id, store.events(run_id)) is None
    store.close()
