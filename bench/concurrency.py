"""Throughput of tether under concurrency beside a bare async PostgreSQL loop, in the same run.

Every run takes ``--steps`` steps: a model call that sleeps ``--sleep`` seconds (an async model,
as a provider's HTTP call would) and answers with one call of a side-effecting tool
(``effect="write"``: no rule speaks, so the effect's default allows it, and tether journals its
intent before it runs and its result after), then one more model call (also sleeping) for the
final answer. The tool is a plain function that does no I/O, declared ``inline=True``: tether
calls it on the loop, as the bare loop calls it, instead of on its pool of tool threads (a sync
tool's default, so a blocking call cannot stall the loop). ``--runs`` runs start at once with
``asyncio.gather`` on one event loop, through one ``Runtime`` sharing one ``Store``:

* ``tether_pg``: the store on PostgreSQL (a scratch schema, dropped afterwards);
* ``tether_sqlite``: the store in a SQLite file in a temporary directory;
* ``tether_memory``: the store in an in-memory SQLite database, the cheapest store there is, to
  tell the loop lag that storage causes from the lag of the engine's own work;
* ``bare_pg``: the same runs without tether: the same sleeps, the tool called directly, and one
  ``INSERT`` + ``COMMIT`` a step (a row shaped and sized like one journal event) through a pool of
  ``--pool`` ``psycopg.AsyncConnection``\\ s (hand-rolled: ``psycopg_pool`` is not installed).
  tether commits twice a step (the intent before the tool runs, the result after); the bare loop
  commits once, as the benchmark's spec asks.

Throughput is steps a second: ``runs * steps`` over the wall time of the ``gather`` (the final
answers' model calls are in the wall time but not counted as steps, on both sides). While each
measurement runs, a monitor coroutine sleeps 1 ms in a loop and records how late it wakes: the
worst and the 99th percentile of that lag say how long the loop was kept from its other work.
Before the runs, the latency of one ``INSERT`` + ``COMMIT`` waited for in turn on one connection
is measured: a loop that blocks on each commit can do no more than its inverse a second. After
them, one more tether run on PostgreSQL counts its commits and statements.

At the end every run is checked: it succeeded, took ``steps + 1`` steps, ran its tool ``steps``
times, and left ``4 * steps + 3`` events in the store (run_started, then per step model_response,
tool_proposed, tool_started and tool_finished, then the final model_response and run_finished);
the bare loop left ``steps`` rows per run. The last line reads

    concurrency: tether_pg=<steps/s> bare_pg=<steps/s> ratio=<x> tether_sqlite=<steps/s> lag_ms=<ms>

with ratio = tether_pg / bare_pg and lag_ms the worst loop lag from storage in the tether
PostgreSQL run: the longest that one callback held the event loop (every callback is timed while
the runs go), an upper bound on any store call made on the loop, or on the loop's wait for a
storage thread to let go of the interpreter. Pauses of Python's garbage collector are timed
apart and taken out of the callback they fell in: the collector runs wherever memory is
allocated, whatever the store, and its longest pause has a column of its own. The monitor's
lateness is in the table beside it; with a thousand runs ready at once it mostly measures the
wait behind their steps' own work (compare ``tether_memory``, which does no I/O).

    .venv/bin/python bench/concurrency.py [--runs N] [--steps N] [--sleep S] [--pg URL] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import sqlalchemy as sa
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tether import Agent, Limits, ModelRequest, ModelResponse, ToolCall, ToolContext, tool
from tether.engine import Runtime
from tether.journal import Store
from tether.models.scripted import to_response

DEFAULT_PG = os.environ.get("TETHER_BENCH_PG", "postgresql://127.0.0.1:5432/test")
AGENT = "bench"
LAG_INTERVAL = 0.001  # the monitor's sleep

# -- the agent ----------------------------------------------------------------------------------

calls: Counter[str] = Counter()  # tool executions by run id


@tool(effect="write", inline=True)
def record(ctx: ToolContext, i: int) -> dict[str, Any]:
    """Record that step ``i`` was done (a side effect: journaled before and after)."""
    calls[ctx.run_id] += 1
    return {"i": i, "written": True}


class SleepyModel:
    """A scripted model that takes ``delay`` seconds to answer, as a provider's call would."""

    def __init__(self, steps: int, delay: float) -> None:
        self.steps = steps
        self.delay = delay

    @property
    def name(self) -> str:
        return "scripted:sleepy"

    async def request(self, request: ModelRequest) -> ModelResponse:
        await asyncio.sleep(self.delay)
        done = len(request.messages) // 2 - 1  # system + input, then a call and a result a step
        item: str | ToolCall = (
            "done" if done >= self.steps else ToolCall(f"c{done}", "record", {"i": done})
        )
        return to_response(item, request, self.name, estimate=False)


