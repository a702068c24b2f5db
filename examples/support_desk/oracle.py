"""The ground truth through the full runtime: an oracle model plays each task's calls.

:class:`OracleModel` is a tether Model for one task. It proposes the calls of the task's
``evaluation_criteria.actions`` in order, one call per turn, then answers with a final
:class:`~examples.support_desk.tickets.TicketResult`. Everything else is the real support desk:
the ticket agent's instructions, tools and policy rules, the runtime's validation, policy,
approvals and journal. A test approver approves every change as proposed (``confirm-writes``
makes each one wait), and the run is resumed until it ends.

The oracle decides from the conversation, not from a counter, so it survives faults, resumes and
replays: it walks the request's messages, and a ground-truth call counts as done once a call with
the same name and arguments got a tool result -- an error result too, since some ground-truth
calls fail on purpose. A validation error, a policy denial, a human rejection or an injected fault
returns no real result, so the same call is proposed again on the next turn. (A denial counts
as done for a call the reference rejects as well: the policy blocked what had to fail.)
:meth:`OracleModel.rewind` makes the next answer repeat the last one, as
:class:`~tether.models.faults.FaultModel` requires, unless the conversation has moved past it.

A task matches when the final support-desk store equals ``expected_outcomes.json``'s ``changed``
records (:func:`~examples.support_desk.oracle_direct.compare_store`), every ground-truth call the
reference accepts succeeded (journal ``tool_finished ok=True``) and every call it rejects failed
(``tool_finished ok=False``) or was denied by the policy.

Run input: a ticket made of the task's reason for calling. Tasks whose script logs the customer
in carry no identity, so the policy insists on the ``find_user_id_by_*`` call. Tasks whose script
has no successful login stand for a customer the help desk authenticated before the run: the input
carries that customer's ``user_id`` (the owner of the records the script touches), as in
:mod:`examples.support_desk.mutations`.

    result = asyncio.run(run_task("0"))
    assert result.ok, result.problems
    python -m examples.support_desk.oracle [--db runs.db] [--tasks N]

With ``--db`` every run is kept in that journal, so ``tether show RUN --db runs.db`` and
``tether replay RUN --db runs.db`` work on them (the runs name ``ORACLE_AGENT_REF`` as their
agent).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import dataclasses
import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from examples.support_desk.agent import make_ticket_agent
from examples.support_desk.data import load_db, load_expected, load_tasks
from examples.support_desk.oracle_direct import compare_store
from examples.support_desk.policy import AUTH_TOOLS, STORE_WRITES
from examples.support_desk.store import Store
from tether import Agent, Limits
from tether.engine import Runtime
from tether.engine.result import RunResult
from tether.journal import Store as Journal
from tether.journal.events import Event
from tether.journal.store import ApprovalRecord
from tether.messages import Message, ModelRequest, ModelResponse, ToolCall
from tether.models.base import Model
from tether.models.scripted import to_response

ORACLE_AGENT_REF = "examples.support_desk.oracle:oracle_agent"
APPROVER = "test-approver"

# The ticket agent's limits, with room for the longest task (13 calls) plus retries after faults,
# and for the tasks whose script fails twice in a row on purpose.
ORACLE_LIMITS = Limits(
    max_steps=48,
    max_tool_result_chars=20_000,
    max_repeats=3,
    max_consecutive_failures=6,
)

DENIED_PREFIX = "Denied by policy"
REJECTED_PREFIX = "A human rejected"


# ----------------------------------------------------------------------------- the script


@dataclass(frozen=True, slots=True)
class ScriptStep:
    """One call the oracle proposes.

    ``expect_ok`` is what the reference tools did with it. A ``mutated`` step is a call the
    policy must block: whatever happens to it, the oracle finishes right after.
    """

    tool: str
    args: dict[str, Any]
    expect_ok: bool = True
    mutated: bool = False
    action_id: str = ""


def task_by_id(task_id: str) -> dict[str, Any]:
    """The task of this id (``KeyError`` if there is none)."""
    for task in load_tasks():
        if task["id"] == task_id:
            return task
    raise KeyError(f"no task {task_id!r}")


def task_steps(task: Mapping[str, Any]) -> list[ScriptStep]:
    """The ground-truth calls of ``task``, with what the reference did with each."""
    outcome = {a["action_id"]: bool(a["ok"]) for a in load_expected()[task["id"]]["actions"]}
    return [
        ScriptStep(a["name"], dict(a["arguments"]), outcome[a["action_id"]], False, a["action_id"])
        for a in task["evaluation_criteria"]["actions"]
    ]


def logs_in(steps: Sequence[ScriptStep]) -> bool:
    """Whether the script authenticates the customer itself (a successful find_user call)."""
    return any(s.tool in AUTH_TOOLS and s.expect_ok for s in steps)


def task_owner(steps: Sequence[ScriptStep]) -> str | None:
    """The user whose records the script touches: by its writes first, then by its reads."""
    db = load_db()

    def owner_of(step: ScriptStep) -> str | None:
        user_id = step.args.get("user_id")
        if step.tool in {"modify_user_address", "get_user_details"} and isinstance(user_id, str):
            return user_id if user_id in db["users"] else None
        order = db["orders"].get(str(step.args.get("order_id")))
        return None if order is None else str(order["user_id"])

    for pool in ([s for s in steps if s.tool in STORE_WRITES], list(steps)):
        for step in pool:
            owner = owner_of(step)
            if owner is not None:
                return owner
    return None


def task_input(task: Mapping[str, Any], *, identity: bool | None = None) -> dict[str, Any]:
    """The run input for ``task``: a ticket, plus ``user_id`` for a script without a login.

    ``identity`` forces the ``user_id`` in (``True``) or out (``False``).
    """
    scenario = task["user_scenario"]["instructions"]
    body = "\n".join(x for x in (scenario.get("reason_for_call"), scenario.get("known_info")) if x)
    ticket: dict[str, Any] = {
        "ticket_id": f"tau2-retail-{task['id']}",
        "subject": "Retail support request",
        "body": body or "(no details)",
    }
    steps = task_steps(task)
    wanted = (not logs_in(steps)) if identity is None else identity
    owner = task_owner(steps) if wanted else None
    if owner is not None:
        ticket["user_id"] = owner
    return ticket


# ----------------------------------------------------------------------------- the conversation


def parse_args(call: ToolCall) -> dict[str, Any] | None:
    """A call's arguments as a dict, or ``None`` if they are not a JSON object."""
    raw: Any = call.arguments
    if isinstance(raw, str):
        try:
            raw = json.loads(raw) if raw.strip() else {}
        except ValueError:
            return None
    return raw if isinstance(raw, dict) else None


