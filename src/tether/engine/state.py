"""Run state, rebuilt from the journal.

The journal is the source of truth. :meth:`RunState.apply` folds one event into the state; the
engine calls it for every event it appends, and resume calls it for every stored event, so a
resumed run is in exactly the state the original process was in when its last event was written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import orjson

from tether.journal.events import (
    AnswerKind,
    ApprovalDecided,
    ApprovalRequested,
    Escalated,
    Event,
    EventData,
    Feedback,
    InputKind,
    InputReceived,
    InputRequested,
    LimitsReserved,
    ModelFailed,
    ModelRequested,
    ModelResponded,
    PolicyDecided,
    ResultForm,
    RunFinished,
    RunResumed,
    RunStarted,
    ToolFinished,
    ToolProposed,
    ToolStarted,
    ValidationFailed,
)
from tether.journal.store import Reservation
from tether.messages import Message, ToolCall
from tether.policy.rules import CallOutcome, PastCall, Proposal, VerdictKind
from tether.status import ApprovalStatus, RunStatus
from tether.tools import Tool

_repeat_key_slow = json.JSONEncoder(separators=(",", ":"), sort_keys=True, default=str).encode
_SORTED = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


def repeat_key(args: Any) -> str:
    """How a call's arguments enter its repeat key: canonical JSON (sorted keys)."""
    try:
        return orjson.dumps(args, default=str, option=_SORTED).decode()
    except (TypeError, ValueError):
        return _repeat_key_slow(args)


class CallStage(IntEnum):
    """How far a proposed call got, in order: each gate of the engine reads it to skip what was
    done before a resume (see :mod:`tether.engine.gates`)."""

    NEW = 0  # proposed by the model; nothing journaled yet
    PROPOSED = 1  # validated and journaled (``tool_proposed``)
    DECIDED = 2  # the policy decided (``decision``)
    AWAITING_APPROVAL = 3  # an approval was requested
    APPROVED = 4  # a human approved it (edited arguments checked again)
    STARTED = 5  # a side effect's intent is journaled (``tool_started``)
    DONE = 6  # it has a result: run, denied, rejected, invalid, or answered by a human


@dataclass(slots=True)
class CallProgress:
    """How far one proposed tool call got: its stage, and what the journal says of it."""

    call: ToolCall
    stage: CallStage = CallStage.NEW
    tool: str | None = None
    args: dict[str, Any] | None = None
    decision: VerdictKind | None = None
    decision_rule: str = ""
    decision_reason: str = ""
    approval_id: str | None = None
    repeat_key: str = ""
    counted: bool = False  # the proposal counted towards its repeat key
    validated: Any = None  # the validated arguments model, kept in memory only
    # what the call reserved against hard limits, given back if it fails (in memory only)
    reserved: tuple[Reservation, ...] = ()


