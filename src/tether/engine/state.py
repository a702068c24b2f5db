"""Run state, rebuilt from the journal.

The journal is the source of truth. :meth:`RunState.apply` folds one event into the state; the
engine calls it for every event it appends, and resume calls it for every stored event, so a
resumed run is in exactly the state the original process was in when its last event was written.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson

from tether.journal.events import Event, EventType
from tether.journal.store import Reservation
from tether.messages import Message, ToolCall
from tether.policy.rules import CallOutcome, PastCall

_repeat_key_slow = json.JSONEncoder(separators=(",", ":"), sort_keys=True, default=str).encode
_SORTED = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


def repeat_key(args: Any) -> str:
    """How a call's arguments enter its repeat key: canonical JSON (sorted keys)."""
    try:
        return orjson.dumps(args, default=str, option=_SORTED).decode()
    except (TypeError, ValueError):
        return _repeat_key_slow(args)


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    WAITING_APPROVAL = "waiting_approval"
    WAITING_INPUT = "waiting_input"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ESCALATED = "escalated"
    BUDGET_EXCEEDED = "budget_exceeded"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL

    @property
    def waiting(self) -> bool:
        return self in (RunStatus.WAITING_APPROVAL, RunStatus.WAITING_INPUT)


_TERMINAL = frozenset(
    {
        RunStatus.SUCCEEDED,
        RunStatus.FAILED,
        RunStatus.ESCALATED,
        RunStatus.BUDGET_EXCEEDED,
        RunStatus.CANCELLED,
    }
)


@dataclass(slots=True)
class CallProgress:
    """How far one proposed tool call got."""

    call: ToolCall
    tool: str | None = None
    args: dict[str, Any] | None = None
    decision: str | None = None
    decision_rule: str = ""
    approval_id: str | None = None
    approved: bool = False
    started: bool = False
    done: bool = False
    repeat_key: str = ""
    counted: bool = False  # the proposal counted towards its repeat key
    validated: Any = None  # the validated arguments model, kept in memory only
    # a plainly allowed read's proposal, folded but journaled only with its result
    deferred: dict[str, Any] | None = None
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
    waiting_for: dict[str, Any] | None = None
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
        """Whether a proposed call of the current turn is not done (without building the list)."""
        for c in self.calls:  # noqa: SIM110 (a generator for any() costs more than this loop)
            if not c.done:
                return True
        return False

    @property
    def pending_calls(self) -> list[CallProgress]:
        return [c for c in self.calls if not c.done]

    # -- folding events --------------------------------------------------------------------------

    def apply(self, ev: Event, payload: dict[str, Any] | None = None) -> None:
        p = payload if payload is not None else ev.payload
        self.last_seq = ev.seq
        if ev.hash:  # (the engine folds its events before it hashes them: see RunContext.seal)
            self.last_hash = ev.hash
        handler = _HANDLERS.get(ev.type)
        if handler is not None:
            handler(self, ev, p)

    def propose(self, payload: dict[str, Any]) -> None:
        """Fold a proposal that is not journaled yet: a read the policy plainly allows is
        journaled once, with its result (``tool_finished`` carries the proposal). Folding it
        again from the journal changes nothing more."""
        _tool_proposed(self, None, payload)

    def _tool_message(self, call_id: str, name: str, content: str) -> None:
        self.messages.append(Message("tool", content, tool_call_id=call_id, name=name))
        progress = self.call(call_id)
        progress.done = True


def _run_started(s: RunState, ev: Event, p: dict[str, Any]) -> None:
    s.status = RunStatus.RUNNING
    s.started_at = ev.ts
    s.run_input = p["input"]
    s.scopes = frozenset(p.get("scopes", ()))
    s.agent_snapshot = p.get("agent", {})
    text = p["input"] if isinstance(p["input"], str) else json.dumps(p["input"])
    # the system prompt: the agent's instructions (older journals also had them at top level)
    system = p["instructions"] if "instructions" in p else p["agent"]["instructions"]
    s.messages = [Message("system", system), Message("user", text)]