def is_step(call: ToolCall, step: ScriptStep) -> bool:
    """Whether ``call`` is exactly the step's call (same tool, same arguments)."""
    return call.name == step.tool and parse_args(call) == step.args


def completes(step: ScriptStep, content: str) -> bool:
    """Whether a tool message for the step's exact call means the step is done."""
    if step.mutated:
        return True
    if content.startswith(DENIED_PREFIX):
        return not step.expect_ok  # blocking a call the reference rejects is the right outcome
    return not content.startswith(REJECTED_PREFIX)


def steps_done(messages: Sequence[Message], steps: Sequence[ScriptStep]) -> int:
    """How many steps, in order, got their result in this conversation."""
    calls: dict[str, ToolCall] = {}
    done = 0
    for m in messages:
        if done >= len(steps):
            break
        if m.role == "assistant":
            for c in m.tool_calls:
                calls[c.id] = c
        elif m.role == "tool" and m.tool_call_id is not None:
            made = calls.get(m.tool_call_id)
            if (
                made is not None
                and is_step(made, steps[done])
                and completes(steps[done], m.content)
            ):
                done += 1
    return done


def final_answer(steps: Sequence[ScriptStep], done: int) -> str:
    """The closing TicketResult (JSON) listing the changes the script made or tried."""
    actions = []
    for s in steps[:done]:
        if s.tool in STORE_WRITES:
            status = "blocked" if (s.mutated or not s.expect_ok) else "done"
            actions.append({"tool": s.tool, "arguments": s.args, "status": status})
    stopped = any(s.mutated for s in steps[:done])
    reply = (
        "I could not make that change: it is not allowed for your account."
        if stopped
        else "Everything you asked for is taken care of."
    )
    return json.dumps(
        {
            "reply_draft": reply,
            "tags": ["tau2-retail", "blocked" if stopped else "resolved"],
            "proposed_actions": actions,
            "escalation_reason": None,
        }
    )