def make_agent(steps: int, delay: float, name: str = AGENT) -> Agent:
    return Agent(
        name=name,
        instructions="benchmark",
        tools=[record],
        limits=Limits(max_steps=steps + 2, max_repeats=10**9),
        model=SleepyModel(steps, delay),
    )


def expected_events(steps: int) -> Counter[str]:
    per_step = ("model_response", "tool_proposed", "tool_started", "tool_finished")
    expected: Counter[str] = Counter({t: steps for t in per_step})
    expected.update(["run_started", "model_response", "run_finished"])
    return expected


# -- measuring ----------------------------------------------------------------------------------


@dataclass
class Measured:
    """One measurement: wall time of the gather and the loop's lag while it ran."""

    name: str
    runs: int
    steps: int
    wall: float = 0.0
    lags: list[float] = field(default_factory=list)  # seconds late, one per monitor wake-up
    results: list[Any] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    ok: bool = True
    longest_callback: float = 0.0  # seconds: the longest one callback held the loop
    longest_what: str = ""
    longest_gc: float = 0.0  # seconds: the garbage collector's longest pause

    @property
    def rate(self) -> float:
        return self.runs * self.steps / self.wall

    @property
    def worst_lag_ms(self) -> float:
        return max(self.lags, default=0.0) * 1e3

    @property
    def p99_lag_ms(self) -> float:
        if len(self.lags) < 2:
            return self.worst_lag_ms
        return statistics.quantiles(self.lags, n=100, method="inclusive")[98] * 1e3

    def check(self, ok: bool, text: str) -> None:
        self.ok = self.ok and ok
        self.checks.append(("ok   " if ok else "FAIL ") + text)


async def monitor(lags: list[float], stop: asyncio.Event) -> None:
    """Sleep ``LAG_INTERVAL`` in a loop and record how late each wake-up comes."""
    clock = time.perf_counter
    while not stop.is_set():
        asked = clock() + LAG_INTERVAL
        await asyncio.sleep(LAG_INTERVAL)
        lags.append(max(0.0, clock() - asked))


class CallbackTimer:
    """Times every callback the event loop runs while active: the longest is the longest the
    loop was held by one piece of work, so any storage call made on the loop took at most that.
    (A monitor's lateness, beside it, also counts the wait behind a thousand runs' ready steps.)

    Python's cyclic garbage collector runs inside whatever callback allocates when a collection
    is due, whatever the store; its pauses are timed apart (``gc.callbacks``) and taken out of
    the callback they fell in, so ``longest`` is the longest hold by the work itself (storage
    included) and ``longest_gc`` the collector's longest pause.
    """

    def __init__(self) -> None:
        self.longest = 0.0
        self.what = ""
        self.longest_gc = 0.0
        self.collecting = 0.0  # seconds spent in the collector so far
        self._gc_started = 0.0
        self._run = asyncio.events.Handle._run

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        now = time.perf_counter()
        if phase == "start":
            self._gc_started = now
            return
        took = now - self._gc_started
        self.collecting += took
        self.longest_gc = max(self.longest_gc, took)

    def __enter__(self) -> CallbackTimer:
        timer, run, clock = self, self._run, time.perf_counter

        def timed(handle: asyncio.events.Handle) -> None:
            collected = timer.collecting
            started = clock()
            run(handle)
            took = clock() - started - (timer.collecting - collected)
            if took > timer.longest:
                timer.longest, timer.what = took, repr(handle)[:160]

        asyncio.events.Handle._run = timed  # type: ignore[method-assign]
        gc.callbacks.append(self._on_gc)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.events.Handle._run = self._run  # type: ignore[method-assign]
        gc.callbacks.remove(self._on_gc)


