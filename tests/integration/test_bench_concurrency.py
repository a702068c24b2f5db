"""The concurrency benchmark, small, in a child process against the real PostgreSQL server."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import sqlalchemy as sa

from tests.conftest import PG_URL, ROOT

SMALL = ["--runs", "20", "--steps", "3", "--sleep", "0.01"]
LAST_LINE = re.compile(
    r"concurrency: tether_pg=(\d+) bare_pg=(\d+) ratio=(\d+\.\d\d) tether_sqlite=(\d+) "
    r"lag_ms=(\d+\.\d)"
)


def test_the_benchmark_runs_small_and_every_run_succeeds(pg_url: str) -> None:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}", "COLUMNS": "200"}
    done = subprocess.run(
        [sys.executable, "bench/concurrency.py", *SMALL, "--pg", PG_URL],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert LAST_LINE.fullmatch(lines[-1]), lines[-1]
    shown = {line.strip() for line in lines}
    assert "correctness: all checks passed" in shown
    for name in ("tether_pg", "tether_sqlite", "tether_memory"):
        assert f"{name}: ok   20/20 runs succeeded in 4 steps ({{'succeeded': 20}})" in shown
        assert f"{name}: ok   20/20 runs ran their tool 3 times" in shown
        assert f"{name}: ok   20/20 runs have the expected 15 events by type in the store" in shown
    assert "bare_pg: ok   20/20 runs stored, 3..3 rows a run (want 3)" in shown
    assert not [line for line in lines if "FAIL" in line]
    # the scratch schema is gone
    schema = re.search(r"scratch schema (bench_concurrency_\w+)", done.stdout)
    assert schema is not None
    engine = sa.create_engine(PG_URL)
    try:
        with engine.connect() as conn:
            left = conn.execute(
                sa.text("SELECT COUNT(*) FROM pg_namespace WHERE nspname = :name"),
                {"name": schema.group(1)},
            ).scalar_one()
    finally:
        engine.dispose()
    assert left == 0
