"""Cost per successful task on the τ²-bench retail oracle workload: routing and caching off vs on.

Two scripted models play each task's ground truth
(:class:`~examples.support_desk.oracle.OracleModel`) through the support-desk ticket agent in the
runtime:

* ``oracle-small`` makes mistakes: a seeded :class:`~tether.models.faults.FaultModel` breaks the
  JSON of a call, names an unknown tool or gives an argument the wrong type on ``--small-error``
  of its calls (default 15%);
* ``oracle-large`` does not.

Prices (dollars per million input / output tokens): small $0.15 / $0.60, large $2.50 / $10.00.
Token usage is estimated from each request (messages, including the instructions with policy.md,
and the tool schemas) and each answer, as :func:`tether.models.base.estimate_request_tokens` does,
so a call costs what a provider would bill for a prompt of that size.

Configurations (each runs every task ``--repeats`` times, like a nightly regression suite):

==================  ============================================================================
``large``           the large model alone: routing and cache off (the baseline, "off")
``small``           the small model alone; its broken calls are fed back by the runtime and redone
``cascade``         ``CascadeModel(small, large)``: an invalid small answer goes to the large model
``large+cache``     ``CacheModel`` with a ``MemoryCache`` shared by the repeats of a task
``cascade+cache``   both ("on")
==================  ============================================================================

A run succeeds when it ends ``succeeded`` and the store equals the expected changes. Dollars and
provider calls (cache hits are not provider calls) are divided by the number of successful runs.

    .venv/bin/python bench/cost.py [--tasks N] [--repeats 3] [--small-error 0.15] [--workers 2]

Ends with ``cost: off=$<x>/task on=$<x>/task ratio=<x>``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import zlib
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from examples.support_desk.data import load_expected, load_tasks  # noqa: E402
from examples.support_desk.oracle import (  # noqa: E402
    OracleModel,
    drive,
    oracle_agent,
    task_by_id,
    task_input,
    task_steps,
)
from examples.support_desk.oracle_direct import compare_store  # noqa: E402
from examples.support_desk.store import Store  # noqa: E402

from tether.engine import Runtime  # noqa: E402
from tether.journal import Store as Journal  # noqa: E402
from tether.messages import ModelRequest, ModelResponse  # noqa: E402
from tether.models.base import Model  # noqa: E402
from tether.models.cache import CacheModel, MemoryCache  # noqa: E402
from tether.models.faults import FaultKind, FaultModel  # noqa: E402
from tether.models.pricing import PricedModel, PriceTable  # noqa: E402
from tether.models.router import CascadeModel  # noqa: E402

SMALL, LARGE = "oracle-small", "oracle-large"
PRICES = PriceTable.from_dict(
    {SMALL: {"input": 0.15, "output": 0.60}, LARGE: {"input": 2.50, "output": 10.00}}
)
SMALL_MISTAKES = (FaultKind.MALFORMED_JSON, FaultKind.UNKNOWN_TOOL, FaultKind.WRONG_TYPE)
CONFIGS = ("large", "small", "cascade", "large+cache", "cascade+cache")
OFF, ON = "large", "cascade+cache"


class Counted:
    """Counts the calls that reach a provider (a model under every wrapper)."""

    def __init__(self, inner: Model, counts: dict[str, int], key: str) -> None:
        self.inner = inner
        self.counts = counts
        self.key = key

    @property
    def name(self) -> str:
        return self.inner.name

    async def request(self, request: ModelRequest) -> ModelResponse:
        self.counts[self.key] = self.counts.get(self.key, 0) + 1
        return await self.inner.request(request)


@dataclass(slots=True)
class Run:
    """One run of one task in one configuration."""

    config: str
    task_id: str
    repeat: int
    ok: bool
    cost_usd: float
    input_tokens: int
    output_tokens: int
    small_calls: int
    large_calls: int
    cache_hits: int
    escalations: int


def build(
    config: str, task_id: str, seed: int, small_error: float, counts: dict[str, int],
    cache: MemoryCache,
) -> Model:  # fmt: skip
    """The model stack of one configuration for one run."""
    steps = task_steps(task_by_id(task_id))

    def small() -> Model:
        faulty = FaultModel(OracleModel(steps, name=SMALL), small_error, seed, kinds=SMALL_MISTAKES)
        return PricedModel(Counted(faulty, counts, "small"), PRICES)

    def large() -> Model:
        return PricedModel(Counted(OracleModel(steps, name=LARGE), counts, "large"), PRICES)

    makers: dict[str, Callable[[], Model]] = {
        "large": large,
        "small": small,
        "cascade": lambda: CascadeModel(small(), large()),
    }
    base, _, cached = config.partition("+")
    model = makers[base]()
    return CacheModel(model, cache) if cached else model


async def run_config(
    config: str, task_id: str, repeats: int, small_error: float, journal: Journal, base_seed: int
) -> list[Run]:
    """Every repeat of one task in one configuration (one cache shared by the repeats)."""
    cache = MemoryCache()
    runs: list[Run] = []
    task = task_by_id(task_id)
    for repeat in range(repeats):
        counts: dict[str, int] = {}
        seed = zlib.crc32(f"{base_seed}:{task_id}:{repeat}".encode())
        store = Store.fresh()
        model = build(config, task_id, seed, small_error, counts, cache)
        runtime = Runtime(journal, model=model, requested_by="bench")
        result, _ = await drive(runtime, oracle_agent(store), task_input(task))
        ok = result.ok and not compare_store(store, load_expected()[task_id]["changed"])
        store.close()
        hits = escalations = 0
        for ev in journal.events(result.run_id):
            if ev.type == "model_response":
                meta = ev.payload["response"].get("meta") or {}
                hit = meta.get("cache") == "hit"
                hits += hit
                escalations += bool(meta.get("escalated")) and not hit
        runs.append(Run(config, task_id, repeat, ok, result.cost_usd, result.input_tokens,
                        result.output_tokens, counts.get("small", 0), counts.get("large", 0),
                        hits, escalations))  # fmt: skip
    return runs


_JOURNAL: list[Journal] = []


def run_unit(
    task_id: str, configs: Sequence[str], repeats: int, small_error: float, base_seed: int
) -> list[Run]:
    """All configurations of one task: the unit of work of a worker process."""
    if not _JOURNAL:
        _JOURNAL.append(Journal(":memory:"))

    async def go() -> list[Run]:
        out: list[Run] = []
        for config in configs:
            out += await run_config(config, task_id, repeats, small_error, _JOURNAL[0], base_seed)
        return out

    return asyncio.run(go())


def main(argv: Sequence[str] | None = None) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
    from rich.table import Table

    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--tasks", type=int, default=None, help="only the first N tasks")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each task per config")
    parser.add_argument("--small-error", type=float, default=0.15, help="small model error rate")
    parser.add_argument("--workers", type=int, default=2, help="processes")
    parser.add_argument("--seed", type=int, default=7, help="base seed")
    args = parser.parse_args(argv)
    ids = [t["id"] for t in load_tasks()][: args.tasks]
    console = Console(highlight=False, width=150)
    started = time.perf_counter()
    runs: list[Run] = []
    unit = (CONFIGS, args.repeats, args.small_error, args.seed)
    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console) as progress:  # fmt: skip
        bar = progress.add_task("tasks", total=len(ids))
        if args.workers <= 1:
            for task_id in ids:
                runs += run_unit(task_id, *unit)
                progress.advance(bar)
        else:
            with ProcessPoolExecutor(max_workers=args.workers) as pool:
                futures = [pool.submit(run_unit, task_id, *unit) for task_id in ids]
                for future in as_completed(futures):
                    runs += future.result()
                    progress.advance(bar)
    elapsed = time.perf_counter() - started

    by_config: dict[str, list[Run]] = defaultdict(list)
    for r in runs:
        by_config[r.config].append(r)
    table = Table(title=f"cost per successful task: {len(ids)} tasks x {args.repeats} runs, "
                  f"small model wrong on {args.small_error:.0%} of calls")  # fmt: skip
    columns = ("config", "runs", "succeeded", "$ total", "$ / task", "small calls / task",
               "large calls / task", "cache hits", "escalations", "tokens in / task")  # fmt: skip
    for col in columns:
        table.add_column(col, justify="right")
    per_task: dict[str, float] = {}
    for config in CONFIGS:
        group = by_config[config]
        wins = sum(r.ok for r in group) or 1
        dollars = sum(r.cost_usd for r in group)
        per_task[config] = dollars / wins
        table.add_row(
            config, str(len(group)), str(sum(r.ok for r in group)), f"{dollars:.4f}",
            f"{dollars / wins:.5f}", f"{sum(r.small_calls for r in group) / wins:.2f}",
            f"{sum(r.large_calls for r in group) / wins:.2f}",
            str(sum(r.cache_hits for r in group)), str(sum(r.escalations for r in group)),
            f"{sum(r.input_tokens for r in group) / wins:,.0f}",
        )  # fmt: skip
    console.print(table)
    console.print("tokens in / task counts cache hits too (they are not billed)")
    console.print(f"{len(runs)} runs in {elapsed:.0f} s ({args.workers} workers)")
    ratio = per_task[OFF] / per_task[ON] if per_task[ON] else float("inf")
    console.print(f"cost: off=${per_task[OFF]:.4f}/task on=${per_task[ON]:.4f}/task "
                  f"ratio={ratio:.1f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