def _run_resumed(s: RunState, ev: Event, p: dict[str, Any]) -> None:
    s.status = RunStatus.RUNNING


def _model_request(s: RunState, ev: Event, p: dict[str, Any]) -> None:
    s.step = ev.step
    s.model_requests += 1


def _model_error(s: RunState, ev: Event, p: dict[str, Any]) -> None:
    if "request" in p:
        _model_request(s, ev, p)


def _model_response(s: RunState, ev: Event, p: dict[str, Any]) -> None:
    if "request" in p:  # the request journaled with its answer (older journals: an event before)
        _model_request(s, ev, p)
    # what ModelResponse.from_dict(...).as_message() gives, without the intermediate response
    r = p["response"]
    usage = r.get("usage") or {}
    s.input_tokens += int(usage.get("input_tokens", 0))
    s.output_tokens += int(usage.get("output_tokens", 0))
    s.cost_usd += r.get("cost_usd") or 0.0
    calls = [ToolCall.from_dict(c) for c in r.get("tool_calls") or ()]
    s.messages.append(Message("assistant", r.get("text") or "", calls))
    s.calls = [CallProgress(c) for c in calls]


def _validation_failed(s: RunState, ev: Event, p: dict[str, Any]) -> None:
    s.consecutive_failures += 1
    if p.get("call_id"):
        c = s.call(p["call_id"])
        s.refused.append(
            PastCall(
                p.get("tool") or "",
                c.args or {},
                False,
                outcome=CallOutcome.INVALID,
                reason=str(p["error"]),
            )
        )
        s._tool_message(p["call_id"], p.get("tool") or "", f"Error: {p['error']}")
    else:  # the final output failed validation
        s.output_retries += 1
        s.messages.append(Message("user", p["feedback"]))


def _tool_proposed(s: RunState, ev: Event | None, p: dict[str, Any]) -> None:
    c = s.call(p["call_id"])
    c.tool = p["tool"]
    c.args = p["args"]
    if not c.counted:  # folding the same proposal twice (see RunState.propose) counts it once
        # the engine computed the key already when it proposed the call; resume computes it
        key = c.repeat_key or p["tool"] + repeat_key(p["args"])
        c.repeat_key = key
        s.call_counts[key] = s.call_counts.get(key, 0) + 1
        c.counted = True
    decision = p.get("decision")
    if decision is not None:  # a plain allow, journaled with the proposal
        c.decision = decision
        c.decision_rule = p.get("rule", "")


def _policy_decision(s: RunState, ev: Event, p: dict[str, Any]) -> None:
    c = s.call(p["call_id"])
    c.decision = p["decision"]
    c.decision_rule = p.get("rule", "")
    if p["decision"] == "deny":
        s.consecutive_failures += 1
        s.refused.append(
            PastCall(
                c.tool or "",
                c.args or {},
                False,
                outcome=CallOutcome.DENIED,
                reason=f"{p.get('rule')}: {p.get('reason')}",
            )
        )
        s._tool_message(
            c.call.id, c.tool or "", f"Denied by policy ({p.get('rule')}): {p.get('reason')}"
        )
    if p.get("args") is not None:  # re-checked edited arguments
        c.args = p["args"]
        c.validated = None


def _approval_requested(s: RunState, ev: Event, p: dict[str, Any]) -> None:
    c = s.call(p["call_id"])
    c.approval_id = p["approval_id"]
    s.status = RunStatus.WAITING_APPROVAL
    s.waiting_for = {"approval_id": p["approval_id"], "call_id": p["call_id"]}


def _approval_decided(s: RunState, ev: Event, p: dict[str, Any]) -> None:
    c = s.call(p["call_id"])
    s.status = RunStatus.RUNNING
    s.waiting_for = None
    if p["status"] == "rejected":
        s.consecutive_failures += 1
        s.refused.append(
            PastCall(
                c.tool or "",
                c.args or {},
                False,
                outcome=CallOutcome.REJECTED,
                reason=str(p.get("reason") or ""),
            )
        )
        s._tool_message(
            c.call.id, c.tool or "", f"A human rejected this call: {p.get('reason') or 'no reason'}"
        )
    else:
        c.approved = True
        if p.get("edited_args") is not None:
            c.args = p["edited_args"]
            c.validated = None


