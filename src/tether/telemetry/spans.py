"""A run's journal folded into spans (plain data): what :mod:`tether.telemetry.otel` exports.

Each span follows the OpenTelemetry GenAI semantic conventions; the module docstring of
:mod:`tether.telemetry.otel` lists them. Nothing here imports OpenTelemetry.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from tether.engine.state import RunState
from tether.journal.events import (
    ApprovalDecided,
    ApprovalRequested,
    AskedModel,
    BudgetExceeded,
    Escalated,
    Event,
    EventData,
    EventType,
    Feedback,
    InputReceived,
    InputRequested,
    ModelFailed,
    ModelRequested,
    ModelResponded,
    PolicyDecided,
    RunFinished,
    RunResumed,
    RunStarted,
    ToolFinished,
    ToolProposed,
    ToolStarted,
    ValidationFailed,
    asked_at,
)
from tether.journal.redaction import Redactor
from tether.journal.store import RunRecord
from tether.messages import ModelResponse
from tether.policy.rules import VerdictKind
from tether.status import ApprovalStatus

# model spec prefix -> gen_ai.provider.name
_PROVIDERS = {
    "openai": "openai",
    "anthropic": "anthropic",
    "openai_compat": "openai_compat",
    "local": "llama_cpp",
}
_ERROR_STATUSES = frozenset({"failed", "budget_exceeded"})


@dataclass(slots=True)
class SpanEvent:
    name: str
    ts: float
    attributes: dict[str, Any]


@dataclass(slots=True)
class Span:
    name: str
    kind: str  # "internal" or "client"
    start: float
    end: float
    attributes: dict[str, Any]
    events: list[SpanEvent] = field(default_factory=list)
    error: tuple[str, str] | None = None  # (error.type, description)


def _split_model(spec: str) -> tuple[str, str]:
    """``"openai:gpt-4o-mini"`` → ``("openai", "gpt-4o-mini")``; a bare name is its own provider."""
    prefix, sep, rest = spec.partition(":")
    if not sep or not rest:
        return spec or "unknown", spec or "unknown"
    return _PROVIDERS.get(prefix, prefix), rest


def _json(value: Any) -> str:
    return json.dumps(value, default=str, ensure_ascii=False, separators=(",", ":"))


def _arguments(raw: Any) -> Any:
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return raw


def _message_parts(msg: Any) -> dict[str, Any]:
    """A tether :class:`~tether.messages.Message` in the GenAI semantic-convention shape."""
    parts: list[dict[str, Any]] = []
    if msg.role == "tool":
        parts.append(
            {"type": "tool_call_response", "id": msg.tool_call_id, "response": msg.content}
        )
    else:
        if msg.content:
            parts.append({"type": "text", "content": msg.content})
        for c in msg.tool_calls:
            parts.append(
                {
                    "type": "tool_call",
                    "id": c.id,
                    "name": c.name,
                    "arguments": _arguments(c.arguments),
                }
            )
    return {"role": msg.role, "parts": parts}


def _finish_reason(response: ModelResponse) -> str:
    reason = response.meta.get("finish_reason") or response.meta.get("stop_reason")
    if reason:
        return str(reason)
    return "tool_calls" if response.tool_calls else "stop"


class _Planner:
    """Folds a run's events into spans."""

    def __init__(
        self, run: RunRecord, events: list[Event], *, capture: bool, redactor: Redactor
    ) -> None:
        self.run = run
        self.events = events
        self.capture = capture
        self.redactor = redactor
        self.chats: list[Span] = []
        self.open_chat: Span | None = None
        self.tools: dict[str, Span] = {}
        self.tool_order: list[Span] = []
        self.tool_descriptions: dict[str, str] = {}
        self.state: RunState | None = None  # folded along: the messages of each request
        self.system: str | None = None

    # -- helpers --

    def _content(self, value: Any) -> str:
        """Content as a JSON attribute value, redacted."""
        return _json(self.redactor.redact(value))

    def _text(self, text: str) -> str:
        return str(self.redactor.redact_text(text))

    def _fold(self, ev: Event, data: EventData) -> None:
        if self.state is None:
            return
        try:
            self.state.apply(ev, data)
        except Exception:  # an odd journal: stop reconstructing messages, keep exporting
            self.state = None

    def _tool_span(self, call_id: str, name: str, ts: float, step: int) -> Span:
        span = self.tools.get(call_id)
        if span is None:
            span = Span(
                name=f"execute_tool {name}",
                kind="internal",
                start=ts,
                end=ts,
                attributes={
                    "gen_ai.operation.name": "execute_tool",
                    "gen_ai.tool.name": name,
                    "gen_ai.tool.call.id": call_id,
                    "gen_ai.tool.type": "function",
                    "gen_ai.tool.description": self.tool_descriptions.get(name),
                    "gen_ai.conversation.id": self.run.id,
                    "tether.step": step,
                },
            )
            self.tools[call_id] = span
            self.tool_order.append(span)
        return span

    def _settle(self, span: Span, ts: float, outcome: str) -> None:
        span.end = max(span.end, ts)
        span.attributes["tether.tool.outcome"] = outcome

    # -- the fold --

    def plan(self) -> list[Span]:
        run = self.run
        events = self.events
        first = events[0]
        started = first.data if first.type == EventType.RUN_STARTED else None
        start = started if isinstance(started, RunStarted) else None
        agent = start.agent if start is not None else {}
        for t in agent.get("tools") or ():
            if isinstance(t, dict) and t.get("name"):
                self.tool_descriptions[str(t["name"])] = str(t.get("description") or "")
        if self.capture and start is not None:
            self.state = RunState(run_id=run.id)
            self.system = start.instructions
        provider, model = _split_model((start.model if start else "") or run.model or "")
        root = Span(
            name=f"invoke_agent {run.agent}",
            kind="internal",
            start=first.ts,
            end=events[-1].ts,
            attributes={
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.agent.name": run.agent,
                "gen_ai.agent.id": (start.fingerprint if start else "") or None,
                "gen_ai.agent.version": agent.get("version") or run.agent_version,
                "gen_ai.conversation.id": run.id,
                "gen_ai.provider.name": provider,
                "gen_ai.system": provider,
                "gen_ai.request.model": model,
                "tether.run.id": run.id,
                "tether.run.parent_id": run.parent_run_id,
                "tether.run.fork_step": run.fork_step,
                "tether.agent.ref": run.agent_ref,
            },
        )
        input_tokens = output_tokens = 0
        cost = 0.0
        status: str = run.status
        reason: str | None = run.reason
        output: Any = run.output
        for ev in events:
            data = ev.data
            if isinstance(data, ModelResponded):
                input_tokens += data.response.usage.input_tokens
                output_tokens += data.response.usage.output_tokens
                cost += data.response.cost_usd or 0.0
            elif isinstance(data, RunFinished):
                status, reason, output = data.status.value, data.reason, data.output
                root.end = ev.ts
            self._on(ev, data, root)
            self._fold(ev, data)
        root.attributes.update(
            {
                "gen_ai.usage.input_tokens": input_tokens,
                "gen_ai.usage.output_tokens": output_tokens,
                "tether.run.status": status,
                "tether.run.reason": None if reason is None else self._text(str(reason)),
                "tether.run.steps": max((e.step for e in events), default=0),
                "tether.run.cost_usd": round(cost, 8) if cost else None,
            }
        )
        if status in _ERROR_STATUSES:
            root.error = (status, self._text(str(reason or status)))
        if self.capture:
            self._root_content(root, output)
        if self.open_chat is not None:  # a request with no recorded answer (the process stopped)
            self.open_chat.error = ("no_response", "no response was recorded for this request")
        for span in self.tool_order:
            span.attributes.setdefault("tether.tool.outcome", "not_executed")
        return [root, *self.chats, *self.tool_order]

    def _root_content(self, root: Span, output: Any) -> None:
        run = self.run
        text = run.input if isinstance(run.input, str) else _json(run.input)
        root.attributes["gen_ai.input.messages"] = self._content(
            [{"role": "user", "parts": [{"type": "text", "content": text}]}]
        )
        if self.system:
            root.attributes["gen_ai.system_instructions"] = self._content(
                [{"type": "text", "content": self.system}]
            )
        if output is not None:
            out_text = output if isinstance(output, str) else _json(output)
            parts = [{"type": "text", "content": out_text}]
            root.attributes["gen_ai.output.messages"] = self._content(
                [{"role": "assistant", "parts": parts, "finish_reason": "stop"}]
            )

    def _on(self, ev: Event, data: EventData, root: Span) -> None:
        """What one event adds to the spans."""
        attrs: dict[str, Any]
        match data:
            case ModelRequested():
                self._open_chat(ev, AskedModel(data.model, data.messages, data.tools), ev.ts)
            case ModelResponded():
                self._on_model_response(ev, data)
            case ModelFailed():
                self._on_model_error(ev, data)
            case ToolProposed():
                self._on_tool_proposed(ev, data)
            case ValidationFailed():
                self._on_validation_failed(ev, data, root)
            case PolicyDecided():
                self._on_decision(ev, data)
            case ApprovalRequested():
                self._on_approval_requested(ev, data)
            case ApprovalDecided():
                self._on_approval_decided(ev, data)
            case ToolStarted():
                span = self.tools.get(data.call_id)
                if span is not None:
                    span.events.append(SpanEvent("tether.tool.started", ev.ts, {}))
                    span.end = max(span.end, ev.ts)
            case ToolFinished():
                self._on_tool_finished(ev, data)
            case Escalated():
                attrs = {"tether.escalation.reason": self._text(data.reason)}
                root.events.append(SpanEvent("tether.escalated", ev.ts, attrs))
                span = self.tools.get(data.call_id) if data.call_id else None
                if span is not None:
                    span.events.append(SpanEvent("tether.escalated", ev.ts, attrs))
                    self._settle(span, ev.ts, "escalated")
            case RunResumed():
                attrs = {"tether.run.same_agent": data.same_agent}
                root.events.append(SpanEvent("tether.run.resumed", ev.ts, attrs))
            case InputRequested():
                asked: dict[str, Any] = {"tether.input.kind": data.kind.value}
                if self.capture:
                    asked["tether.input.question"] = self._text(data.question)
                root.events.append(SpanEvent("tether.input.requested", ev.ts, asked))
            case InputReceived():
                got: dict[str, Any] = {
                    "tether.input.kind": data.kind.value,
                    "tether.input.by": data.by,
                }
                if self.capture and data.answer:
                    got["tether.input.answer"] = self._text(data.answer)
                root.events.append(SpanEvent("tether.input.received", ev.ts, got))
            case Feedback():
                attrs = {"tether.feedback.kind": data.kind}
                root.events.append(SpanEvent("tether.feedback", ev.ts, attrs))
            case BudgetExceeded(exceeded=True):
                attrs = {"tether.budget.reason": data.reason}
                root.events.append(SpanEvent("tether.budget.exceeded", ev.ts, attrs))

    # -- model calls --

    def _asked_with(self, ev: Event, data: ModelResponded | ModelFailed) -> None:
        """A response or error that records its request opens its span, back-dated by the
        call's recorded duration."""
        if data.request is not None:
            self._open_chat(ev, data.request, asked_at(ev.ts, data))

    def _open_chat(self, ev: Event, asked: AskedModel, start: float) -> None:
        if self.open_chat is not None:
            self.open_chat.end = start
            self.open_chat.error = ("no_response", "no response was recorded for this request")
        provider, model = _split_model(asked.model)
        span = Span(
            name=f"chat {model}",
            kind="client",
            start=start,
            end=start,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": provider,
                "gen_ai.system": provider,
                "gen_ai.request.model": model,
                "gen_ai.conversation.id": self.run.id,
                "tether.step": ev.step,
                "tether.request.messages": asked.messages,
                "tether.request.tools": asked.tools,
            },
        )
        if self.capture and self.state is not None:
            messages = [m for m in self.state.messages if m.role != "system"]
            span.attributes["gen_ai.input.messages"] = self._content(
                [_message_parts(m) for m in messages]
            )
            if self.system:
                span.attributes["gen_ai.system_instructions"] = self._content(
                    [{"type": "text", "content": self.system}]
                )
        self.chats.append(span)
        self.open_chat = span

    def _on_model_response(self, ev: Event, data: ModelResponded) -> None:
        self._asked_with(ev, data)
        span = self.open_chat
        if span is None:
            return
        self.open_chat = None
        span.end = ev.ts
        response = data.response
        meta = response.meta
        response_model = str(meta.get("served_model") or "")  # as the provider's API said
        if not response_model:
            provider, response_model = _split_model(response.model)
            if ":" in response.model:  # a fallback or router may switch provider
                span.attributes["gen_ai.provider.name"] = provider
                span.attributes["gen_ai.system"] = provider
        span.attributes.update(
            {
                "gen_ai.response.model": response_model,
                "gen_ai.response.id": meta.get("id"),
                "gen_ai.response.finish_reasons": [_finish_reason(response)],
                "gen_ai.usage.input_tokens": response.usage.input_tokens,
                "gen_ai.usage.output_tokens": response.usage.output_tokens,
                "gen_ai.usage.cache_read.input_tokens": meta.get("cache_read_input_tokens"),
                "gen_ai.usage.cache_creation.input_tokens": meta.get("cache_creation_input_tokens"),
                "tether.cost_usd": response.cost_usd,
                "tether.model.duration_ms": data.duration_ms,
                "tether.model.cache": meta.get("cache"),
                "tether.model.fallback_from": meta.get("fallback_from"),
                "tether.model.fault": meta.get("fault"),
            }
        )
        if self.capture:
            parts: list[dict[str, Any]] = []
            if response.text:
                parts.append({"type": "text", "content": response.text})
            for c in response.tool_calls:
                call = {"type": "tool_call", "id": c.id, "name": c.name}
                parts.append({**call, "arguments": _arguments(c.arguments)})
            span.attributes["gen_ai.output.messages"] = self._content(
                [{"role": "assistant", "parts": parts, "finish_reason": _finish_reason(response)}]
            )

    def _on_model_error(self, ev: Event, data: ModelFailed) -> None:
        self._asked_with(ev, data)
        span = self.open_chat
        if span is None:
            return
        self.open_chat = None
        span.end = ev.ts
        span.attributes["tether.model.retryable"] = data.retryable
        kind = str(data.status) if data.status else "model_error"
        span.error = (kind, self._text(data.error))

    # -- tool calls --

    def _on_tool_proposed(self, ev: Event, data: ToolProposed) -> None:
        span = self._tool_span(data.call_id, data.tool, ev.ts, ev.step)
        span.attributes["tether.tool.effect"] = data.effect.value
        if self.capture:
            span.attributes["gen_ai.tool.call.arguments"] = self._content(data.args)
        if data.decision is not None:  # a plain allow, journaled with the proposal
            self._on_decision(ev, data)

    def _on_validation_failed(self, ev: Event, data: ValidationFailed, root: Span) -> None:
        if not data.call_id:  # the final output was rejected; the model tries again
            attrs: dict[str, Any] = {"tether.validation.kind": data.kind}
            if self.capture:
                attrs["tether.validation.error"] = self._text(data.error)
            root.events.append(SpanEvent("tether.validation.failed", ev.ts, attrs))
            return
        span = self._tool_span(data.call_id, data.tool or "unknown", ev.ts, ev.step)
        self._settle(span, ev.ts, "invalid")
        detail = self._text(data.error) if self.capture else "invalid tool call"
        span.error = ("invalid_call", detail)

    def _on_decision(self, ev: Event, data: PolicyDecided | ToolProposed) -> None:
        span = self._tool_span(data.call_id, data.tool, ev.ts, ev.step)
        decision = str(data.decision)
        attrs: dict[str, Any] = {
            "tether.policy.decision": decision,
            "tether.policy.rule": data.rule,
            "tether.policy.reason": None if data.reason is None else self._text(data.reason),
        }
        if isinstance(data, PolicyDecided) and data.recheck:
            attrs["tether.policy.recheck"] = True
            if self.capture and data.args is not None:
                span.attributes["gen_ai.tool.call.arguments"] = self._content(data.args)
        span.events.append(SpanEvent("tether.policy.decision", ev.ts, attrs))
        span.attributes["tether.policy.decision"] = decision
        span.attributes["tether.policy.rule"] = data.rule
        span.end = max(span.end, ev.ts)
        if data.decision is VerdictKind.DENY:
            self._settle(span, ev.ts, "denied")

    def _on_approval_requested(self, ev: Event, data: ApprovalRequested) -> None:
        span = self._tool_span(data.call_id, data.tool, ev.ts, ev.step)
        attrs: dict[str, Any] = {
            "tether.approval.id": data.approval_id,
            "tether.approval.args_hash": data.args_hash,
        }
        if data.again:
            attrs["tether.approval.again"] = True
        span.events.append(SpanEvent("tether.approval.requested", ev.ts, attrs))
        self._settle(span, ev.ts, "awaiting_approval")

    def _on_approval_decided(self, ev: Event, data: ApprovalDecided) -> None:
        span = self.tools.get(data.call_id)
        if span is None:
            return
        when = data.at if data.at is not None else ev.ts
        attrs: dict[str, Any] = {
            "tether.approval.id": data.approval_id,
            "tether.approval.status": data.status.value,
            "tether.approval.by": data.by,
            "tether.approval.at": when,
            "tether.approval.edited": data.edited_args is not None,
        }
        if self.capture and data.reason:
            attrs["tether.approval.reason"] = self._text(data.reason)
        span.events.append(SpanEvent("tether.approval.decided", when, attrs))
        span.attributes["tether.approval.status"] = data.status.value
        span.attributes["tether.approval.by"] = data.by
        rejected = data.status is ApprovalStatus.REJECTED
        self._settle(span, ev.ts, "rejected" if rejected else "approved")

    def _on_tool_finished(self, ev: Event, data: ToolFinished) -> None:
        if data.proposed is not None:  # formats 1-2: a read journaled whole; its span opens
            self._on_tool_proposed(ev._replace(ts=asked_at(ev.ts, data)), data.proposed)
        span = self.tools.get(data.call_id)
        if span is None:
            return
        outcome = "shadow" if data.shadow else ("ok" if data.ok else "error")
        self._settle(span, ev.ts, outcome)
        span.attributes["tether.tool.duration_ms"] = data.duration_ms
        if data.full_result_chars:
            span.attributes["tether.tool.result_chars"] = data.full_result_chars
        if not data.ok:
            detail = self._text(data.content) if self.capture else "the tool failed"
            span.error = ("tool_error", detail)
        if self.capture:
            result = data.result if data.result is not None else data.content
            text = result if isinstance(result, str) else _json(result)
            span.attributes["gen_ai.tool.call.result"] = self._text(text)


def plan_spans(
    run: RunRecord, events: list[Event], *, capture: bool, redactor: Redactor
) -> list[Span]:
    """A run's spans as plain data: the root (the run), then its model calls and tool calls."""
    return _Planner(run, events, capture=capture, redactor=redactor).plan()
