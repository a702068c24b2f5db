"""Exact replay, fork (what-if) and diff of runs.

Replay re-runs the current agent code against a run's journal: model responses and tool results
come from the journal, nothing live is called, and every decision is compared with the recorded
one. A fork replays up to a step, then goes live with a changed model, prompt or policy; write and
irreversible tools are never executed in a fork. Both run in a scratch in-memory store; a fork is
then copied into the real store as a new run that names its parent.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tether.agent import Agent
from tether.agent_refs import recorded_ref
from tether.engine.runtime import Runtime, bind_policy, load_agent
from tether.errors import UsageError
from tether.journal.events import (
    ApprovalDecided,
    Escalated,
    Event,
    ModelResponded,
    PolicyDecided,
    RunFinished,
    ToolFinished,
    ValidationFailed,
    decision_of,
)
from tether.journal.store import RunRecord, Store
from tether.models.base import Model
from tether.policy.binding import PolicyRecord
from tether.policy.pipeline import PolicyEngine
from tether.policy.rules import Limit, Rule, VerdictKind
from tether.replay.source import Divergence, JournalModel, Recording, ReplayTools

FORK_APPROVER = "fork-simulator"


@dataclass(slots=True)
class Step:
    """The decisions of one step, in a form two runs can be compared by."""

    step: int
    items: list[tuple[Any, ...]] = field(default_factory=list)


@dataclass(slots=True)
class ReplayReport:
    run_id: str
    matched: bool
    steps_compared: int
    divergence: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


@dataclass(slots=True)
class DiffReport:
    run_a: str
    run_b: str
    same: bool
    first_divergent_step: int | None
    a: list[tuple[Any, ...]] = field(default_factory=list)
    b: list[tuple[Any, ...]] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


def decisions(events: list[Event]) -> list[Step]:
    """Project a journal onto what matters for comparison: calls, decisions, outcomes."""
    steps: dict[int, Step] = {}
    for ev in events:
        data = ev.data
        item: tuple[Any, ...] | None = None
        decided = decision_of(data)
        if decided is not None:  # (formats 1-2: a read's result may carry its decision)
            entry = ("decision", decided.tool, str(decided.decision), decided.rule)
            steps.setdefault(ev.step, Step(ev.step)).items.append(entry)
        match data:
            case ModelResponded(response=r):
                calls = [(c.name, _args(c.arguments)) for c in r.tool_calls]
                item = ("model", r.text, json.dumps(calls, sort_keys=True))
            case ValidationFailed():
                item = ("invalid", data.tool, data.error)
            case ApprovalDecided():
                item = ("approval", str(data.status), json.dumps(data.edited_args, sort_keys=True))
            case ToolFinished():
                item = ("result", data.ok, data.simulated, data.content[:200])
            case Escalated():
                item = ("escalated", data.reason)
            case RunFinished():
                output = json.dumps(data.output, sort_keys=True, default=str)
                item = ("finished", str(data.status), output)
        if item is not None:
            steps.setdefault(ev.step, Step(ev.step)).items.append(item)
    return [steps[k] for k in sorted(steps)]


def _args(raw: Any) -> Any:
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return raw


def _agent_for(store: Store, record: RunRecord, agent: Agent | None) -> Agent:
    if agent is not None:
        return agent
    return load_agent(recorded_ref(record.id, record.agent_ref))  # only an allowed reference


async def _drive_with_recorded_humans(
    runtime: Runtime,
    agent: Agent,
    run_input: Any,
    recording: Recording,
    *,
    fork: bool,
    run_id: str,
) -> str:
    """Run in the scratch runtime, answering approvals and questions as the recording did."""
    result = await runtime.run(agent, run_input, run_id=run_id, scopes=recording.scopes)
    for _ in range(10_000):
        if result.status == "waiting_approval" and result.waiting_for:
            approval = runtime.store.get_approval(result.waiting_for["approval_id"])
            recorded = recording.approval_for(approval.tool, approval.args)
            if recorded is None:
                if not fork:
                    raise Divergence(
                        approval.step,
                        f"approval for {approval.tool} was never requested in the recording",
                        None,
                        approval.args,
                    )
                runtime.store.decide_approval(
                    approval.id,
                    status="approved",
                    decided_by=FORK_APPROVER,
                    reason="fork: the call is simulated",
                )
            else:
                runtime.store.decide_approval(
                    approval.id,
                    status=recorded.status,
                    decided_by=recorded.by or "recorded",
                    reason=recorded.reason,
                    edited_args=recorded.edited_args,
                )
        elif result.status == "waiting_input":
            question = (result.waiting_for or {}).get("question")
            if not recording.answers:
                if fork:
                    break
                raise Divergence(
                    result.steps,
                    "the replay asks a question the recording never answered",
                    None,
                    question,
                )
            runtime.answer(result.run_id, recording.answers.popleft(), by="recorded")
        else:
            break
        result = await runtime.resume(result.run_id, agent)
    return result.run_id


def _recorded_policy(
    scratch: Store,
    record: RunRecord,
    events: list[Event],
    rules: Sequence[Rule] | None,
    limits: Sequence[Limit] | None,
) -> PolicyEngine:
    """The policy the run started under, for the scratch store: ``rules``/``limits`` if they
    hash the same, or the recorded policy files (see :func:`tether.engine.runtime.bind_policy`)."""
    recorded = PolicyRecord.from_dict(events[0].payload.get("policy")) if events else None
    return bind_policy(PolicyEngine(scratch, rules=rules or (), limits=limits or ()), recorded,
                       record.id)  # fmt: skip


async def replay_run(
    store: Store,
    run_id: str,
    agent: Agent | None = None,
    *,
    rules: Sequence[Rule] | None = None,
    limits: Sequence[Limit] | None = None,
) -> ReplayReport:
    """Re-run the agent against the journal; report the first decision that differs.

    The replay runs under the policy the run recorded: ``rules`` and ``limits`` as given to the
    run's ``Runtime``, or, by default, the policy files the run recorded (unchanged since)."""
    record = store.get_run(run_id)
    events = store.events(record.id)
    recording = Recording.from_events(record.id, events)
    agent = _agent_for(store, record, agent)
    scratch = Store(":memory:")
    policy = _recorded_policy(scratch, record, events, rules, limits)
    runtime = Runtime(scratch, model=JournalModel(recording, strict=True), rules=policy.rules,
                      limits=policy.limits)  # fmt: skip
    runtime.replay = ReplayTools(recording, strict=True)
    original = decisions(events)
    new_id = uuid.uuid4().hex
    try:
        await _drive_with_recorded_humans(
            runtime, agent, recording.run_input, recording, fork=False, run_id=new_id
        )
    except Divergence as div:
        # an earlier decision may already differ (e.g. a denial changed the next prompt)
        scratch_events = scratch.events(new_id)
        so_far = decisions(scratch_events)
        step = div.step or (original[-1].step if original else 0)
        earlier = _compare(
            record.id, [s for s in original if s.step < step], [s for s in so_far if s.step < step]
        )
        scratch.close()
        if not earlier.matched:
            return _name_broken_rule(earlier, scratch_events)
        return ReplayReport(
            record.id,
            False,
            step,
            {"step": step, "what": div.what, "original": div.original, "replayed": div.replayed},
        )
    scratch_events = scratch.events(new_id)
    scratch.close()
    return _name_broken_rule(_compare(record.id, original, decisions(scratch_events)),
                             scratch_events)  # fmt: skip