@dataclass(slots=True)
class RunState:
    """Everything the loop needs to continue a run."""

    run_id: str
    status: RunStatus = RunStatus.QUEUED
    messages: list[Message] = field(default_factory=list)
    step: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    started_at: float = 0.0
    last_seq: int = 0
    last_hash: str = ""
    run_input: Any = None
    scopes: frozenset[str] = frozenset()  # what the run was granted (see Runtime.run)
    agent_snapshot: dict[str, Any] = field(default_factory=dict)
    calls: list[CallProgress] = field(default_factory=list)
    history: list[PastCall] = field(default_factory=list)
    refused: list[PastCall] = field(default_factory=list)  # calls that never ran, and why
    answers: list[str] = field(default_factory=list)  # what humans answered, in order
    consecutive_failures: int = 0
    output_retries: int = 0
    call_counts: dict[str, int] = field(default_factory=dict)
    nudged: set[str] = field(default_factory=set)
    waiting_for: InputRequested | ApprovalRequested | None = None
    output: Any = None
    reason: str | None = None
    model_requests: int = 0

    # -- queries ---------------------------------------------------------------------------------

    def call(self, call_id: str) -> CallProgress:
        for c in self.calls:
            if c.call.id == call_id:
                return c
        raise KeyError(call_id)

    def has_pending_calls(self) -> bool:
        """Whether a proposed call of the current turn is not done."""
        return any(c.stage is not CallStage.DONE for c in self.calls)

    @property
    def pending_calls(self) -> list[CallProgress]:
        return [c for c in self.calls if c.stage is not CallStage.DONE]

    # -- folding events --------------------------------------------------------------------------

    def apply(self, ev: Event, data: EventData | None = None) -> None:
        """Fold one event (``data``: its typed form, when the caller has it already)."""
        self.last_seq = ev.seq
        if ev.hash:  # (the engine folds its events before it hashes them: see RunContext.seal)
            self.last_hash = ev.hash
        _fold(self, ev, ev.data if data is None else data)

    def proposal(
        self,
        tool: Tool,
        args: dict[str, Any],
        *,
        agent: str,
        deps: Any = None,
        recorded: dict[str, Any] | None = None,
    ) -> Proposal:
        """What the policy decides a call of ``tool`` on: the call, with what the run knows."""
        return Proposal(
            tool=tool.name,
            effect=tool.effect,
            args=args,
            agent=agent,
            run_id=self.run_id,
            run_input=self.run_input,
            history=self.history,
            deps=deps,
            scopes=self.scopes,
            recorded=recorded,
            messages=self.messages,
            refused=self.refused,
            answers=self.answers,
        )

    def _tool_message(self, call_id: str, name: str, content: str) -> None:
        self.messages.append(Message("tool", content, tool_call_id=call_id, name=name))
        self.call(call_id).stage = CallStage.DONE

    def _refuse(self, c: CallProgress, outcome: CallOutcome, reason: str) -> None:
        self.consecutive_failures += 1
        past = PastCall(c.tool or "", c.args or {}, False, outcome=outcome, reason=reason)
        self.refused.append(past)


def _fold(s: RunState, ev: Event, data: EventData) -> None:
    match data:
        case RunStarted():
            s.status = RunStatus.RUNNING
            s.started_at = ev.ts
            s.run_input = data.input
            s.scopes = frozenset(data.scopes)
            s.agent_snapshot = data.agent
            text = data.input if isinstance(data.input, str) else json.dumps(data.input)
            s.messages = [Message("system", data.instructions), Message("user", text)]
        case RunResumed():
            s.status = RunStatus.RUNNING
        case ModelRequested():
            _model_asked(s, ev)
        case ModelFailed():
            if data.request is not None:
                _model_asked(s, ev)
        case ModelResponded():
            if data.request is not None:  # format 1: a model_request event came before
                _model_asked(s, ev)
            r = data.response
            s.input_tokens += r.usage.input_tokens
            s.output_tokens += r.usage.output_tokens
            s.cost_usd += r.cost_usd or 0.0
            s.messages.append(r.as_message())
            s.calls = [CallProgress(c) for c in r.tool_calls]
        case ValidationFailed(call_id=str() as call_id):
            c = s.call(call_id)
            s._refuse(c, CallOutcome.INVALID, data.error)
            s._tool_message(call_id, data.tool or "", f"Error: {data.error}")
        case ValidationFailed():  # the final output failed validation
            s.consecutive_failures += 1
            s.output_retries += 1
            s.messages.append(Message("user", data.feedback or data.error))
        case ToolProposed():
            _proposed(s, data)
        case PolicyDecided():
            c = s.call(data.call_id)
            c.decision = data.decision
            c.decision_rule = data.rule or ""
            c.decision_reason = data.reason or ""
            c.stage = max(c.stage, CallStage.DECIDED)
            if data.decision is VerdictKind.DENY:
                s._refuse(c, CallOutcome.DENIED, f"{data.rule}: {data.reason}")
                s._tool_message(
                    c.call.id, c.tool or "", f"Denied by policy ({data.rule}): {data.reason}"
                )
            if data.args is not None:  # re-checked edited arguments
                c.args = data.args
                c.validated = None
        case LimitsReserved():
            pass  # counted in the store; journaled for the audit (tether verify)
        case ApprovalRequested():
            c = s.call(data.call_id)
            c.approval_id = data.approval_id
            c.stage = max(c.stage, CallStage.AWAITING_APPROVAL)
            s.status = RunStatus.WAITING_APPROVAL
            s.waiting_for = data
        case ApprovalDecided():
            c = s.call(data.call_id)
            s.status = RunStatus.RUNNING
            s.waiting_for = None
            if data.status is ApprovalStatus.REJECTED:
                s._refuse(c, CallOutcome.REJECTED, data.reason or "")
                why = data.reason or "no reason"
                s._tool_message(c.call.id, c.tool or "", f"A human rejected this call: {why}")
            else:
                c.stage = CallStage.APPROVED
                if data.edited_args is not None:
                    c.args = data.edited_args
                    c.validated = None
        case ToolStarted():
            s.call(data.call_id).stage = CallStage.STARTED
        case ToolFinished():
            _finished(s, data)
        case Feedback():
            s.messages.append(Message("user", data.message))
            if data.kind == "loop" and data.key:
                s.nudged.add(data.key)
        case InputRequested():
            s.status = RunStatus.WAITING_INPUT
            s.waiting_for = data
        case InputReceived():
            _input_received(s, data)
        case Escalated():
            s.status = RunStatus.ESCALATED
            s.reason = data.reason
        case RunFinished():
            s.status = data.status
            s.output = data.output
            s.reason = data.reason


