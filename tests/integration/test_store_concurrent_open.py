"""Eight processes open a brand-new store at once: every one of them completes its run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, fresh_pg_url
from tether.journal import Store, verify_chain

PROCESSES = 8
ROUNDS = 6  # the race on a new PostgreSQL schema showed in about one round of four


def _open_together(url: str, go: Path) -> list[tuple[int, str, str]]:
    """Start the processes, release them at once when all are ready, and collect their ends."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.integration.store_agent", url, "open", str(go)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(PROCESSES)
    ]
    for proc in procs:  # the barrier: every child has imported tether and waits for the file
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "READY"
    go.touch()
    ends = []
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        ends.append((proc.returncode, out, err))
    return ends


def _check(url: str, ends: list[tuple[int, str, str]]) -> None:
    failed = [[x for x in err.splitlines() if "Error" in x][-1:] for code, _, err in ends if code]
    assert not failed, f"{len(failed)} of {PROCESSES} processes failed: {failed}"
    results = [line.split() for _, out, _ in ends for line in out.splitlines() if "RESULT" in line]
    assert [r[2] for r in results] == ["succeeded"] * PROCESSES
    store = Store(url)
    try:
        assert len(store.run_ids()) == PROCESSES
        for _, run_id, _ in results:
            assert verify_chain(run_id, store.events(run_id)) is None
            assert store.get_run(run_id).status == "succeeded"
    finally:
        store.close()


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_processes_opening_a_new_postgresql_database_at_once_all_succeed(
    pg_url: str, tmp_path: Path, round_: int
) -> None:
    url = fresh_pg_url(pg_url)
    _check(url, _open_together(url, tmp_path / "go"))


@pytest.mark.parametrize("round_", range(3))
def test_processes_opening_a_new_sqlite_file_at_once_all_succeed(
    tmp_path: Path, round_: int
) -> None:
    url = str(tmp_path / "new.db")
    _check(url, _open_together(url, tmp_path / "go"))
