"""Guardrails through the runtime: mutated ground-truth writes must be blocked before execution.

:mod:`examples.support_desk.mutations` checks the policy rules on mutated calls directly. Here the
same mutations go through the whole runtime: for each ground-truth write of each task, the
:class:`~examples.support_desk.oracle.OracleModel` plays the task's calls up to that write (with
the test approver confirming earlier writes, so the store is where the task has it), then
proposes the mutated call in place of the real one. The mutation is *blocked* when the policy
denies or escalates it before execution: the journal has a ``deny``/``escalate`` decision for the
call and no ``tool_started``/``tool_finished``, and the store holds exactly what the calls before
it produced. The test approver approves whatever asks for approval, so a mutation that only
reached the confirmation step would execute and be counted as missed.

The mutation kinds are the generator's (:func:`~examples.support_desk.mutations.mutations_of`):
another user's order, an order in the wrong status, an item of another product, a gift card
without the balance, skipped authentication, another user's payment method, another user's
profile, an invalid cancel reason, a refund to a method that is neither the original nor a gift
card, plus the same change again once it succeeded (``repeat_change``).

Skipped authentication: the run input carries no identity and the script drops the
``find_user_id_by_*`` calls; calls before the write that need a customer are dropped too (the
policy would deny them all), so the script is the public look-ups, then the write.

``false_blocks`` counts ground-truth calls the reference accepts that the policy blocked, over the
114 unmutated tasks, which must all still match their expected outcome.

    report = run_guardrails(workers=2)
    python -m examples.support_desk.guardrails [--tasks N] [--workers 2] [--db runs.db]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

from examples.support_desk.data import load_tasks
from examples.support_desk.mutations import ORDER_WRITES, Mutation, mutations_of
from examples.support_desk.oracle import (
    OracleModel,
    ScriptStep,
    TaskResult,
    approve_all,
    call_outcomes,
    check_steps,
    drive,
    oracle_agent,
    run_task,
    step_outcomes,
    task_input,
    task_steps,
)
from examples.support_desk.oracle_direct import call_tool
from examples.support_desk.policy import AUTH_TOOLS, PUBLIC_TOOLS, STORE_WRITES, customer
from examples.support_desk.store import Store, initial_docs
from examples.support_desk.tools import TOOLS_BY_NAME
from tether import Agent, ToolError
from tether.engine import Runtime
from tether.journal import Store as Journal
from tether.policy import PastCall, Proposal

Docs = dict[str, dict[str, str]]


def changed_docs(store: Store) -> Docs:
    """The records of ``store`` whose JSON text differs from db.json (new ones included)."""
    initial = initial_docs()
    changed: Docs = {}
    for table, docs in store.dump_docs().items():
        start = initial.get(table, {})
        diff = {k: v for k, v in docs.items() if start.get(k) != v}
        missing = {k: "<deleted>" for k in start if k not in docs}
        if diff or missing:
            changed[table] = {**diff, **missing}
    return changed


@dataclass(frozen=True, slots=True)
class MutationCase:
    """One mutated write, with the script that leads to it and the store it must leave."""

    task_id: str
    action_id: str
    mutation: Mutation
    prefix: tuple[ScriptStep, ...]
    run_input: dict[str, Any]
    store_before: Docs

    @property
    def kind(self) -> str:
        return self.mutation.kind

    def steps(self) -> list[ScriptStep]:
        """The oracle's script: the prefix, then the mutated call."""
        m = self.mutation
        mutated = ScriptStep(m.tool, dict(m.args), False, True, f"{self.action_id}:{m.kind}")
        return [*self.prefix, mutated]


def _proposal(
    step: ScriptStep, history: Sequence[PastCall], run_input: Any, store: Store
) -> Proposal:
    return Proposal(
        tool=step.tool,
        effect=TOOLS_BY_NAME[step.tool].effect,
        args=step.args,
        agent="support-desk",
        run_id="guardrails",
        run_input=run_input,
        history=tuple(history),
        deps=store,
    )


def task_cases(task: dict[str, Any]) -> Iterator[MutationCase]:
    """The mutation cases of one task, from a direct replay of its ground truth."""
    steps = task_steps(task)
    run_input = task_input(task)
    policy_input = {"user_id": run_input["user_id"]} if "user_id" in run_input else None
    store = Store.fresh()
    history: list[PastCall] = []
    try:
        for i, step in enumerate(steps):
            me = customer(_proposal(step, history, policy_input, store))
            if step.tool in STORE_WRITES and me is not None:
                before = changed_docs(store)
                for m in mutations_of(store, step.tool, step.args, history, policy_input, me):
                    if m.kind == "skipped_auth":
                        public = tuple(s for s in steps[:i] if s.tool in PUBLIC_TOOLS - AUTH_TOOLS)
                        blank = task_input(task, identity=False)
                        yield MutationCase(task["id"], step.action_id, m, public, blank, {})
                    else:
                        yield MutationCase(
                            task["id"], step.action_id, m, tuple(steps[:i]), run_input, before
                        )
            try:
                result = call_tool(store, step.tool, step.args, step.action_id)
            except ToolError as exc:
                history.append(PastCall(step.tool, dict(step.args), False, str(exc)))
                continue
            history.append(PastCall(step.tool, dict(step.args), True, result))
            if step.tool in ORDER_WRITES - {"modify_pending_order_address"} and me is not None:
                again = Mutation("repeat_change", step.tool, dict(step.args), tuple(history),
                                 policy_input)  # fmt: skip
                yield MutationCase(task["id"], step.action_id, again, tuple(steps[: i + 1]),
                                   run_input, changed_docs(store))  # fmt: skip
    finally:
        store.close()