async def measure(
    m: Measured, make_run: Callable[[int], Awaitable[Any]], progress: Progress
) -> None:
    """Start ``m.runs`` runs at once, timing the gather and watching the loop's lag."""
    task = progress.add_task(m.name, total=m.runs)

    async def one(i: int) -> Any:
        try:
            return await make_run(i)
        finally:
            progress.advance(task)

    stop = asyncio.Event()
    watcher = asyncio.create_task(monitor(m.lags, stop))
    await asyncio.sleep(0)  # the monitor is waiting before the runs start
    started = time.perf_counter()
    with CallbackTimer() as timer:
        m.results = await asyncio.gather(*(one(i) for i in range(m.runs)), return_exceptions=True)
    m.wall = time.perf_counter() - started
    m.longest_callback, m.longest_what = timer.longest, timer.what
    m.longest_gc = timer.longest_gc
    stop.set()
    await watcher
    progress.remove_task(task)


# -- tether -------------------------------------------------------------------------------------


async def tether_measure(
    name: str, store: Store, runs: int, steps: int, delay: float, progress: Progress
) -> Measured:
    runtime = Runtime(store)
    # warm up (imports, caches, the store's connection) with a few runs of another agent
    warm = make_agent(2, 0.0, name=f"{AGENT}-warmup")
    await asyncio.gather(*(runtime.run(warm, "warm up") for _ in range(3)))
    agent = make_agent(steps, delay)
    m = Measured(name, runs, steps)
    await measure(m, lambda i: runtime.run(agent, f"run {i}"), progress)
    check_tether(m, store)
    return m


async def pg_traffic(store: Store, steps: int) -> tuple[int, int]:
    """Commits and statement calls of one tether run of ``steps`` steps (no sleeps), counted on
    psycopg's classes while it runs; the run is a warm-up agent's, outside the checks."""
    counts = Counter[str]()
    commit, execute, executemany = (
        psycopg.Connection.commit,
        psycopg.Cursor.execute,
        psycopg.Cursor.executemany,
    )

    def counting(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            counts[name] += 1
            return fn(*args, **kwargs)

        return counted

    psycopg.Connection.commit = counting("commit", commit)  # type: ignore[method-assign]
    psycopg.Cursor.execute = counting("statement", execute)  # type: ignore[method-assign]
    psycopg.Cursor.executemany = counting("statement", executemany)  # type: ignore[method-assign]
    try:
        result = await Runtime(store).run(make_agent(steps, 0.0, name=f"{AGENT}-warmup"), "count")
    finally:
        psycopg.Connection.commit = commit  # type: ignore[method-assign]
        psycopg.Cursor.execute = execute  # type: ignore[method-assign]
        psycopg.Cursor.executemany = executemany  # type: ignore[method-assign]
    assert result.ok, result
    return counts["commit"], counts["statement"]


def check_tether(m: Measured, store: Store) -> None:
    errors = [r for r in m.results if isinstance(r, BaseException)]
    results = [r for r in m.results if not isinstance(r, BaseException)]
    m.check(not errors, f"{len(errors)} runs raised" + (f", first {errors[0]!r}" if errors else ""))
    good = [r for r in results if r.ok and r.steps == m.steps + 1]
    statuses = Counter(r.status for r in results)
    m.check(
        len(good) == m.runs,
        f"{len(good)}/{m.runs} runs succeeded in {m.steps + 1} steps ({dict(statuses)})",
    )
    ran = sum(1 for r in results if calls[r.run_id] == m.steps)
    m.check(ran == m.runs, f"{ran}/{m.runs} runs ran their tool {m.steps} times")
    expected = expected_events(m.steps)
    total = sum(expected.values())
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT r.status, r.steps, r.event_count, COUNT(*) FROM runs r "
                "WHERE r.agent = :agent GROUP BY r.status, r.steps, r.event_count"
            ),
            {"agent": AGENT},
        ).all()
        stored_runs = {(s, n, c): k for s, n, c, k in rows}
        per_run = conn.execute(
            sa.text(
                "SELECT e.run_id, e.type, COUNT(*) FROM events e JOIN runs r ON r.id = e.run_id "
                "WHERE r.agent = :agent GROUP BY e.run_id, e.type"
            ),
            {"agent": AGENT},
        ).all()
    want = {("succeeded", m.steps + 1, total): m.runs}
    m.check(
        stored_runs == want,
        f"stored runs: {m.runs} succeeded with {m.steps + 1} steps and {total} events"
        if stored_runs == want
        else f"stored runs by (status, steps, events): {stored_runs}",
    )
    events: dict[str, Counter[str]] = {}
    for run_id, type_, n in per_run:
        events.setdefault(run_id, Counter())[type_] = n
    right = sum(1 for c in events.values() if c == expected)
    m.check(
        right == m.runs and len(events) == m.runs,
        f"{right}/{m.runs} runs have the expected {total} events by type in the store",
    )


