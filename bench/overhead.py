"""Per-step overhead of tether beside a bare loop and a bare loop committing one SQLite row a step.

Every figure comes from the same process in the same run (machines are noisy; ratios matter).
tether runs with a zero-latency scripted model, one read tool call per step, SQLite journaling on
(WAL, synchronous=NORMAL). The whole measurement runs in one coroutine on one event loop, and
each run is awaited there, as a worker or a server awaits its runs: starting and closing a fresh
loop per run with ``asyncio.run`` costs about 0.3 ms, ``asyncio.Runner.run`` installs and
removes a SIGINT handler per call (about 30 µs), and even entering a long-lived loop per run with
``run_until_complete`` costs about 8 µs; all of that belongs to the harness, not to the
runtime. Between samples the coroutine yields to its loop once, as a worker does between jobs
(a scripted model never yields, so otherwise the loop would never run).

Each length is sampled at least ``--repeats`` times and until ``--steps`` tether steps were
taken (so a 10-step run, which is over in half a millisecond, gets hundreds of samples), the
three loops interleaved sample by sample; the figures are medians. Also times `tether show` on
a 10,000-event run.

    .venv/bin/python bench/overhead.py [--repeats N] [--steps N]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from tether import Agent, Limits, ModelRequest, ScriptedModel, ToolCall, tool
from tether.engine import Runtime
from tether.journal import Store

LENGTHS = (10, 50, 200)


@tool(inline=True)
def fetch(i: int) -> dict[str, int]:
    """Return a small record."""
    return {"i": i, "square": i * i}


def make_agent(steps: int) -> Agent:
    def decide(request: ModelRequest) -> Any:
        done = len(request.messages) // 2 - 1
        if done >= steps:
            return "done"
        return ToolCall(f"c{done}", "fetch", {"i": done})

    model = ScriptedModel(decide, name="scripted:bench", estimate_usage=False)
    model.record_requests = False
    return Agent(
        name="bench",
        instructions="benchmark",
        tools=[fetch],
        limits=Limits(max_steps=steps + 2, max_repeats=10**9),
        model=model,
    )


async def tether_run(store: Store, steps: int) -> float:
    agent = make_agent(steps)
    runtime = Runtime(store)
    started = time.perf_counter()
    result = await runtime.run(agent, "go")
    elapsed = time.perf_counter() - started
    assert result.ok and result.steps == steps + 1, result
    return elapsed / steps


def bare_loop(steps: int) -> float:
    started = time.perf_counter()
    messages: list[dict[str, Any]] = []
    for i in range(steps):
        call = {"name": "fetch", "arguments": {"i": i}}
        result = fetch.fn(**call["arguments"])
        messages.append({"call": call, "result": json.dumps(result)})
    return (time.perf_counter() - started) / steps


def open_bare(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE IF NOT EXISTS steps (run TEXT, i INTEGER, body TEXT)")
    return conn


def bare_sqlite_loop(conn: sqlite3.Connection, steps: int) -> float:
    """The baseline: one committed row per step on a connection kept open (as tether does)."""
    run = str(time.perf_counter_ns())
    started = time.perf_counter()
    for i in range(steps):
        call = {"name": "fetch", "arguments": {"i": i}}
        result = fetch.fn(**call["arguments"])
        conn.execute("BEGIN")
        conn.execute(
            "INSERT INTO steps VALUES (?, ?, ?)",
            (run, i, json.dumps({"call": call, "result": result})),
        )
        conn.execute("COMMIT")
    return (time.perf_counter() - started) / steps


def time_show(store: Store, events: int) -> tuple[float, int]:
    """Build a run of about `events` events and time rendering its timeline."""
    from tether.cli import runs as runs_cli
    from tether.cli.common import console

    steps = events // 2  # a read step journals two events
    agent = make_agent(steps)
    result = asyncio.run(Runtime(store).run(agent, "go"))
    n = store.count_events(result.run_id)
    sink = Console(file=io.StringIO(), width=160, highlight=False)
    original = console.file
    console.file = sink.file
    try:
        started = time.perf_counter()
        runs_cli.show(result.run_id, db=store.url)
        elapsed = time.perf_counter() - started
    finally:
        console.file = original
    return elapsed, n


async def measure(
    store: Store, bare: sqlite3.Connection, samples_of: dict[int, int], progress: Progress
) -> dict[int, dict[str, float]]:
    """Median µs a step of each loop at each length, the loops interleaved sample by sample."""
    await tether_run(store, 10)  # warm up imports and caches
    bare_sqlite_loop(bare, 10)
    task = progress.add_task("measuring", total=sum(samples_of.values()))
    results: dict[int, dict[str, float]] = {}
    for n in LENGTHS:
        samples: dict[str, list[float]] = {"tether": [], "bare": [], "bare_sqlite": []}
        for _ in range(samples_of[n]):
            samples["bare"].append(bare_loop(n))
            samples["bare_sqlite"].append(bare_sqlite_loop(bare, n))
            samples["tether"].append(await tether_run(store, n))
            await asyncio.sleep(0)  # a worker's loop runs between its jobs
            progress.advance(task)
        results[n] = {k: statistics.median(v) * 1e6 for k, v in samples.items()}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=7, help="fewest samples per length")
    parser.add_argument("--steps", type=int, default=20_000, help="tether steps per length")
    args = parser.parse_args()
    samples_of = {n: max(args.repeats, args.steps // n) for n in LENGTHS}
    out = Console()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(str(Path(tmp) / "bench.db"))
        bare = open_bare(Path(tmp) / "bare.db")
        with Progress(console=out, transient=True) as progress:
            results = asyncio.run(measure(store, bare, samples_of, progress))
        show_seconds, show_events = time_show(store, 10_200)
        store.close()
        bare.close()

    table = Table(title="per-step cost, µs (median of runs)")
    for col in ("steps", "bare loop", "bare SQLite", "tether", "tether / bare SQLite"):
        table.add_column(col, justify="right")
    for n in LENGTHS:
        r = results[n]
        table.add_row(
            str(n),
            f"{r['bare']:.1f}",
            f"{r['bare_sqlite']:.1f}",
            f"{r['tether']:.1f}",
            f"{r['tether'] / r['bare_sqlite']:.2f}x",
        )
    out.print(table)
    out.print(f"tether show: {show_events:,} events rendered in {show_seconds:.3f} s")
    mid = results[50]
    growth = results[200]["tether"] / results[10]["tether"]
    print(
        f"overhead: tether={mid['tether']:.1f}/step bare_sqlite={mid['bare_sqlite']:.1f}/step "
        f"ratio={mid['tether'] / mid['bare_sqlite']:.2f} growth200/10={growth:.2f}"
    )


if __name__ == "__main__":
    main()