# ----------------------------------------------------------------------------- the model


class OracleModel:
    """Proposes a script's calls in order, one per turn, deciding from the conversation."""

    def __init__(
        self, steps: Sequence[ScriptStep], *, name: str = "oracle", prefix: str = "o"
    ) -> None:
        self.steps = list(steps)
        self._name = name
        self.prefix = prefix
        self.calls = 0
        self.rewinds = 0
        self._last: tuple[int, ModelResponse] | None = None
        self._repeat = False

    @classmethod
    def for_task(cls, task_id: str, **kwargs: Any) -> OracleModel:
        """The oracle of one task's ground truth."""
        return cls(task_steps(task_by_id(task_id)), **kwargs)

    @property
    def name(self) -> str:
        return self._name

    def rewind(self) -> None:
        """Repeat the last answer on the next request (unless the conversation moved past it)."""
        self.rewinds += 1
        self._repeat = True

    def next_step(self, request: ModelRequest) -> int:
        """Index of the step to propose next (``len(steps)`` when the script is through)."""
        done = steps_done(request.messages, self.steps)
        if done and self.steps[done - 1].mutated:
            return len(self.steps)
        return done

    async def request(self, request: ModelRequest) -> ModelResponse:
        self.calls += 1
        index = self.next_step(request)
        repeat, self._repeat = self._repeat, False
        if repeat and self._last is not None and self._last[0] == index:
            return copy.deepcopy(self._last[1])
        turn = sum(1 for m in request.messages if m.role == "assistant")
        if index >= len(self.steps):
            item: Any = final_answer(self.steps, steps_done(request.messages, self.steps))
        else:
            step = self.steps[index]
            kind = "m" if step.mutated else "c"
            call_id = f"{self.prefix}{kind}{index}-t{turn}"
            item = ToolCall(call_id, step.tool, copy.deepcopy(step.args))
        response = to_response(item, request, self._name)
        self._last = (index, copy.deepcopy(response))
        return response


# ----------------------------------------------------------------------------- running a task


def oracle_agent(store: Store | str | None = None) -> Agent:
    """The ticket agent (instructions with policy.md, tools, rules) with the oracle's limits."""
    return dataclasses.replace(make_ticket_agent(store), limits=ORACLE_LIMITS)


Approver = Callable[[ApprovalRecord], Awaitable[tuple[bool, str | None]] | tuple[bool, str | None]]


def approve_all(record: ApprovalRecord) -> tuple[bool, str | None]:
    """The test approver: approves every call as proposed."""
    return True, None