# -- bare PostgreSQL loop -----------------------------------------------------------------------


class ConnectionPool:
    """A fixed set of open async connections, lent one at a time."""

    def __init__(self, connections: Iterable[psycopg.AsyncConnection[Any]]) -> None:
        self.all = list(connections)
        self.idle: asyncio.Queue[psycopg.AsyncConnection[Any]] = asyncio.Queue()
        for conn in self.all:
            self.idle.put_nowait(conn)

    @classmethod
    async def open(cls, url: str, size: int, **kwargs: Any) -> ConnectionPool:
        conns = await asyncio.gather(
            *(psycopg.AsyncConnection.connect(url, **kwargs) for _ in range(size))
        )
        return cls(conns)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        conn = await self.idle.get()
        try:
            yield conn
        finally:
            self.idle.put_nowait(conn)

    async def close(self) -> None:
        for conn in self.all:
            await conn.close()


BARE_TABLE = """
CREATE TABLE steps (
    run_id VARCHAR(64) NOT NULL,
    seq INTEGER NOT NULL,
    type VARCHAR(40) NOT NULL,
    step INTEGER NOT NULL,
    ts DOUBLE PRECISION NOT NULL,
    payload JSONB,
    payload_text TEXT NOT NULL,
    hash VARCHAR(64) NOT NULL,
    PRIMARY KEY (run_id, seq)
)
"""
BARE_INSERT = "INSERT INTO steps VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"


async def bare_run(pool: ConnectionPool, i: int, steps: int, delay: float) -> int:
    """One run without tether: the model's sleeps, the tool, and a committed row a step."""
    run_id = uuid.uuid4().hex
    previous = "0" * 64
    for step in range(steps):
        await asyncio.sleep(delay)  # the model's call
        call = {"id": f"c{step}", "name": "record", "arguments": {"i": step}}
        result = {"i": step, "written": True}
        # a row like a tool_finished event: its payload, its text, its hash in a chain
        text = json.dumps(
            {"type": "tool_finished", "call": call, "result": result, "duration_ms": 0.1},
            separators=(",", ":"),
        )
        previous = hashlib.sha256((previous + text).encode()).hexdigest()
        async with pool.connection() as conn:
            await conn.execute(
                BARE_INSERT,
                (run_id, step + 1, "tool_finished", step + 1, time.time(), text, text, previous),
            )
            await conn.commit()
    await asyncio.sleep(delay)  # the final answer's model call
    return steps