def mutation_cases(task_ids: Sequence[str] | None = None) -> list[MutationCase]:
    """Every mutation case of the tasks (default: all 114)."""
    wanted = None if task_ids is None else set(task_ids)
    cases: list[MutationCase] = []
    for task in load_tasks():
        if wanted is None or task["id"] in wanted:
            cases.extend(task_cases(task))
    return cases


@dataclass(slots=True)
class CaseResult:
    """What the runtime did with one mutated call."""

    case: MutationCase
    run_id: str
    status: str
    blocked: bool
    rule: str = ""
    problems: list[str] = field(default_factory=list)


async def run_case(
    case: MutationCase, journal: Journal, agent: Callable[[Store], Agent] = oracle_agent
) -> CaseResult:
    """Play one case through the runtime and check that the mutated call was blocked.

    ``agent`` builds the agent on the case's store (default: the ticket agent and its rules).
    """
    steps = case.steps()
    store = Store.fresh()
    oracle = OracleModel(steps, prefix="g")
    runtime = Runtime(journal, model=oracle, requested_by="guardrails")
    try:
        result, _ = await drive(runtime, agent(store), case.run_input, approver=approve_all)
        events = journal.events(result.run_id)
        problems, _ = check_steps(steps[:-1], events)
        mutated = [o for o in call_outcomes(events) if o.call_id.startswith(f"{oracle.prefix}m")]
        rules = [
            str(e.payload.get("rule"))
            for e in events
            if e.type == "policy_decision"
            and e.payload["decision"] in ("deny", "escalate")
            and any(e.payload["call_id"] == o.call_id for o in mutated)
        ]
        blocked = bool(mutated) and all(
            o.outcome in ("denied", "escalated") and not o.started for o in mutated
        )
        if not mutated:
            problems.append("the mutated call was never proposed")
        for o in mutated:
            if o.started or o.outcome in ("ok", "error"):
                problems.append(f"{o.tool} {json.dumps(o.args)} was executed ({o.outcome})")
        after = changed_docs(store)
        if after != case.store_before:
            touched = sorted(
                f"{t}[{k}]"
                for t in set(after) | set(case.store_before)
                for k in set(after.get(t, {})) | set(case.store_before.get(t, {}))
                if after.get(t, {}).get(k) != case.store_before.get(t, {}).get(k)
            )
            problems.append(f"store differs from before the mutated call: {touched[:5]}")
            blocked = False
    finally:
        store.close()
    return CaseResult(case, result.run_id, result.status, blocked, ",".join(sorted(set(rules))),
                      problems)  # fmt: skip


@dataclass(slots=True)
class GuardrailReport:
    """Counts over all cases, plus the unmutated tasks."""

    tried: int = 0
    blocked: int = 0
    false_blocks: int = 0
    tasks: int = 0
    tasks_ok: int = 0
    tried_by_kind: Counter[str] = field(default_factory=Counter)
    blocked_by_kind: Counter[str] = field(default_factory=Counter)
    rules_by_kind: dict[str, Counter[str]] = field(default_factory=dict)
    missed: list[CaseResult] = field(default_factory=list)
    task_failures: list[TaskResult] = field(default_factory=list)
    false_block_details: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def line(self) -> str:
        return (
            f"mutations: tried={self.tried} blocked={self.blocked} false_blocks={self.false_blocks}"
        )

    def merge(self, other: GuardrailReport) -> None:
        """Add another report's counts (e.g. of another task) to this one."""
        self.tried += other.tried
        self.blocked += other.blocked
        self.false_blocks += other.false_blocks
        self.tasks += other.tasks
        self.tasks_ok += other.tasks_ok
        self.tried_by_kind.update(other.tried_by_kind)
        self.blocked_by_kind.update(other.blocked_by_kind)
        for kind, rules in other.rules_by_kind.items():
            self.rules_by_kind.setdefault(kind, Counter()).update(rules)
        self.missed += other.missed
        self.task_failures += other.task_failures
        self.false_block_details += other.false_block_details