async def drive(
    runtime: Runtime,
    agent: Agent,
    run_input: Any,
    *,
    approver: Approver = approve_all,
    run_id: str | None = None,
    max_rounds: int = 200,
) -> tuple[RunResult, int]:
    """Run ``agent`` and answer its approval requests until it ends; returns (result, approvals)."""
    result = await runtime.run(agent, run_input, run_id=run_id, agent_ref=ORACLE_AGENT_REF)
    handled = 0
    for _ in range(max_rounds):
        if result.status != "waiting_approval" or not result.waiting_for:
            break
        record = runtime.store.get_approval(result.waiting_for["approval_id"])
        verdict = approver(record)
        ok, reason = (await verdict) if isinstance(verdict, Awaitable) else verdict
        handled += 1
        if ok:
            runtime.approve(record.id, by=APPROVER)
        else:
            why = reason or "not what the customer asked for"
            runtime.reject(record.id, reason=why, by=APPROVER)
        result = await runtime.resume(result.run_id, agent)
    return result, handled


@dataclass(slots=True)
class CallOutcome:
    """What the journal says happened to one proposed call."""

    call_id: str
    tool: str
    args: dict[str, Any] | None
    outcome: str = "none"  # ok | error | denied | escalated | rejected | invalid | approval | none
    started: bool = False
    fault: str | None = None


def call_outcomes(events: Sequence[Event]) -> list[CallOutcome]:
    """Every call the model proposed in a run, in order, with what became of it."""
    found: dict[str, CallOutcome] = {}
    order: list[CallOutcome] = []
    for ev in events:
        p = ev.payload
        if ev.type == "model_response":
            response = p["response"]
            fault = (response.get("meta") or {}).get("fault")
            for c in response.get("tool_calls", []):
                call = ToolCall.from_dict(c)
                # FaultModel renumbers a corrupted or repeated call; the kind is on the response
                marked = fault if "-fault" in call.id else None
                item = CallOutcome(call.id, call.name, parse_args(call), fault=marked)
                found[call.id] = item
                order.append(item)
            continue
        item_or_none = found.get(str(p.get("call_id"))) if "call_id" in p else None
        if item_or_none is None:
            continue
        item = item_or_none
        if ev.type == "validation_failed":
            item.outcome = "invalid"
        elif ev.type == "policy_decision" and p["decision"] in ("deny", "escalate"):
            item.outcome = "denied" if p["decision"] == "deny" else "escalated"
        elif ev.type == "escalated" and item.outcome == "none":
            item.outcome = "escalated"
        elif ev.type == "approval_requested" and item.outcome == "none":
            item.outcome = "approval"
        elif ev.type == "approval_decided" and p["status"] == "rejected":
            item.outcome = "rejected"
        elif ev.type == "tool_started":
            item.started = True
        elif ev.type == "tool_finished" and not p.get("shadow"):
            item.outcome = "ok" if p["ok"] else "error"
    return order


def step_outcomes(outcomes: Sequence[CallOutcome], steps: Sequence[ScriptStep]) -> list[str]:
    """For each step, the outcome that completed it (``"missing"`` if it never completed)."""
    result: list[str] = []
    for o in outcomes:
        if len(result) >= len(steps):
            break
        step = steps[len(result)]
        if o.tool != step.tool or o.args != step.args:
            continue
        if o.outcome in ("ok", "error") or (o.outcome in ("denied", "escalated") and
                                             (step.mutated or not step.expect_ok)):  # fmt: skip
            result.append(o.outcome)
    return result + ["missing"] * (len(steps) - len(result))


@dataclass(slots=True)
class TaskResult:
    """One task run through the runtime, and whether it reproduced the expected outcome."""

    task_id: str
    run_id: str
    status: str
    problems: list[str] = field(default_factory=list)
    steps: int = 0
    approvals: int = 0
    blocked_as_expected: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems


def check_steps(
    steps: Sequence[ScriptStep], events: Sequence[Event]
) -> tuple[list[str], list[str]]:
    """Problems with the journaled outcome of each step, and the steps the policy blocked."""
    problems: list[str] = []
    blocked: list[str] = []
    for step, got in zip(steps, step_outcomes(call_outcomes(events), steps), strict=True):
        where = f"{step.action_id} {step.tool}"
        if step.expect_ok and got != "ok":
            problems.append(f"{where}: expected success, got {got}")
        elif not step.expect_ok and got not in ("error", "denied", "escalated"):
            problems.append(f"{where}: expected a failure, got {got}")
        elif got in ("denied", "escalated"):
            blocked.append(step.action_id)
    return problems, blocked


