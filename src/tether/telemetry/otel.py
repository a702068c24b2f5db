"""Export a run's journal as OpenTelemetry spans, following the GenAI semantic conventions.

    from tether.telemetry import export_run, otlp_tracer_provider

    provider = otlp_tracer_provider()          # OTLP/HTTP to $OTEL_EXPORTER_OTLP_ENDPOINT
    export_run(store, run_id, tracer_provider=provider)
    provider.force_flush()

One trace per run:

* ``invoke_agent {agent}``: the run, from ``run_started`` to ``run_finished`` (or the last event
  of a run that has not ended). Span events: ``tether.run.resumed``, ``tether.input.requested``,
  ``tether.input.received``, ``tether.escalated``, ``tether.budget.exceeded``,
  ``tether.validation.failed``, ``tether.feedback``.
* ``chat {model}``, a child per model call, ending at its ``model_response`` (or
  ``model_error``) and starting the recorded duration before (older journals: at the
  ``model_request`` event), with the model names, token usage and finish reasons.
* ``execute_tool {tool}``, a child per proposed tool call: from ``tool_proposed`` to the event
  that settled it (``tool_finished``, a denial, a rejection, an escalation); a read the policy
  plainly allowed is one ``tool_finished`` event, and its span starts the call's recorded
  duration before it. Span events:
  ``tether.policy.decision``, ``tether.approval.requested``, ``tether.approval.decided`` (at the
  time of the human's decision), ``tether.tool.started``, ``tether.escalated``. A plain allow
  journaled with the proposal gives the same ``tether.policy.decision`` span event.

Timestamps are the journal's, so a run exported hours later still shows its true timeline (an
approval wait is as long as the human took).

Prompts, responses, tool arguments and results are recorded only when content capture is on
(``capture_content=True``, or ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``), and
then always through a :class:`~tether.telemetry.redaction.Redactor` (``Redactor.from_env()``
unless one is given). The ``opentelemetry`` packages are imported only when a function here is
called: ``pip install 'tether[otel]'``.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tether.journal.events import Event, EventType, asked_at
from tether.journal.store import RunRecord, Store
from tether.telemetry.redaction import Redactor

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import TracerProvider as ApiTracerProvider

__all__ = [
    "CAPTURE_CONTENT_ENV",
    "ENDPOINT_ENV",
    "capture_content_from_env",
    "export_run",
    "maybe_export",
    "otlp_tracer_provider",
]

CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"
TRACES_ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
INSTALL_HINT = "pip install 'tether[otel]'"
SERVICE_NAME = "tether"

log = logging.getLogger("tether.telemetry")

# model spec prefix -> gen_ai.provider.name
_PROVIDERS = {
    "openai": "openai",
    "anthropic": "anthropic",
    "openai_compat": "openai_compat",
    "local": "llama_cpp",
}
_ERROR_STATUSES = frozenset({"failed", "budget_exceeded"})


def capture_content_from_env(environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` turns content capture on."""
    env = os.environ if environ is None else environ
    return env.get(CAPTURE_CONTENT_ENV, "").strip().lower() in ("true", "1", "yes", "on")


def _otel_missing(exc: ImportError) -> ImportError:
    return ImportError(
        f"OpenTelemetry export needs the opentelemetry packages ({exc.name or exc}); "
        f"install them with: {INSTALL_HINT}"
    )


# -- the plan: spans as plain data, built from the journal -------------------------------------


@dataclass(slots=True)
class _SpanEvent:
    name: str
    ts: float
    attributes: dict[str, Any]


@dataclass(slots=True)
class _Span:
    name: str
    kind: str  # "internal" or "client"
    start: float
    end: float
    attributes: dict[str, Any]
    events: list[_SpanEvent] = field(default_factory=list)
    error: tuple[str, str] | None = None  # (error.type, description)


def _split_model(spec: str) -> tuple[str, str]:
    """``"openai:gpt-4o-mini"`` → ``("openai", "gpt-4o-mini")``; a bare name is its own provider."""
    prefix, sep, rest = spec.partition(":")
    if not sep or not rest:
        return spec or "unknown", spec or "unknown"
    return _PROVIDERS.get(prefix, prefix), rest