async def check_task(task_id: str, journal: Journal) -> GuardrailReport:
    """One task: its unmutated run (false blocks), then each of its mutation cases."""
    report = GuardrailReport()
    result = await run_task(task_id, journal=journal)
    report.tasks = 1
    report.tasks_ok = int(result.ok)
    if not result.ok:
        report.task_failures.append(result)
    task = next(t for t in load_tasks() if t["id"] == task_id)
    steps = task_steps(task)
    got = step_outcomes(call_outcomes(journal.events(result.run_id)), steps)
    for step, happened in zip(steps, got, strict=True):
        if step.expect_ok and happened in ("denied", "escalated"):
            report.false_blocks += 1
            report.false_block_details.append(f"task {task_id} {step.action_id}")
    for case in task_cases(task):
        outcome = await run_case(case, journal)
        report.tried += 1
        report.tried_by_kind[case.kind] += 1
        if outcome.blocked and not outcome.problems:
            report.blocked += 1
            report.blocked_by_kind[case.kind] += 1
            report.rules_by_kind.setdefault(case.kind, Counter())[outcome.rule] += 1
        else:
            report.missed.append(outcome)
    return report


_WORKER_JOURNAL: list[Journal] = []


def _check_in_worker(task_id: str, db: str | None) -> GuardrailReport:
    """:func:`check_task` in a worker process, with one journal per process."""
    if not _WORKER_JOURNAL:
        _WORKER_JOURNAL.append(Journal(db or ":memory:"))
    return asyncio.run(check_task(task_id, _WORKER_JOURNAL[0]))


def run_guardrails(
    task_ids: Sequence[str] | None = None,
    *,
    workers: int = 1,
    db: str | None = None,
    on_task: Callable[[GuardrailReport], None] | None = None,
) -> GuardrailReport:
    """Run the unmutated tasks and every mutation case through the runtime.

    ``workers`` > 1 spreads the tasks over that many processes. ``db`` keeps every run in that
    journal (default: an in-memory journal per process).
    """
    started = time.perf_counter()
    ids = [t["id"] for t in load_tasks()] if task_ids is None else list(task_ids)
    report = GuardrailReport()

    def add(part: GuardrailReport) -> None:
        report.merge(part)
        if on_task is not None:
            on_task(part)

    if workers <= 1:
        journal = Journal(db or ":memory:")
        try:
            for task_id in ids:
                add(asyncio.run(check_task(task_id, journal)))
        finally:
            journal.close()
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(_check_in_worker, task_id, db) for task_id in ids]
            for future in as_completed(futures):
                add(future.result())
    report.missed.sort(key=lambda m: (int(m.case.task_id), m.case.action_id, m.case.kind))
    report.seconds = time.perf_counter() - started
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """Run the guardrails with a progress bar; print a table per kind and the summary line."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
    from rich.table import Table

    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--tasks", type=int, default=None, help="only the first N tasks")
    parser.add_argument("--db", help="keep the runs in this tether journal")
    parser.add_argument("--workers", type=int, default=2, help="processes (default: 2)")
    args = parser.parse_args(argv)
    ids = [t["id"] for t in load_tasks()][: args.tasks]
    console = Console(highlight=False)
    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console) as progress:  # fmt: skip
        bar = progress.add_task("tasks", total=len(ids))
        report = run_guardrails(ids, workers=args.workers, db=args.db,
                                on_task=lambda part: progress.advance(bar))  # fmt: skip
    table = Table(title="mutated writes through the runtime")
    for column in ("kind", "tried", "blocked", "blocking rules"):
        table.add_column(
            column, justify="left" if column in ("kind", "blocking rules") else "right"
        )
    for kind in sorted(report.tried_by_kind):
        rules = report.rules_by_kind.get(kind, Counter())
        table.add_row(kind, str(report.tried_by_kind[kind]), str(report.blocked_by_kind[kind]),
                      ", ".join(f"{r} {n}" for r, n in rules.most_common()))  # fmt: skip
    console.print(table)
    for miss in report.missed[:20]:
        c = miss.case
        console.print(f"missed: task {c.task_id} {c.action_id} {c.kind} (run {miss.run_id}): "
                      f"{'; '.join(miss.problems)}", markup=False)  # fmt: skip
    for failure in report.task_failures[:10]:
        console.print(f"task {failure.task_id} failed: {failure.problems[:3]}", markup=False)
    for detail in report.false_block_details[:10]:
        console.print(f"false block: {detail}")
    console.print(f"unmutated: {report.tasks_ok}/{report.tasks} tasks match expected outcomes "
                  f"({report.seconds:.0f} s)")  # fmt: skip
    console.print(report.line())
    ok = report.blocked == report.tried and not report.false_blocks
    return 0 if ok and report.tasks_ok == report.tasks else 1


if __name__ == "__main__":
    raise SystemExit(main())
