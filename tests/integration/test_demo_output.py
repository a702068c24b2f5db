"""`make demo` in an 80-column terminal: a line per ticket as it finishes, a compact table."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from examples.support_desk import data
from examples.support_desk.tickets import TICKETS

pytestmark = pytest.mark.skipif(not data.available(), reason="τ²-bench retail data not found")

ROOT = Path(__file__).resolve().parents[2]


def test_progress_per_ticket_and_a_summary_that_fits_80_columns(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "COLUMNS": "80",
        "TETHER_DEMO_DIR": str(tmp_path),
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
    }
    out = subprocess.run(
        [sys.executable, "-m", "examples.demo", "--model", "scripted"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    lines = out.splitlines()
    too_long = [line for line in lines if len(line.rstrip()) > 80]
    assert not too_long, too_long
    n = len(TICKETS)
    for i, ticket in enumerate(TICKETS, 1):
        # progress: one line per ticket, as it finishes
        assert any(line.startswith(f"[{i:>2}/{n}] {ticket.id} ") for line in lines), ticket.id
        # summary: one whole row per ticket (status, steps... and the run id on the same line)
        rows = [line for line in lines if re.match(rf"\s*{ticket.id}\b( !)?\s+[a-z_]+\s+\d+", line)]
        assert len(rows) == 1 and re.search(r"\b[0-9a-f]{6,}\s*$", rows[0]), rows
    assert f"{n} tickets in" in out and "tether show" in out