def _tool_started(s: RunState, ev: Event, p: dict[str, Any]) -> None:
    s.call(p["call_id"]).started = True


def _tool_finished(s: RunState, ev: Event, p: dict[str, Any]) -> None:
    c = s.call(p["call_id"])
    if "args" in p and not c.counted:  # a read's proposal, journaled with its result (the
        _tool_proposed(s, ev, p)  # engine folded it already when it made it)
    ok = bool(p["ok"])
    content = p["content"]
    if ok:
        s.consecutive_failures = 0
    else:
        s.consecutive_failures += 1
    # the result, for rules that look back: the content as journaled, decoded when a rule
    # reads it if the tool returned data, as is if it returned text (older journals: "result")
    form = p.get("result_form")
    if not ok:
        past = PastCall(c.tool or "", c.args or {}, False)
    elif form == "json":
        past = PastCall.from_json(c.tool or "", c.args or {}, True, content)
    elif form == "text":
        past = PastCall(c.tool or "", c.args or {}, True, content)
    else:
        past = PastCall(c.tool or "", c.args or {}, True, p.get("result"))
    s.history.append(past)
    # as _tool_message, with the call already in hand
    s.messages.append(
        Message(
            "tool",
            content if ok else f"Error: {content}",
            tool_call_id=c.call.id,
            name=c.tool or "",
        )
    )
    c.done = True


def _feedback(s: RunState, ev: Event, p: dict[str, Any]) -> None:
    s.messages.append(Message("user", p["message"]))
    if p.get("kind") == "loop":
        s.nudged.add(p["key"])


def _input_requested(s: RunState, ev: Event, p: dict[str, Any]) -> None:
    s.status = RunStatus.WAITING_INPUT
    s.waiting_for = {"question": p["question"], "kind": p["kind"], "call_id": p.get("call_id")}


def _input_received(s: RunState, ev: Event, p: dict[str, Any]) -> None:
    waiting = s.waiting_for or {}
    s.status = RunStatus.RUNNING
    s.waiting_for = None
    s.consecutive_failures = 0
    call_id = waiting.get("call_id")
    if p.get("kind") in ("unpaused", "retry"):  # the run goes on where it stopped
        return
    s.answers.append(str(p["answer"]))
    if call_id:  # the answer stands for the call's result (ask_human, or a call in doubt)
        name = s.call(call_id).tool or "ask_human"
        s._tool_message(call_id, name, f"The human answered: {p['answer']}")
    else:
        s.messages.append(Message("user", f"A human answered: {p['answer']}"))


def _escalated(s: RunState, ev: Event, p: dict[str, Any]) -> None:
    s.status = RunStatus.ESCALATED
    s.reason = p["reason"]


def _run_finished(s: RunState, ev: Event, p: dict[str, Any]) -> None:
    s.status = RunStatus(p["status"])
    s.output = p.get("output")
    s.reason = p.get("reason")


_HANDLERS: dict[str, Callable[[RunState, Event, dict[str, Any]], None]] = {
    EventType.RUN_STARTED: _run_started,
    EventType.RUN_RESUMED: _run_resumed,
    EventType.MODEL_REQUEST: _model_request,
    EventType.MODEL_RESPONSE: _model_response,
    EventType.MODEL_ERROR: _model_error,
    EventType.VALIDATION_FAILED: _validation_failed,
    EventType.TOOL_PROPOSED: _tool_proposed,
    EventType.POLICY_DECISION: _policy_decision,
    EventType.APPROVAL_REQUESTED: _approval_requested,
    EventType.APPROVAL_DECIDED: _approval_decided,
    EventType.TOOL_STARTED: _tool_started,
    EventType.TOOL_FINISHED: _tool_finished,
    EventType.FEEDBACK: _feedback,
    EventType.INPUT_REQUESTED: _input_requested,
    EventType.INPUT_RECEIVED: _input_received,
    EventType.ESCALATED: _escalated,
    EventType.RUN_FINISHED: _run_finished,
}