async def bare_measure(
    url: str, schema: str, pool_size: int, runs: int, steps: int, delay: float, progress: Progress
) -> Measured:
    pool = await ConnectionPool.open(url, pool_size, options=f"-c search_path={schema}")
    try:
        async with pool.connection() as conn:
            await conn.execute(BARE_TABLE)
            await conn.commit()
        m = Measured("bare_pg", runs, steps)
        await measure(m, lambda i: bare_run(pool, i, steps, delay), progress)
        async with pool.connection() as conn:
            cur = await conn.execute(
                "SELECT COUNT(*), COUNT(DISTINCT run_id), MIN(n), MAX(n) FROM "
                "(SELECT run_id, COUNT(*) AS n FROM steps GROUP BY run_id) AS per_run"
            )
            _, distinct, least, most = (await cur.fetchone()) or (0, 0, 0, 0)
            await conn.rollback()
    finally:
        await pool.close()
    errors = [r for r in m.results if isinstance(r, BaseException)]
    m.check(not errors, f"{len(errors)} runs raised" + (f", first {errors[0]!r}" if errors else ""))
    m.check(
        distinct == runs and least == most == steps,
        f"{distinct}/{runs} runs stored, {least}..{most} rows a run (want {steps})",
    )
    return m


async def commit_latency(url: str, schema: str, n: int = 100) -> float:
    """Median seconds of one ``INSERT`` + ``COMMIT`` on one connection, waited for in turn."""
    async with await psycopg.AsyncConnection.connect(
        url, options=f"-c search_path={schema}"
    ) as conn:
        await conn.execute("CREATE TABLE probe (i INTEGER, body TEXT)")
        await conn.commit()
        times = []
        for i in range(n):
            started = time.perf_counter()
            await conn.execute("INSERT INTO probe VALUES (%s, %s)", (i, "x" * 200))
            await conn.commit()
            times.append(time.perf_counter() - started)
        await conn.execute("DROP TABLE probe")
        await conn.commit()
    return statistics.median(times)


# -- scratch PostgreSQL schema ------------------------------------------------------------------