def open_store(store_url: str | None) -> Store:
    """A support-desk store holding db.json: in memory, or at ``store_url`` (reset first)."""
    return Store.fresh() if store_url is None else Store.open(store_url, reset=True)


async def run_task(
    task_id: str,
    store_url: str | None = None,
    *,
    journal: Journal | None = None,
    model: Callable[[OracleModel], Model] | None = None,
    approver: Approver = approve_all,
) -> TaskResult:
    """Run task ``task_id``'s ground truth through the runtime and check the outcome.

    Args:
        task_id: the τ²-bench retail task.
        store_url: a database for the support-desk store (reset to db.json first); default: a
            fresh in-memory copy.
        journal: the tether store to keep the run in; default: a fresh in-memory one.
        model: wraps the oracle (e.g. in a FaultModel); default: the oracle itself.
        approver: decides approval requests; default: approve everything as proposed.
    """
    started = time.perf_counter()
    task = task_by_id(task_id)
    steps = task_steps(task)
    store = open_store(store_url)
    own_journal = journal is None
    journal = journal if journal is not None else Journal(":memory:")
    oracle = OracleModel(steps)
    runtime = Runtime(journal, model=model(oracle) if model is not None else oracle,
                      requested_by="oracle")  # fmt: skip
    try:
        result, approvals = await drive(runtime, oracle_agent(store), task_input(task),
                                        approver=approver)  # fmt: skip
        report = TaskResult(task_id, result.run_id, result.status, steps=result.steps,
                            approvals=approvals)  # fmt: skip
        if result.status != "succeeded":
            report.problems.append(f"run {result.status}: {result.reason}")
        problems, report.blocked_as_expected = check_steps(steps, journal.events(result.run_id))
        report.problems += problems
        report.problems += compare_store(store, load_expected()[task_id]["changed"])
    finally:
        store.close()
        if own_journal:
            journal.close()
    report.seconds = time.perf_counter() - started
    return report


async def run_all(
    task_ids: Sequence[str] | None = None,
    *,
    db: str | None = None,
    store_url: str | None = None,
    on_done: Callable[[TaskResult], None] | None = None,
) -> list[TaskResult]:
    """Run every task (or ``task_ids``); with ``db`` all runs go to that journal."""
    ids = list(task_ids) if task_ids is not None else [t["id"] for t in load_tasks()]
    journal = Journal(db) if db else None
    results = []
    try:
        for task_id in ids:
            report = await run_task(task_id, store_url, journal=journal)
            results.append(report)
            if on_done is not None:
                on_done(report)
    finally:
        if journal is not None:
            journal.close()
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """Run the oracle over the tasks with a progress bar; print the summary line."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--db", help="keep the runs in this tether journal (SQLite file or URL)")
    parser.add_argument("--store", help="support-desk store URL (default: in memory)")
    parser.add_argument("--tasks", type=int, default=None, help="only the first N tasks")
    args = parser.parse_args(argv)
    ids = [t["id"] for t in load_tasks()][: args.tasks]
    console = Console(highlight=False)
    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console) as progress:  # fmt: skip
        bar = progress.add_task("oracle", total=len(ids))
        results = asyncio.run(
            run_all(ids, db=args.db, store_url=args.store, on_done=lambda r: progress.advance(bar))
        )
    for r in results:
        if not r.ok:
            console.print(f"task {r.task_id} (run {r.run_id}):")
            for problem in r.problems[:10]:
                console.print(f"  {problem}", markup=False)
    matching = sum(r.ok for r in results)
    console.print(f"oracle: {matching}/{len(results)} tasks match expected outcomes")
    return 0 if matching == len(results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
