"""Compounding error: a bare agent loop beside tether, on the τ²-bench retail oracle tasks.

The model is the support desk's :class:`~examples.support_desk.oracle.OracleModel` (it proposes
each task's ground-truth calls in order) wrapped in a seeded
:class:`~tether.models.faults.FaultModel` that, at a per-call rate, breaks the JSON of a call,
names an unknown tool, gives an argument the wrong type, swaps an argument for another valid-looking
value (``wrong_valid``), repeats the previous turn's calls, or times out / is rate limited / fails
with a 5xx. Every task runs ``--trials`` times per rate, each trial with its own seed; bare and
tether get the same seed for the same (rate, task, trial).

* **bare**: a minimal loop: call the model, run whatever tool call comes back, no validation, no
  policy, no retry. A tool's own refusal (``ToolError``) goes back to the model as text; any other
  error (model error, unparseable arguments, unknown tool, a crash in the tool) ends the run.
* **tether**: the support-desk ticket agent in the runtime (validation with feedback, the retail
  policy rules, approvals, journal), with ``RetryModel`` around the ``FaultModel`` (backoff is
  simulated, not slept). Approvals are granted blindly (``auto``) unless said otherwise.

A trial passes when the final store equals the expected changes (``compare_store``). pass^1 is the
share of passing trials; a task passes^k when all k of its trials pass.

Wrong actions. Every side-effecting call (write or irreversible tool) that a fault produced is
classified, when the model proposes it, by one classifier for both systems: ``schema`` (unknown
tool, arguments that are not a JSON object or fail the tool's schema), ``policy`` (schema-valid,
but the retail rules deny or escalate it, given the calls so far and the store as it is) or
``valid`` (passes both: only a human who knows what the customer asked can catch it). It was
*executed* when the tool ran and succeeded.

Human-catchable faults at the headline rate are run twice through tether: ``auto`` approvals, and
a simulated careful approver who knows the task and rejects, with a reason, any approval request
whose call is not the next ground-truth change.

    .venv/bin/python bench/compounding.py [--tasks N] [--trials 4] [--workers 2] [--seed 7]

Ends with ``compounding@5%: tether_pass4=<x> bare_pass4=<x> wrong_executed=<n>`` (tether, auto
approvals, schema- and policy-breaking faulty actions executed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydantic

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from examples.support_desk.data import load_expected, load_tasks  # noqa: E402
from examples.support_desk.oracle import (  # noqa: E402
    Approver,
    OracleModel,
    ScriptStep,
    approve_all,
    call_outcomes,
    drive,
    oracle_agent,
    parse_args,
    step_outcomes,
    task_by_id,
    task_input,
    task_steps,
)
from examples.support_desk.oracle_direct import compare_store  # noqa: E402
from examples.support_desk.policy import RULES, blocks, evaluate  # noqa: E402
from examples.support_desk.store import Store  # noqa: E402
from examples.support_desk.tools import TOOLS_BY_NAME  # noqa: E402

from tether.engine import Runtime  # noqa: E402
from tether.errors import ModelError  # noqa: E402
from tether.journal import Store as Journal  # noqa: E402
from tether.journal.store import ApprovalRecord  # noqa: E402
from tether.messages import Message, ModelRequest, ModelResponse, ToolCall  # noqa: E402
from tether.models.base import Model  # noqa: E402
from tether.models.faults import FaultModel  # noqa: E402
from tether.models.retry import RetryModel  # noqa: E402
from tether.policy import PastCall, Proposal  # noqa: E402
from tether.tools import ToolContext, ToolError, result_to_text  # noqa: E402

RATES = (0.01, 0.05, 0.10, 0.20)
HEADLINE = 0.05
BARE_MAX_TURNS = 48
CLASSES = ("schema", "policy", "valid")


# ----------------------------------------------------------------------------- classifying faults


def past_calls(messages: Sequence[Message]) -> list[PastCall]:
    """The executed calls of a conversation, as the policy sees them (from the tool messages)."""
    calls: dict[str, ToolCall] = {}
    history: list[PastCall] = []
    for m in messages:
        if m.role == "assistant":
            calls.update((c.id, c) for c in m.tool_calls)
        elif m.role == "tool" and m.tool_call_id in calls:
            call = calls[m.tool_call_id]
            args = parse_args(call)
            tool = TOOLS_BY_NAME.get(call.name)
            if tool is None or args is None or m.content.startswith(("Denied by", "A human")):
                continue
            if m.content.startswith("Error: invalid arguments"):
                continue
            ok = not m.content.startswith("Error: ")
            history.append(PastCall(call.name, args, ok, m.content if ok else None))
    return history


def classify(call: ToolCall, history: Sequence[PastCall], run_input: Any, store: Store) -> str:
    """``schema``, ``policy`` or ``valid``: what stands between this call and execution."""
    tool = TOOLS_BY_NAME.get(call.name)
    args = parse_args(call)
    if tool is None or args is None:
        return "schema"
    try:
        validated = tool.validate(args).model_dump(mode="json")
    except pydantic.ValidationError:
        return "schema"
    proposal = Proposal(tool=tool.name, effect=tool.effect, args=validated, agent="support-desk",
                        run_id="bench", run_input=run_input, history=tuple(history),
                        deps=store)  # fmt: skip
    return "policy" if blocks(evaluate(proposal, RULES)) else "valid"


@dataclass(slots=True)
class FaultyCall:
    """A side-effecting call a fault produced, and what became of it."""

    call_id: str
    kind: str
    tool: str
    klass: str
    executed: bool = False
    detail: str = ""


class Classifier:
    """Wraps the faulty model; classifies each faulty side-effecting call it returns."""

    def __init__(self, inner: Model, store: Store, run_input: Any) -> None:
        self.inner = inner
        self.store = store
        self.run_input = run_input
        self.faulty: dict[str, FaultyCall] = {}
        self.calls = 0

    @property
    def name(self) -> str:
        return self.inner.name

    async def request(self, request: ModelRequest) -> ModelResponse:
        self.calls += 1
        response = await self.inner.request(request)
        kind = response.meta.get("fault")
        if kind is None:
            return response
        detail = response.meta.get("fault_detail") or {}
        history: list[PastCall] | None = None
        for call in response.tool_calls:
            if "-fault" not in call.id:
                continue
            intended = str(detail.get("tool") or call.name)
            tool = TOOLS_BY_NAME.get(intended)
            if tool is None or not tool.effect.has_side_effect:
                continue
            if history is None:
                history = past_calls(request.messages)
            klass = classify(call, history, self.run_input, self.store)
            what = {k: v for k, v in detail.items() if k != "tool"}
            self.faulty[call.id] = FaultyCall(call.id, str(kind), intended, klass,
                                              detail=json.dumps(what, sort_keys=True))  # fmt: skip
        return response


# ----------------------------------------------------------------------------- the two systems


@dataclass(slots=True)
class Trial:
    """One run of one task."""

    system: str
    rate: float
    task_id: str
    trial: int
    passed: bool
    status: str
    faulty: list[FaultyCall] = field(default_factory=list)
    faults: Counter[str] = field(default_factory=Counter)
    approvals: int = 0
    rejections: int = 0
    model_calls: int = 0
    run_id: str = ""

    def wrong(self, *classes: str) -> int:
        """Faulty side-effecting calls of these classes that were executed."""
        return sum(1 for f in self.faulty if f.executed and f.klass in classes)


def seed_for(base: int, rate: float, task_id: str, trial: int) -> int:
    """A fixed seed per (base, rate, task, trial)."""
    return zlib.crc32(f"{base}:{rate}:{task_id}:{trial}".encode())


async def bare_trial(task_id: str, rate: float, seed: int, trial: int) -> Trial:
    """The bare loop on one task."""
    task = task_by_id(task_id)
    steps = task_steps(task)
    store = Store.fresh()
    run_input = task_input(task)
    fault = FaultModel(OracleModel(steps), rate, seed)
    model = Classifier(fault, store, run_input)
    agent = oracle_agent(store)
    tools = agent.tool_specs()
    messages = [Message("system", agent.instructions), Message("user", json.dumps(run_input))]
    status = "turn limit"
    for turn in range(BARE_MAX_TURNS):
        try:
            response = await model.request(ModelRequest(messages=list(messages), tools=tools))
        except ModelError as exc:
            status = f"model error: {exc}"
            break
        messages.append(response.as_message())
        if not response.tool_calls:
            status = "finished"
            break
        crashed = None
        for call in response.tool_calls:
            try:
                content = _bare_call(store, call, f"bare:{turn}:{call.id}")
                executed = not content.startswith("Error: ")
            except Exception as exc:  # the bare loop has no answer to anything else
                crashed = f"{type(exc).__name__}: {exc}"
                break
            if call.id in model.faulty:
                model.faulty[call.id].executed = executed
            messages.append(Message("tool", content, tool_call_id=call.id, name=call.name))
        if crashed is not None:
            status = f"crashed: {crashed}"
            break
    passed = not compare_store(store, load_expected()[task_id]["changed"])
    store.close()
    return Trial("bare", rate, task_id, trial, passed, status, list(model.faulty.values()),
                 Counter(k.value for k in fault.injected.elements()),
                 model_calls=fault.calls)  # fmt: skip


def _bare_call(store: Store, call: ToolCall, key: str) -> str:
    """Run one call as a naive loop does: parse, look up, call. Tool refusals become text."""
    arguments = call.arguments
    args = json.loads(arguments) if isinstance(arguments, str) else arguments
    tool = TOOLS_BY_NAME[call.name]
    ctx = ToolContext(run_id="bare", agent="bare", step=0, call_id=call.id, idempotency_key=key,
                      deps=store)  # fmt: skip
    try:
        result = tool.fn(ctx, **args) if tool.takes_context else tool.fn(**args)
    except ToolError as exc:
        return f"Error: {exc}"
    return result_to_text(result)


def careful_approver(journal: Journal, steps: Sequence[ScriptStep]) -> Approver:
    """Approves a change only if it is the next ground-truth change; rejects anything else."""

    def normal(tool: str, args: dict[str, Any]) -> Any:
        try:
            return TOOLS_BY_NAME[tool].validate(args).model_dump(mode="json")
        except (KeyError, pydantic.ValidationError):
            return args

    def decide(record: ApprovalRecord) -> tuple[bool, str | None]:
        done = step_outcomes(call_outcomes(journal.events(record.run_id)), steps)
        pending = next((i for i, o in enumerate(done) if o == "missing"), None)
        if pending is not None:
            want = steps[pending]
            if want.tool == record.tool and normal(want.tool, want.args) == normal(
                record.tool, record.args
            ):
                return True, None
            return False, (
                f"The customer did not ask for this. The change they confirmed is {want.tool} "
                f"with {json.dumps(want.args, sort_keys=True)}."
            )
        return False, "The customer's requests are all handled; no further change is wanted."

    return decide


async def tether_trial(
    task_id: str, rate: float, seed: int, trial: int, journal: Journal, *, careful: bool = False
) -> Trial:
    """Tether on one task: RetryModel around FaultModel, the ticket agent and its rules."""
    task = task_by_id(task_id)
    steps = task_steps(task)
    store = Store.fresh()
    run_input = task_input(task)
    fault = FaultModel(OracleModel(steps), rate, seed)
    waited: list[float] = []

    async def no_sleep(seconds: float) -> None:
        waited.append(seconds)

    retry = RetryModel(fault, sleep=no_sleep)
    model = Classifier(retry, store, run_input)
    runtime = Runtime(journal, model=model, requested_by="bench")
    approver = careful_approver(journal, steps) if careful else approve_all
    result, approvals = await drive(runtime, oracle_agent(store), run_input, approver=approver)
    events = journal.events(result.run_id)
    executed = {o.call_id for o in call_outcomes(events) if o.outcome == "ok"}
    for f in model.faulty.values():
        f.executed = f.call_id in executed
    rejections = sum(
        1 for e in events if e.type == "approval_decided" and e.payload["status"] == "rejected"
    )
    passed = not compare_store(store, load_expected()[task_id]["changed"])
    store.close()
    system = "tether-careful" if careful else "tether"
    return Trial(system, rate, task_id, trial, passed, result.status, list(model.faulty.values()),
                 Counter(k.value for k in fault.injected.elements()), approvals, rejections,
                 fault.calls, result.run_id)  # fmt: skip


# ----------------------------------------------------------------------------- the grid


_JOURNAL: list[Journal] = []


def run_unit(task_id: str, rates: Sequence[float], trials: int, base_seed: int) -> list[Trial]:
    """All trials of one task (every rate, both systems): the unit of work of a worker."""
    if not _JOURNAL:
        _JOURNAL.append(Journal(":memory:"))
    journal = _JOURNAL[0]

    async def go() -> list[Trial]:
        out: list[Trial] = []
        for rate in rates:
            for k in range(trials):
                seed = seed_for(base_seed, rate, task_id, k)
                out.append(await bare_trial(task_id, rate, seed, k))
                out.append(await tether_trial(task_id, rate, seed, k, journal))
                if rate == HEADLINE:
                    out.append(await tether_trial(task_id, rate, seed, k, journal, careful=True))
        return out

    return asyncio.run(go())


@dataclass(slots=True)
class Summary:
    """pass^1, pass^k and wrong actions of one system at one rate."""

    trials: int
    pass1: float
    passk: float
    wrong_breaking: int
    wrong_valid: int
    faulty: Counter[str]
    approvals_per_trial: float
    rejections: int
    faults: Counter[str]


def summarise(trials: Sequence[Trial], k: int) -> Summary:
    by_task: dict[str, list[bool]] = defaultdict(list)
    faulty: Counter[str] = Counter()
    faults: Counter[str] = Counter()
    for t in trials:
        by_task[t.task_id].append(t.passed)
        faulty.update(f.klass for f in t.faulty)
        faults.update(t.faults)
    passk = sum(1 for runs in by_task.values() if len(runs) >= k and all(runs[:k]))
    return Summary(
        trials=len(trials),
        pass1=sum(t.passed for t in trials) / max(len(trials), 1),
        passk=passk / max(len(by_task), 1),
        wrong_breaking=sum(t.wrong("schema", "policy") for t in trials),
        wrong_valid=sum(t.wrong("valid") for t in trials),
        faulty=faulty,
        approvals_per_trial=sum(t.approvals for t in trials) / max(len(trials), 1),
        rejections=sum(t.rejections for t in trials),
        faults=faults,
    )


def main(argv: Sequence[str] | None = None) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
    from rich.table import Table

    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--tasks", type=int, default=None, help="only the first N tasks")
    parser.add_argument("--trials", type=int, default=4, help="trials per task and rate")
    parser.add_argument("--workers", type=int, default=2, help="processes")
    parser.add_argument("--seed", type=int, default=7, help="base seed")
    parser.add_argument("--rates", default=",".join(str(r) for r in RATES),
                        help="comma-separated fault rates")  # fmt: skip
    args = parser.parse_args(argv)
    rates = tuple(float(r) for r in args.rates.split(","))
    ids = [t["id"] for t in load_tasks()][: args.tasks]
    k = args.trials
    console = Console(highlight=False, width=150)
    started = time.perf_counter()
    trials: list[Trial] = []
    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console) as progress:  # fmt: skip
        bar = progress.add_task("tasks", total=len(ids))
        if args.workers <= 1:
            for task_id in ids:
                trials += run_unit(task_id, rates, k, args.seed)
                progress.advance(bar)
        else:
            with ProcessPoolExecutor(max_workers=args.workers) as pool:
                futures = [pool.submit(run_unit, t, rates, k, args.seed) for t in ids]
                for future in as_completed(futures):
                    trials += future.result()
                    progress.advance(bar)
    elapsed = time.perf_counter() - started

    groups: dict[tuple[str, float], list[Trial]] = defaultdict(list)
    for t in trials:
        groups[(t.system, t.rate)].append(t)
    table = Table(title=f"compounding error: {len(ids)} tasks x {k} trials per rate")
    for col in ("rate", "system", "pass^1", f"pass^{k}", "faulty writes s/p/v",
                "executed s+p", "executed v", "bare stopped by"):  # fmt: skip
        table.add_column(col, justify="right")
    for rate in rates:
        for system in ("bare", "tether"):
            group = groups[(system, rate)]
            s = summarise(group, k)
            proposed = "/".join(str(s.faulty[c]) for c in CLASSES)
            stops = Counter(t.status.split(":")[0] for t in group if t.status != "finished")
            stopped = (
                ", ".join(f"{n} {why}" for why, n in stops.most_common())
                if system == "bare"
                else ""
            )
            table.add_row(f"{rate:.0%}", system, f"{s.pass1:.3f}", f"{s.passk:.3f}", proposed,
                          str(s.wrong_breaking), str(s.wrong_valid), stopped)  # fmt: skip
    console.print(table)

    human = Table(title=f"human-catchable faulty writes at {HEADLINE:.0%} (tether)")
    for col in ("approvals", "pass^1", f"pass^{k}", "faulty writes v", "executed v",
                "rejected", "approvals per trial"):  # fmt: skip
        human.add_column(col, justify="right")
    for system, label in (("tether", "auto"), ("tether-careful", "careful approver")):
        s = summarise(groups[(system, HEADLINE)], k)
        human.add_row(
            label, f"{s.pass1:.3f}", f"{s.passk:.3f}", str(s.faulty["valid"]),
            str(s.wrong_valid), str(s.rejections), f"{s.approvals_per_trial:.2f}",
        )  # fmt: skip
    if groups[("tether", HEADLINE)]:
        console.print(human)
    bare5 = summarise(groups[("bare", HEADLINE)], k)
    teth5 = summarise(groups[("tether", HEADLINE)], k)
    injected = ", ".join(f"{n} {kind}" for kind, n in sorted(teth5.faults.items()))
    console.print(f"faults injected at {HEADLINE:.0%} (tether runs): {injected}")
    console.print("faulty writes that executed (tether: all; bare: schema- or policy-breaking; "
                  "s=schema p=policy v=valid):")  # fmt: skip
    for t in sorted(trials, key=lambda t: (t.rate, t.system, int(t.task_id), t.trial)):
        for f in t.faulty:
            if f.executed and (t.system.startswith("tether") or f.klass != "valid"):
                console.print(f"  {t.rate:.0%} {t.system} task {t.task_id} trial {t.trial}: "
                              f"{f.kind} {f.tool} {f.detail} [{f.klass[0]}] passed={t.passed}",
                              markup=False)  # fmt: skip
    console.print(f"{len(trials)} trials in {elapsed:.0f} s ({args.workers} workers)")
    if not groups[("tether", HEADLINE)]:
        console.print(f"compounding@{HEADLINE:.0%}: not run (rates {args.rates})")
        return 0
    console.print(
        f"compounding@{HEADLINE:.0%}: tether_pass{k}={teth5.passk:.3f} "
        f"bare_pass{k}={bare5.passk:.3f} wrong_executed={teth5.wrong_breaking}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
