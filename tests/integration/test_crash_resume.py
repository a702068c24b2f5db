"""Kill -9 a worker at random points of a multi-step run; resume; nothing happens twice."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import PG_URL, ROOT, fresh_pg_url
from tests.integration.crash_agent import TRANSFERS
from tether.journal import Store, verify_chain

TRIALS = {"sqlite": 24, "postgres": 12}
_PATH = os.pathsep.join((str(ROOT / "src"), str(ROOT)))  # this checkout's sources first


def _spawn(db: Path | str, ledger: Path, *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": _PATH}
    # unbuffered bytes: reading the READY line must not swallow what the child prints next
    # (on a loaded machine a quick resume prints its RESULT before the parent reads READY)
    return subprocess.Popen(
        [sys.executable, "-m", "tests.integration.crash_agent", str(db), str(ledger), *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        bufsize=0,
    )


def _wait_ready(proc: subprocess.Popen[bytes]) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    assert line.strip() == "READY", (line, proc.stderr.read() if proc.stderr else "")


def _finish(proc: subprocess.Popen[bytes]) -> str:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    return out.decode()


def _run_id(db: Path | str) -> str | None:
    store = Store(str(db))
    try:
        runs = store.list_runs()
        return runs[0].id if runs else None
    finally:
        store.close()


def _journal(tmp_path: Path, name: str, backend: str) -> Path | str:
    """A new journal for one trial: a SQLite file, or an empty PostgreSQL schema."""
    return tmp_path / f"{name}.db" if backend == "sqlite" else fresh_pg_url(PG_URL)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_sigkill_at_random_points_then_resume(tmp_path: Path, backend: str) -> None:
    rng = random.Random(20261125)
    # calibrate: how long an uninterrupted run takes on this machine
    db, ledger = _journal(tmp_path, "calib", backend), tmp_path / "calib-ledger.db"
    proc = _spawn(db, ledger, "start")
    _wait_ready(proc)
    started = time.perf_counter()
    assert "RESULT succeeded" in _finish(proc)
    duration = time.perf_counter() - started

    kills_in_doubt = 0
    for trial in range(TRIALS[backend]):
        db, ledger = _journal(tmp_path, f"t{trial}", backend), tmp_path / f"t{trial}-ledger.db"
        proc = _spawn(db, ledger, "start")
        _wait_ready(proc)
        time.sleep(rng.uniform(0.0, duration))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        run_id = _run_id(db)
        # some trials are killed a second time, during the resume
        kills = 1
        while True:
            if run_id is None:  # killed before the run row was written: start again
                proc = _spawn(db, ledger, "start")
            else:
                proc = _spawn(db, ledger, "resume", run_id)
            _wait_ready(proc)
            if kills < 2 and rng.random() < 0.3:
                time.sleep(rng.uniform(0.0, duration / 2))
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
                run_id = run_id or _run_id(db)
                continue
            out = _finish(proc)
            break
        assert "RESULT succeeded" in out, out
        run_id = run_id or _run_id(db)
        assert run_id is not None

        conn = sqlite3.connect(ledger)
        effects = conn.execute("SELECT key, amount FROM effects ORDER BY amount").fetchall()
        attempts = conn.execute("SELECT key, COUNT(*) FROM attempts GROUP BY key").fetchall()
        conn.close()
        # every transfer took effect exactly once, with the amounts in order
        assert [a for _, a in effects] == list(range(1, TRANSFERS + 1)), effects
        assert len({k for k, _ in effects}) == TRANSFERS
        kills_in_doubt += sum(1 for _, n in attempts if n > 1)

        store = Store(str(db))
        events = store.events(run_id)
        assert verify_chain(run_id, events) is None
        types = [e.type for e in events]
        assert types[0] == "run_started" and types[-1] == "run_finished"
        finished = {e.payload["call_id"] for e in events if e.type == "tool_finished"}
        started_ids = {e.payload["call_id"] for e in events if e.type == "tool_started"}
        assert started_ids <= finished  # every started call has its result journaled
        assert len(started_ids) == TRANSFERS  # side-effecting calls journal their intent
        steps = [e.step for e in events if e.type == "model_response"]
        assert len(steps) == len(set(steps))  # a recorded model response is never asked again
        assert (
            len(
                [
                    e
                    for e in events
                    if e.type == "tool_finished" and e.payload["content"].startswith("moved")
                ]
            )
            == TRANSFERS
        )
        assert store.get_run(run_id).status == "succeeded"
        store.close()
    # the random points did hit the window between intent and result at least once
    print(f"in-doubt retries resolved by idempotency keys: {kills_in_doubt}")


def test_in_doubt_irreversible_call_escalates_instead_of_repeating(tmp_path: Path) -> None:
    db, ledger = tmp_path / "w.db", tmp_path / "w-ledger"
    env = {**os.environ, "PYTHONPATH": _PATH, "CRASH_LEDGER": str(ledger)}
    cmd = [sys.executable, "-m", "tether.cli.app"]
    ref = "tests.integration.crash_agent:wire_agent"
    first = subprocess.run(
        [*cmd, "run", ref, "--input", "go", "--db", str(db), "-q"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert first.returncode == -9  # the process died inside the tool
    run_id = _run_id(db)
    assert run_id is not None
    second = subprocess.run(
        [*cmd, "resume", run_id, "--db", str(db), "--json", "--agent", ref],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert second.returncode == 0, second.stderr
    assert '"status": "escalated"' in second.stdout and "in doubt" in second.stdout
    store = Store(str(db))
    events = store.events(run_id)
    assert verify_chain(run_id, events) is None
    assert [e.type for e in events].count("tool_started") == 1  # never re-run
    store.close()