def _model_asked(s: RunState, ev: Event) -> None:
    s.step = ev.step
    s.model_requests += 1


def _proposed(s: RunState, p: ToolProposed) -> None:
    c = s.call(p.call_id)
    c.tool = p.tool
    c.args = p.args
    c.stage = max(c.stage, CallStage.PROPOSED)
    if not c.counted:
        # the engine computed the key already when it proposed the call; resume computes it
        key = c.repeat_key or p.tool + repeat_key(p.args)
        c.repeat_key = key
        s.call_counts[key] = s.call_counts.get(key, 0) + 1
        c.counted = True
    if p.decision is not None:  # a plain allow, journaled with the proposal
        c.decision = p.decision
        c.decision_rule = p.rule or ""
        c.decision_reason = p.reason or ""
        c.stage = max(c.stage, CallStage.DECIDED)


def _finished(s: RunState, p: ToolFinished) -> None:
    c = s.call(p.call_id)
    if p.proposed is not None and not c.counted:  # formats 1-2: a read's proposal came along
        _proposed(s, p.proposed)
    if p.ok:
        s.consecutive_failures = 0
    else:
        s.consecutive_failures += 1
    # the result, for rules that look back: the content as journaled, decoded when a rule
    # reads it if the tool returned data, as is if it returned text
    if not p.ok:
        past = PastCall(c.tool or "", c.args or {}, False)
    elif p.result_form is ResultForm.JSON:
        past = PastCall.from_json(c.tool or "", c.args or {}, True, p.content)
    elif p.result_form is ResultForm.TEXT:
        past = PastCall(c.tool or "", c.args or {}, True, p.content)
    else:  # format 1 kept the raw result beside its content
        past = PastCall(c.tool or "", c.args or {}, True, p.result)
    s.history.append(past)
    s._tool_message(c.call.id, c.tool or "", p.content if p.ok else f"Error: {p.content}")


def _input_received(s: RunState, p: InputReceived) -> None:
    waiting = s.waiting_for
    s.status = RunStatus.RUNNING
    s.waiting_for = None
    s.consecutive_failures = 0
    if p.kind is not AnswerKind.ANSWER:  # the run goes on where it stopped
        return
    s.answers.append(p.answer)
    call_id = waiting.call_id if isinstance(waiting, InputRequested) else None
    if call_id:  # the answer stands for the call's result (ask_human, or a call in doubt)
        name = s.call(call_id).tool or "ask_human"
        s._tool_message(call_id, name, f"The human answered: {p.answer}")
    else:
        s.messages.append(Message("user", f"A human answered: {p.answer}"))


__all__ = ["CallProgress", "CallStage", "InputKind", "RunState", "RunStatus", "repeat_key"]