def psycopg_url(url: str) -> str:
    """A URL psycopg understands (``postgresql+psycopg://`` is SQLAlchemy's spelling)."""
    for prefix in ("postgresql+psycopg://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix) :]
    return url


@asynccontextmanager
async def scratch_schema(url: str) -> AsyncIterator[str]:
    """A brand-new schema, dropped with everything in it afterwards."""
    schema = f"bench_concurrency_{uuid.uuid4().hex[:10]}"
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield schema
    finally:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await conn.execute(f"DROP SCHEMA {schema} CASCADE")


def with_search_path(url: str, schema: str) -> str:
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options={quote(f'-csearch_path={schema}', safe='')}"


# -- main ---------------------------------------------------------------------------------------


async def run_all(args: argparse.Namespace, console: Console) -> list[Measured]:
    url = psycopg_url(args.pg)
    runs, steps, delay = args.runs, args.steps, args.sleep
    measured: list[Measured] = []
    progress = Progress(
        TextColumn("{task.description:>14}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("runs"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        refresh_per_second=4,
    )
    async with scratch_schema(url) as schema:
        console.print(f"PostgreSQL scratch schema {schema} (dropped at the end)")
        latency = await commit_latency(url, schema)
        console.print(
            f"PostgreSQL: one INSERT + COMMIT waited for in turn takes {latency * 1e3:.2f} ms"
            f" (median of 100 on one connection): at most {1 / latency:,.0f} commits/s in series",
            soft_wrap=True,
        )
        with progress:
            measured.append(
                await bare_measure(url, schema, args.pool, runs, steps, delay, progress)
            )
            store = Store(with_search_path(url, schema))
            try:
                measured.append(
                    await tether_measure("tether_pg", store, runs, steps, delay, progress)
                )
                commits, statements = await pg_traffic(store, steps)
                console.print(
                    f"tether on PostgreSQL: one run of {steps} steps makes {commits} commits"
                    f" and {statements} statement calls (each a round trip at least)",
                    soft_wrap=True,
                )
            finally:
                store.close()
            with tempfile.TemporaryDirectory() as tmp:
                store = Store(str(Path(tmp) / "tether.db"))
                try:
                    measured.append(
                        await tether_measure("tether_sqlite", store, runs, steps, delay, progress)
                    )
                finally:
                    store.close()
            store = Store(":memory:")
            try:
                measured.append(
                    await tether_measure("tether_memory", store, runs, steps, delay, progress)
                )
            finally:
                store.close()
    return measured


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=None, help="concurrent runs (default 1000)")
    parser.add_argument("--steps", type=int, default=10, help="tool steps a run (default 10)")
    parser.add_argument("--sleep", type=float, default=0.05, help="seconds a model call takes")
    parser.add_argument("--pg", default=DEFAULT_PG, help=f"PostgreSQL URL (default {DEFAULT_PG})")
    parser.add_argument("--pool", type=int, default=16, help="bare loop's connections (16)")
    parser.add_argument("--quick", action="store_true", help="a smoke test: 100 runs")
    args = parser.parse_args()
    if args.runs is None:
        args.runs = 100 if args.quick else 1000
    if args.runs < 1 or args.steps < 1 or args.sleep < 0 or args.pool < 1:
        parser.error("--runs, --steps and --pool must be positive, --sleep not negative")

    console = Console()
    load = os.getloadavg()
    console.print(
        f"{args.runs} concurrent runs x {args.steps} steps, model calls of {args.sleep * 1e3:g} ms,"
        f" one write tool call a step; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
        soft_wrap=True,
    )
    measured = asyncio.run(run_all(args, console))
    by = {m.name: m for m in measured}

    ideal = args.runs * args.steps / ((args.steps + 1) * args.sleep) if args.sleep else None
    table = Table(title=f"{args.runs} runs x {args.steps} steps, started at once on one loop")
    columns = ("", "wall s", "steps/s", "vs bare_pg", "lag max ms", "lag p99 ms", "longest ms")
    for col in (*columns, "gc max ms"):
        table.add_column(col, justify="right")
    for m in measured:
        table.add_row(
            m.name,
            f"{m.wall:.2f}",
            f"{m.rate:,.0f}",
            f"{m.rate / by['bare_pg'].rate:.2f}x",
            f"{m.worst_lag_ms:.1f}",
            f"{m.p99_lag_ms:.1f}",
            f"{m.longest_callback * 1e3:.1f}",
            f"{m.longest_gc * 1e3:.1f}",
        )
    console.print(table)
    if ideal:
        console.print(
            f"(sleeps alone would allow {ideal:,.0f} steps/s: "
            f"{args.steps + 1} model calls of {args.sleep * 1e3:g} ms a run)"
        )
    pg, memory = by["tether_pg"], by["tether_memory"]
    console.print(
        f"loop lag of tether on PostgreSQL beyond an in-memory store: worst "
        f"{pg.worst_lag_ms - memory.worst_lag_ms:+.1f} ms, p99 "
        f"{pg.p99_lag_ms - memory.p99_lag_ms:+.1f} ms",
        soft_wrap=True,
    )
    console.print(
        "lag: how late a 1 ms sleep woke (queueing behind every run's ready work included);"
        " longest: the longest one callback held the loop, which bounds any storage call made"
        " on it (garbage collection taken out); gc max: the collector's longest pause."
        f" Longest on PostgreSQL: {pg.longest_what}",
        soft_wrap=True,
        highlight=False,
    )
    for m in measured:
        for line in m.checks:
            console.print(f"{m.name:>14}: {line}", highlight=False, soft_wrap=True)
    everything = all(m.ok for m in measured)
    console.print("correctness: " + ("all checks passed" if everything else "CHECKS FAILED"))
    bare = by["bare_pg"]
    print(
        f"concurrency: tether_pg={pg.rate:.0f} bare_pg={bare.rate:.0f} "
        f"ratio={pg.rate / bare.rate:.2f} tether_sqlite={by['tether_sqlite'].rate:.0f} "
        f"lag_ms={pg.longest_callback * 1e3:.1f}"
    )
    sys.stdout.flush()
    return 0 if everything else 1


if __name__ == "__main__":
    sys.exit(main())
