"""The overhead benchmark runs end to end and prints its summary line (the figures are recorded
in bench/RESULTS.md; a test asserts only that they are produced and sane)."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import ROOT


def test_overhead_bench_prints_its_summary_line() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "overhead.py"), "--repeats", "1", "--steps", "10"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    last = out.strip().splitlines()[-1]
    found = re.fullmatch(
        r"overhead: tether=([\d.]+)/step bare_sqlite=([\d.]+)/step ratio=([\d.]+) "
        r"growth200/10=([\d.]+)",
        last,
    )
    assert found is not None, last
    tether, bare, ratio, growth = map(float, found.groups())
    assert tether > 0 and bare > 0 and growth > 0
    assert abs(ratio - tether / bare) < 0.01 * ratio + 0.01
    shown = re.search(r"tether show: ([\d,]+) events rendered", out)
    assert shown is not None and int(shown.group(1).replace(",", "")) >= 10_000