def _clean(attrs: dict[str, Any]) -> dict[str, Any]:
    """Attributes OpenTelemetry accepts: no ``None``, lists of one primitive type."""
    out: dict[str, Any] = {}
    for key, value in attrs.items():
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            items = [v for v in value if v is not None]
            if not items:
                continue
            if (
                not all(isinstance(v, (str, bool, int, float)) for v in items)
                or len({type(v) for v in items}) > 1
            ):
                items = [str(v) for v in items]
            out[key] = list(items)
        elif isinstance(value, (str, bool, int, float)):
            out[key] = value
        else:
            out[key] = json.dumps(value, default=str, ensure_ascii=False)
    return out


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


def _finish_reason(response: dict[str, Any]) -> str:
    meta = response.get("meta") or {}
    reason = meta.get("finish_reason") or meta.get("stop_reason")
    if reason:
        return str(reason)
    return "tool_calls" if response.get("tool_calls") else "stop"


class _Planner:
    """Folds a run's events into spans."""

    def __init__(
        self, run: RunRecord, events: list[Event], *, capture: bool, redactor: Redactor
    ) -> None:
        self.run = run
        self.events = events
        self.capture = capture
        self.redactor = redactor
        self.chats: list[_Span] = []
        self.open_chat: _Span | None = None
        self.tools: dict[str, _Span] = {}
        self.tool_order: list[_Span] = []
        self.tool_descriptions: dict[str, str] = {}
        self.state: Any = None  # a RunState, folded along to know the messages of each request
        self.system: str | None = None

    # -- helpers --

    def _content(self, value: Any) -> str:
        """Content as a JSON attribute value, redacted."""
        return _json(self.redactor.redact(value))

    def _text(self, text: str) -> str:
        return str(self.redactor.redact_text(text))

    def _fold(self, ev: Event, payload: dict[str, Any]) -> None:
        if self.state is None:
            return
        try:
            self.state.apply(ev, payload)
        except Exception:  # an odd journal: stop reconstructing messages, keep exporting
            self.state = None

    def _tool_span(self, call_id: str, name: str, ts: float, step: int) -> _Span:
        span = self.tools.get(call_id)
        if span is None:
            span = _Span(
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

    def _settle(self, span: _Span, ts: float, outcome: str) -> None:
        span.end = max(span.end, ts)
        span.attributes["tether.tool.outcome"] = outcome

    # -- the fold --

    def plan(self) -> list[_Span]:
        run = self.run
        events = self.events
        first = events[0]
        start = first.payload if first.type == EventType.RUN_STARTED else {}
        agent = start.get("agent") or {}
        for t in agent.get("tools") or ():
            if isinstance(t, dict) and t.get("name"):
                self.tool_descriptions[str(t["name"])] = str(t.get("description") or "")
        if self.capture and first.type == EventType.RUN_STARTED:
            from tether.engine.state import RunState  # lazily: the engine imports telemetry

            self.state = RunState(run_id=run.id)
            self.system = start.get("instructions", (start.get("agent") or {}).get("instructions"))
        model_spec = str(start.get("model") or run.model or "")
        provider, model = _split_model(model_spec)
        root = _Span(
            name=f"invoke_agent {run.agent}",
            kind="internal",
            start=first.ts,
            end=events[-1].ts,
            attributes={
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.agent.name": run.agent,
                "gen_ai.agent.id": start.get("fingerprint") or None,
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
            p = ev.payload
            handler = getattr(self, f"_on_{ev.type}", None)
            if ev.type == EventType.MODEL_RESPONSE:
                usage = (p.get("response") or {}).get("usage") or {}
                input_tokens += int(usage.get("input_tokens") or 0)
                output_tokens += int(usage.get("output_tokens") or 0)
                cost += float((p.get("response") or {}).get("cost_usd") or 0.0)
            elif ev.type == EventType.RUN_FINISHED:
                status, reason, output = str(p.get("status")), p.get("reason"), p.get("output")
                root.end = ev.ts
            if handler is not None:
                handler(ev, p, root)
            self._fold(ev, p)
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
                root.attributes["gen_ai.output.messages"] = self._content(
                    [
                        {
                            "role": "assistant",
                            "parts": [{"type": "text", "content": out_text}],
                            "finish_reason": "stop",
                        }
                    ]
                )
        if self.open_chat is not None:  # a request with no recorded answer (the process stopped)
            self.open_chat.error = ("no_response", "no response was recorded for this request")
        for span in self.tool_order:
            span.attributes.setdefault("tether.tool.outcome", "not_executed")
        return [root, *self.chats, *self.tool_order]

    # -- model calls --

    def _on_model_request(self, ev: Event, p: dict[str, Any], root: _Span) -> None:
        self._open_chat(ev, p, ev.ts)

    def _asked_with(self, ev: Event, p: dict[str, Any]) -> None:
        """A response or error that records its request opens its span, back-dated by the
        call's recorded duration."""
        asked = p.get("request")
        if asked is not None:
            self._open_chat(ev, asked, asked_at(ev.ts, p))

    def _open_chat(self, ev: Event, p: dict[str, Any], start: float) -> None:
        if self.open_chat is not None:
            self.open_chat.end = start
            self.open_chat.error = ("no_response", "no response was recorded for this request")
        provider, model = _split_model(str(p.get("model") or ""))
        span = _Span(
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
                "tether.request.messages": p.get("messages"),
                "tether.request.tools": p.get("tools"),
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

    def _on_model_response(self, ev: Event, p: dict[str, Any], root: _Span) -> None:
        self._asked_with(ev, p)
        span = self.open_chat
        if span is None:
            return
        self.open_chat = None
        span.end = ev.ts
        response = p.get("response") or {}
        meta = response.get("meta") or {}
        usage = response.get("usage") or {}
        response_model = str(meta.get("served_model") or "")  # as the provider's API said
        if not response_model:
            provider, response_model = _split_model(str(response.get("model") or ""))
            if ":" in str(response.get("model")):  # a fallback or router may switch provider
                span.attributes["gen_ai.provider.name"] = provider
                span.attributes["gen_ai.system"] = provider
        span.attributes.update(
            {
                "gen_ai.response.model": response_model,
                "gen_ai.response.id": meta.get("id"),
                "gen_ai.response.finish_reasons": [_finish_reason(response)],
                "gen_ai.usage.input_tokens": int(usage.get("input_tokens") or 0),
                "gen_ai.usage.output_tokens": int(usage.get("output_tokens") or 0),
                "gen_ai.usage.cache_read.input_tokens": meta.get("cache_read_input_tokens"),
                "gen_ai.usage.cache_creation.input_tokens": meta.get("cache_creation_input_tokens"),
                "tether.cost_usd": response.get("cost_usd"),
                "tether.model.duration_ms": p.get("duration_ms"),
                "tether.model.cache": meta.get("cache"),
                "tether.model.fallback_from": meta.get("fallback_from"),
                "tether.model.fault": meta.get("fault"),
            }
        )
        if self.capture:
            parts: list[dict[str, Any]] = []
            if response.get("text"):
                parts.append({"type": "text", "content": response["text"]})
            for c in response.get("tool_calls") or ():
                parts.append(
                    {
                        "type": "tool_call",
                        "id": c.get("id"),
                        "name": c.get("name"),
                        "arguments": _arguments(c.get("arguments")),
                    }
                )
            span.attributes["gen_ai.output.messages"] = self._content(
                [{"role": "assistant", "parts": parts, "finish_reason": _finish_reason(response)}]
            )

    def _on_model_error(self, ev: Event, p: dict[str, Any], root: _Span) -> None:
        self._asked_with(ev, p)
        span = self.open_chat
        if span is None:
            return
        self.open_chat = None
        span.end = ev.ts
        status = p.get("status")
        span.attributes["tether.model.retryable"] = bool(p.get("retryable"))
        span.error = (str(status) if status else "model_error", self._text(str(p.get("error"))))

    # -- tool calls --

    def _on_tool_proposed(self, ev: Event, p: dict[str, Any], root: _Span) -> None:
        span = self._tool_span(str(p["call_id"]), str(p.get("tool")), ev.ts, ev.step)
        span.attributes["tether.tool.effect"] = p.get("effect")
        if self.capture:
            span.attributes["gen_ai.tool.call.arguments"] = self._content(p.get("args"))
        if "decision" in p:  # a plain allow, journaled with the proposal
            self._on_policy_decision(ev, p, root)

    def _on_validation_failed(self, ev: Event, p: dict[str, Any], root: _Span) -> None:
        if not p.get("call_id"):  # the final output was rejected; the model tries again
            attrs: dict[str, Any] = {"tether.validation.kind": p.get("kind") or "output"}
            if self.capture:
                attrs["tether.validation.error"] = self._text(str(p.get("error")))
            root.events.append(_SpanEvent("tether.validation.failed", ev.ts, attrs))
            return
        span = self._tool_span(str(p["call_id"]), str(p.get("tool") or "unknown"), ev.ts, ev.step)
        self._settle(span, ev.ts, "invalid")
        detail = self._text(str(p.get("error"))) if self.capture else "invalid tool call"
        span.error = ("invalid_call", detail)

    def _on_policy_decision(self, ev: Event, p: dict[str, Any], root: _Span) -> None:
        span = self._tool_span(str(p["call_id"]), str(p.get("tool")), ev.ts, ev.step)
        decision = str(p.get("decision"))
        attrs: dict[str, Any] = {
            "tether.policy.decision": decision,
            "tether.policy.rule": p.get("rule"),
            "tether.policy.reason": None
            if p.get("reason") is None
            else self._text(str(p["reason"])),
        }
        if p.get("recheck"):
            attrs["tether.policy.recheck"] = True
            if self.capture and p.get("args") is not None:
                span.attributes["gen_ai.tool.call.arguments"] = self._content(p["args"])
        span.events.append(_SpanEvent("tether.policy.decision", ev.ts, attrs))
        span.attributes["tether.policy.decision"] = decision
        span.attributes["tether.policy.rule"] = p.get("rule")
        span.end = max(span.end, ev.ts)
        if decision == "deny":
            self._settle(span, ev.ts, "denied")

    def _on_approval_requested(self, ev: Event, p: dict[str, Any], root: _Span) -> None:
        span = self._tool_span(str(p["call_id"]), str(p.get("tool")), ev.ts, ev.step)
        attrs: dict[str, Any] = {
            "tether.approval.id": p.get("approval_id"),
            "tether.approval.args_hash": p.get("args_hash"),
        }
        if p.get("again"):
            attrs["tether.approval.again"] = True
        span.events.append(_SpanEvent("tether.approval.requested", ev.ts, attrs))
        self._settle(span, ev.ts, "awaiting_approval")

    def _on_approval_decided(self, ev: Event, p: dict[str, Any], root: _Span) -> None:
        span = self.tools.get(str(p["call_id"]))
        if span is None:
            return
        at = p.get("at")
        when = float(at) if isinstance(at, (int, float)) else ev.ts
        status = str(p.get("status"))
        attrs: dict[str, Any] = {
            "tether.approval.id": p.get("approval_id"),
            "tether.approval.status": status,
            "tether.approval.by": p.get("by"),
            "tether.approval.at": when,
            "tether.approval.edited": p.get("edited_args") is not None,
        }
        if self.capture and p.get("reason"):
            attrs["tether.approval.reason"] = self._text(str(p["reason"]))
        span.events.append(_SpanEvent("tether.approval.decided", when, attrs))
        span.attributes["tether.approval.status"] = status
        span.attributes["tether.approval.by"] = p.get("by")
        self._settle(span, ev.ts, "rejected" if status == "rejected" else "approved")

    def _on_tool_started(self, ev: Event, p: dict[str, Any], root: _Span) -> None:
        span = self.tools.get(str(p["call_id"]))
        if span is not None:
            span.events.append(_SpanEvent("tether.tool.started", ev.ts, {}))
            span.end = max(span.end, ev.ts)

    def _on_tool_finished(self, ev: Event, p: dict[str, Any], root: _Span) -> None:
        if "args" in p:  # a read journaled whole: its span opens when the call began
            self._on_tool_proposed(ev._replace(ts=asked_at(ev.ts, p)), p, root)
        span = self.tools.get(str(p["call_id"]))
        if span is None:
            return
        ok = bool(p.get("ok"))
        outcome = "shadow" if p.get("shadow") else ("ok" if ok else "error")
        self._settle(span, ev.ts, outcome)
        span.attributes["tether.tool.duration_ms"] = p.get("duration_ms")
        if p.get("full_result_chars"):
            span.attributes["tether.tool.result_chars"] = p["full_result_chars"]
        if not ok:
            detail = self._text(str(p.get("content"))) if self.capture else "the tool failed"
            span.error = ("tool_error", detail)
        if self.capture:
            result = p["result"] if "result" in p else p.get("content")
            text = result if isinstance(result, str) else _json(result)
            span.attributes["gen_ai.tool.call.result"] = self._text(text)

    # -- the run --

    def _on_escalated(self, ev: Event, p: dict[str, Any], root: _Span) -> None:
        attrs = {"tether.escalation.reason": self._text(str(p.get("reason")))}
        root.events.append(_SpanEvent("tether.escalated", ev.ts, attrs))
        call_id = p.get("call_id")
        span = self.tools.get(str(call_id)) if call_id else None
        if span is not None:
            span.events.append(_SpanEvent("tether.escalated", ev.ts, attrs))
            self._settle(span, ev.ts, "escalated")

    def _on_run_resumed(self, ev: Event, p: dict[str, Any], root: _Span) -> None:
        root.events.append(
            _SpanEvent("tether.run.resumed", ev.ts, {"tether.run.same_agent": p.get("same_agent")})
        )

    def _on_input_requested(self, ev: Event, p: dict[str, Any], root: _Span) -> None:
        attrs: dict[str, Any] = {"tether.input.kind": p.get("kind")}
        if self.capture:
            attrs["tether.input.question"] = self._text(str(p.get("question")))
        root.events.append(_SpanEvent("tether.input.requested", ev.ts, attrs))

    def _on_input_received(self, ev: Event, p: dict[str, Any], root: _Span) -> None:
        attrs: dict[str, Any] = {"tether.input.kind": p.get("kind"), "tether.input.by": p.get("by")}
        if self.capture and p.get("answer"):
            attrs["tether.input.answer"] = self._text(str(p["answer"]))
        root.events.append(_SpanEvent("tether.input.received", ev.ts, attrs))

    def _on_feedback(self, ev: Event, p: dict[str, Any], root: _Span) -> None:
        root.events.append(
            _SpanEvent("tether.feedback", ev.ts, {"tether.feedback.kind": p.get("kind")})
        )

    def _on_budget(self, ev: Event, p: dict[str, Any], root: _Span) -> None:
        if p.get("exceeded"):
            attrs = {"tether.budget.reason": p.get("reason")}
            root.events.append(_SpanEvent("tether.budget.exceeded", ev.ts, attrs))


# -- emitting -----------------------------------------------------------------------------------


def _ns(ts: float) -> int:
    return round(ts * 1e9)


def export_run(
    store: Store,
    run_id: str,
    *,
    tracer_provider: ApiTracerProvider | None = None,
    capture_content: bool | None = None,
    redactor: Redactor | None = None,
) -> int:
    """Emit the spans of one run (see the module docstring); return how many were emitted.

    Args:
        store: the store holding the run.
        run_id: the run's id (or a unique prefix of it).
        tracer_provider: where the spans go; the global provider when ``None``.
        capture_content: record prompts, responses, tool arguments and results (redacted);
            ``None`` reads ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``.
        redactor: masks captured content and free text; ``Redactor.from_env()`` when ``None``.

    The spans are handed to the provider's processors; call ``force_flush()`` on the provider to
    wait until they are sent. Raises ImportError (naming ``pip install 'tether[otel]'``) when the
    OpenTelemetry API is not installed, and NotFound for an unknown run.
    """
    try:
        from opentelemetry import context as otel_context
        from opentelemetry import trace
        from opentelemetry.trace import SpanKind, Status, StatusCode
    except ImportError as exc:
        raise _otel_missing(exc) from exc
    run = store.get_run(run_id)
    events = store.events(run.id)
    if not events:
        return 0
    capture = capture_content_from_env() if capture_content is None else capture_content
    planner = _Planner(run, events, capture=capture, redactor=redactor or Redactor.from_env())
    spans = planner.plan()
    provider = tracer_provider or trace.get_tracer_provider()
    from tether import __version__

    tracer = provider.get_tracer("tether", __version__)
    kinds = {"internal": SpanKind.INTERNAL, "client": SpanKind.CLIENT}

    def start(plan: _Span, parent: Any) -> Any:
        span = tracer.start_span(
            plan.name,
            context=parent,
            kind=kinds[plan.kind],
            attributes=_clean(plan.attributes),
            start_time=_ns(plan.start),
        )
        for e in plan.events:
            span.add_event(e.name, _clean(e.attributes), timestamp=_ns(e.ts))
        if plan.error is not None:
            span.set_attribute("error.type", plan.error[0])
            span.set_status(Status(StatusCode.ERROR, plan.error[1]))
        return span

    root_plan, children = spans[0], spans[1:]
    root = start(root_plan, otel_context.Context())  # a new trace, whatever span is current
    parent = trace.set_span_in_context(root)
    for plan in children:
        start(plan, parent).end(end_time=_ns(max(plan.end, plan.start)))
    root.end(end_time=_ns(max(root_plan.end, root_plan.start)))
    return len(spans)


def otlp_tracer_provider(endpoint: str | None = None) -> TracerProvider:
    """A TracerProvider sending spans over OTLP/HTTP (protobuf) with a batch processor.

    ``endpoint`` is the collector's base URL (``http://host:4318``; ``/v1/traces`` is added) or
    the full traces URL. Without it, the exporter reads ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` /
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` (default ``http://localhost:4318``) and the other standard
    ``OTEL_EXPORTER_OTLP_*`` variables. The resource's ``service.name`` is ``tether`` unless
    ``OTEL_SERVICE_NAME`` says otherwise.
    """
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise _otel_missing(exc) from exc
    from tether import __version__

    url = None
    if endpoint:
        url = (
            endpoint
            if endpoint.rstrip("/").endswith("/v1/traces")
            else (endpoint.rstrip("/") + "/v1/traces")
        )
    resource = Resource.create(
        {
            "service.name": os.environ.get("OTEL_SERVICE_NAME") or SERVICE_NAME,
            "service.version": __version__,
        }
    )
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
    return provider


_shared: dict[str, Any] = {}
_shared_lock = threading.Lock()
_warned: set[str] = set()


def _shared_provider(key: str) -> Any:
    with _shared_lock:
        provider = _shared.get(key)
        if provider is None:
            provider = otlp_tracer_provider()
            _shared[key] = provider
        return provider


def maybe_export(store: Store, run_id: str, *, flush: bool = False) -> int:
    """Export a run over OTLP if ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or the traces-specific
    variable) is set; otherwise do nothing. Returns the number of spans emitted.

    Meant to be called by the runtime when a run ends. It never raises: a missing package or a
    failed export is logged as a warning (on the ``tether.telemetry`` logger) and the run goes
    on. Spans are sent in the background; ``flush=True`` waits (up to 5 s) until they are.
    """
    endpoint = os.environ.get(TRACES_ENDPOINT_ENV) or os.environ.get(ENDPOINT_ENV)
    if not endpoint:
        return 0
    try:
        provider = _shared_provider(endpoint)
        count = export_run(store, run_id, tracer_provider=provider)
        if flush:
            provider.force_flush(timeout_millis=5000)
        return count
    except ImportError as exc:
        if "import" not in _warned:
            _warned.add("import")
            log.warning("%s is set but spans cannot be exported: %s", ENDPOINT_ENV, exc)
        return 0
    except Exception as exc:
        log.warning("could not export run %s to %s: %s", run_id, endpoint, exc)
        return 0
