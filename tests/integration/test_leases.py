"""One driver per run, across real processes: a run being driven is not resumed by a second
process; a dead driver's run is taken over; a driver that was taken over writes nothing more.

Process A is the real ``tether run`` CLI driving an agent whose side-effecting call blocks until
the test opens a gate (see ``lease_agent``); process B is the real ``tether resume``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.integration.lease_agent import GATE_ENV, LOG_ENV
from tether.journal import Store, verify_chain

AGENTS = {
    "idempotent": "tests.integration.lease_agent:idempotent_agent",
    "not-idempotent": "tests.integration.lease_agent:plain_agent",
}


def _env(tmp_path: Path, ttl: float) -> dict[str, str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join((str(ROOT / "src"), str(ROOT))),
        LOG_ENV: str(tmp_path / "executions.log"),
        GATE_ENV: str(tmp_path / "gate"),
        "TETHER_LEASE_TTL": str(ttl),
        "TETHER_AGENTS": ",".join(AGENTS.values()),  # the operator allows these agents' code
        "COLUMNS": "200",
    }
    env.pop("TETHER_DB", None)
    return env


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "tether.cli.app", *args]


def _start(db: str, agent: str, env: dict[str, str]) -> subprocess.Popen[str]:
    """Process A: `tether run` of the agent, which stops inside its tool until the gate opens."""
    return subprocess.Popen(
        _cli("run", AGENTS[agent], "--input", "go", "--db", db, "--json"),
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _resume(db: str, run_id: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Process B: the real `tether resume`."""
    return subprocess.run(
        _cli("resume", run_id, "--db", db, "--json"),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _executions(tmp_path: Path) -> list[str]:
    log = tmp_path / "executions.log"
    return log.read_text().splitlines() if log.exists() else []


def _inside_tool(proc: subprocess.Popen[str], tmp_path: Path, db: str) -> str:
    """Wait until A is inside its tool call; return the run's id."""
    deadline = time.monotonic() + 60
    while not _executions(tmp_path):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the tool was never called"
        time.sleep(0.05)
    store = Store(db)
    try:
        runs = store.list_runs()
    finally:
        store.close()
    assert len(runs) == 1
    return runs[0].id


def _journal(db: str, run_id: str) -> tuple[str, list[str]]:
    store = Store(db)
    try:
        events = store.events(run_id)
        assert verify_chain(run_id, events) is None
        return store.get_run(run_id).status, [e.type for e in events]
    finally:
        store.close()


@pytest.mark.parametrize("agent", sorted(AGENTS))
def test_resume_refuses_a_run_another_process_is_driving(
    store_url: str, tmp_path: Path, agent: str
) -> None:
    env = _env(tmp_path, ttl=5.0)
    a = _start(store_url, agent, env)
    try:
        run_id = _inside_tool(a, tmp_path, store_url)
        b = _resume(store_url, run_id, env)  # A is still inside the call: the gate is shut
        assert a.poll() is None
        assert b.returncode == 2, (b.stdout, b.stderr)
        message = " ".join(b.stderr.split())
        assert f"run {run_id} is being driven by" in message, b.stderr
        assert " until " in message and "Traceback" not in b.stderr
    finally:
        (tmp_path / "gate").touch()
        out, err = a.communicate(timeout=120)
    assert a.returncode == 0, err
    assert '"status": "succeeded"' in out
    assert len(_executions(tmp_path)) == 1  # the side effect ran exactly once
    status, types = _journal(store_url, run_id)
    assert status == "succeeded"
    assert types.count("tool_started") == 1 and types.count("tool_finished") == 1
    assert types[-1] == "run_finished" and "run_resumed" not in types


def test_resume_takes_over_from_a_killed_driver(store_url: str, tmp_path: Path) -> None:
    # a long lease: the dead holder is recognised at once, not when its lease runs out
    env = _env(tmp_path, ttl=120.0)
    a = _start(store_url, "idempotent", env)
    run_id = _inside_tool(a, tmp_path, store_url)
    a.send_signal(signal.SIGKILL)
    a.wait()
    (tmp_path / "gate").touch()
    started = time.monotonic()
    b = _resume(store_url, run_id, env)
    assert b.returncode == 0, b.stderr
    assert '"status": "succeeded"' in b.stdout
    assert time.monotonic() - started < 60
    status, types = _journal(store_url, run_id)
    assert status == "succeeded" and types[-1] == "run_finished"
    assert types.count("tool_finished") == 1


def test_a_driver_taken_over_writes_nothing_more(store_url: str, tmp_path: Path) -> None:
    env = _env(tmp_path, ttl=1.5)
    a = _start(store_url, "idempotent", env)
    try:
        run_id = _inside_tool(a, tmp_path, store_url)
        a.send_signal(signal.SIGSTOP)  # A stalls inside the call past its lease
        time.sleep(3.0)
        (tmp_path / "gate").touch()
        b = _resume(store_url, run_id, env)  # takes the expired lease over, finishes the run
        assert b.returncode == 0, b.stderr
        assert '"status": "succeeded"' in b.stdout
        status, before = _journal(store_url, run_id)
        assert status == "succeeded"
    finally:
        a.send_signal(signal.SIGCONT)
    out, err = a.communicate(timeout=120)
    # A's call returns; its next write is refused with the lease error, and lands nowhere
    assert a.returncode == 2, (out, err)
    assert f"lease lost on run {run_id}" in " ".join(err.split()), err
    assert "Traceback" not in err
    status, after = _journal(store_url, run_id)
    assert status == "succeeded" and after == before
    assert before.count("tool_finished") == 1 and before[-1] == "run_finished"