def _name_broken_rule(report: ReplayReport, replayed: list[Event]) -> ReplayReport:
    """Say which rule raised on replay, and what, when that is where the decisions part.

    A rule that raises escalates the call (fail closed), so a replay only shows "escalate" where
    the run allowed; the usual cause is a rule reading ``p.deps`` (absent on replay) instead of
    reading through ``p.observe``."""
    if report.matched or report.divergence is None:
        return report
    step = report.divergence.get("step")
    for ev in replayed:
        data = ev.data
        if not isinstance(data, PolicyDecided) or data.decision is not VerdictKind.ESCALATE:
            continue
        rule, reason = data.rule or "", data.reason or ""
        prefix = f"rule {rule} raised "
        if rule and reason.startswith(prefix) and (step is None or ev.step <= step):
            error = reason.removeprefix(prefix)
            report.divergence["what"] = (
                f"{report.divergence.get('what')}: rule {rule!r} raised {error} on replay "
                "(read outside state through p.observe, which journals it for replay; on "
                "replay p.deps may be absent or hold other data)"
            )
            report.divergence["rule"] = rule
            report.divergence["error"] = error
            break
    return report


def _compare(run_id: str, original: list[Step], replayed: list[Step]) -> ReplayReport:
    for i in range(max(len(original), len(replayed))):
        a = original[i] if i < len(original) else None
        b = replayed[i] if i < len(replayed) else None
        if a is None or b is None or a.items != b.items:
            step = (a or b).step  # type: ignore[union-attr]
            first = _first_difference(a.items if a else [], b.items if b else [])
            return ReplayReport(
                run_id,
                False,
                i,
                {
                    "step": step,
                    "what": "decisions differ",
                    "original": first[0],
                    "replayed": first[1],
                },
            )
    return ReplayReport(run_id, True, len(original))


