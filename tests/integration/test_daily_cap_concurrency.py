"""The daily dollar cap holds under contention: many OS processes, one agent, one cap.

``WORKERS`` child processes (``tests/integration/budget_agent.py``) start at once against the same
store, SQLite file or PostgreSQL schema, and each makes ``RUNS`` runs of an agent whose model calls
cost money. Together they ask for several times the cap. Afterwards the money spent (in the
journals and in the store's counter) never exceeds the cap, and comes within one estimate of it.

``TETHER_TEST_DAILY_CAP_GUARD=check-then-add`` runs the children with a guard that reads the
day's spend and adds to it after the call, as a cap without reservations would: then this test
fails, as it should.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import tether
from tests.conftest import ROOT
from tests.integration.budget_agent import AGENT_NAME, CAP, COST, ESTIMATE, TURNS
from tether.engine.budget import DAILY_COST
from tether.journal import Store

WORKERS = 8
RUNS = 4
DAY = 86_400
GUARD = os.environ.get("TETHER_TEST_DAILY_CAP_GUARD", "reserve")


def _spawn(args: list[str]) -> subprocess.Popen[str]:
    # the children import the tether this test imported
    src = Path(tether.__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), str(ROOT)])}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.integration.budget_agent", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def contend(store_url: str, tmp_path: Path) -> tuple[list[dict[str, Any]], float]:
    Store(store_url).close()  # create the schema once, before the workers race
    go = tmp_path / "go"
    now = time.time()
    procs = [_spawn([store_url, str(go), repr(now), str(RUNS), GUARD]) for _ in range(WORKERS)]
    try:
        for p in procs:
            assert p.stdout is not None
            line = p.stdout.readline()
            assert line.strip() == "READY", (line, p.stderr.read() if p.stderr else "")
        go.touch()
        reports = []
        for p in procs:
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
            result = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
            assert result, (out, err)
            reports.append(json.loads(result[0].removeprefix("RESULT ")))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return reports, now


def test_concurrent_runs_never_spend_past_the_daily_cap(store_url: str, tmp_path: Path) -> None:
    asked = WORKERS * RUNS * TURNS * COST
    assert asked > 3 * CAP
    reports, now = contend(store_url, tmp_path)
    # the runs overlapped: every worker was running when the last one started
    assert max(r["started"] for r in reports) < min(r["finished"] for r in reports)
    statuses = [s for r in reports for s in r["statuses"]]
    assert "succeeded" in statuses and "budget_exceeded" in statuses
    spent = sum(c for r in reports for c in r["costs"])
    with Store(store_url) as store:
        count, total = store.counter(DAILY_COST, AGENT_NAME, int(now // DAY) * DAY)
        journaled = sum(run.cost_usd for run in store.list_runs(limit=10_000))
    assert total == pytest.approx(spent) and journaled == pytest.approx(spent)
    assert spent <= CAP + 1e-9, f"spent ${spent:.2f} against a cap of ${CAP:.2f}"
    # the cap was reached: no further call fitted, even with calls still settling
    assert spent > CAP - ESTIMATE - WORKERS * (ESTIMATE - COST) - 1e-9
    assert count == round(spent / COST)  # every call counted once, none that never ran