def _first_difference(a: list[Any], b: list[Any]) -> tuple[Any, Any]:
    for x, y in zip(a, b, strict=False):
        if x != y:
            return x, y
    return (a[len(b)] if len(a) > len(b) else None, b[len(a)] if len(b) > len(a) else None)


async def fork_run(
    store: Store,
    run_id: str,
    *,
    from_step: int,
    agent: Agent | None = None,
    model: Model | str | None = None,
    instructions: str | None = None,
    rules: list[Rule] | None = None,
    limits: list[Limit] | None = None,
    live_reads: bool = False,
) -> str:
    """Replay steps before ``from_step`` from the journal, then go live with the changes.

    Returns the new run's id (stored with ``parent_run_id`` and ``fork_step``).
    """
    record = store.get_run(run_id)
    events = store.events(record.id)
    recording = Recording.from_events(record.id, events)
    if from_step < 1:
        raise UsageError("--from-step counts from 1")
    agent = _agent_for(store, record, agent)
    if instructions is not None:
        agent = dataclasses.replace(agent, instructions=instructions)
    if rules is not None or limits is not None:
        kept = [r for r in agent.policy if not isinstance(r, (Rule, Limit))]
        agent = dataclasses.replace(agent, policy=[*kept, *(rules or []), *(limits or [])])
    live_model = Runtime(store)._model_for(agent, model)
    prefix_calls = sum(1 for s in recording.steps if s < from_step)
    journal_model = JournalModel(
        recording, strict=False, live=live_model, live_from_call=prefix_calls
    )
    scratch = Store(":memory:")
    # the run's own policy, unless the fork replaces the rules
    policy = (_recorded_policy(scratch, record, events, None, None)
              if rules is None and limits is None else PolicyEngine(scratch))  # fmt: skip
    runtime = Runtime(scratch, model=journal_model, rules=policy.rules, limits=policy.limits)
    runtime.replay = ReplayTools(recording, strict=False, live_reads=live_reads)
    runtime.deps = Runtime(store)._deps_for(agent)
    new_id = uuid.uuid4().hex
    await _drive_with_recorded_humans(
        runtime, agent, recording.run_input, recording, fork=True, run_id=new_id
    )
    forked = scratch.get_run(new_id)
    forked.parent_run_id = record.id
    forked.fork_step = from_step
    forked.agent_ref = record.agent_ref
    store.create_run(forked, scratch.events(new_id))
    scratch.close()
    return new_id


def diff_runs(store: Store, run_a: str, run_b: str) -> DiffReport:
    """Where two runs (e.g. a run and its fork) diverge, step by step."""
    a_rec, b_rec = store.get_run(run_a), store.get_run(run_b)
    a, b = decisions(store.events(a_rec.id)), decisions(store.events(b_rec.id))
    rows: list[dict[str, Any]] = []
    first: int | None = None
    for i in range(max(len(a), len(b))):
        sa = a[i] if i < len(a) else None
        sb = b[i] if i < len(b) else None
        same = sa is not None and sb is not None and sa.items == sb.items
        step = (sa or sb).step  # type: ignore[union-attr]
        if not same and first is None:
            first = step
        rows.append(
            {
                "step": step,
                "same": same,
                "a": [list(x) for x in (sa.items if sa else [])],
                "b": [list(x) for x in (sb.items if sb else [])],
            }
        )
    return DiffReport(a_rec.id, b_rec.id, first is None, first, steps=rows)
