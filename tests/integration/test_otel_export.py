"""OpenTelemetry export, end to end: a real run, the OTLP/HTTP exporter, a real receiver.

The receiver (tests/otlp_receiver.py) is an HTTP server on loopback that decodes the protobuf
export requests, so these tests check exactly what a collector would get.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan

from tests.otlp_receiver import OTLPReceiver, ReceivedSpan
from tether import Agent, ScriptedModel, ToolError, call, tool
from tether.engine import Runtime
from tether.errors import ModelError
from tether.journal import Store
from tether.journal.events import Event, proposal_of
from tether.policy import Decision, Proposal, rule
from tether.telemetry import Redactor, export_run, maybe_export, otel, otlp_tracer_provider

API_KEY = "sk-proj-Zy8xW7vU6tS5rQ4pO3nM2lK1jI0hG9fE8dC7bA6_Zx5Cv4Bn3Mm2"
EMAIL = "amelia.ito8974@example.com"
INPUT = "Please refund order #W2378156, the bottle leaks. I'm amelia.ito8974@example.com"

CONTENT_KEYS = {
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "gen_ai.system_instructions",
    "gen_ai.tool.call.arguments",
    "gen_ai.tool.call.result",
}


@tool
def get_order(order_id: str) -> dict[str, Any]:
    """Look up an order."""
    return {
        "order_id": order_id,
        "status": "delivered",
        "total": 30.58,
        "customer_email": EMAIL,
        "payment_gateway": {"merchant": "acme", "api_key_hint": f"key {API_KEY}"},
    }


@tool(effect="irreversible")
def refund(order_id: str, amount: float) -> str:
    """Refund an order."""
    return f"refunded {amount:.2f} on {order_id}"


@tool
def flaky(order_id: str) -> str:
    """A tool that fails."""
    raise ToolError(f"the warehouse API timed out for {order_id}")


@rule("refund-cap", tools=["refund"])
def refund_cap(p: Proposal) -> Decision | None:
    if p.args["amount"] > 50:
        return Decision.deny("refunds above 50 need a supervisor")
    return None


def make_agent() -> Agent:
    return Agent(
        name="support",
        instructions="You are a careful support agent.",
        tools=[get_order, refund, flaky],
        policy=[refund_cap],
        version="3",
    )


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[OTLPReceiver]:
    for name in ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SERVICE_NAME",
                 "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "TETHER_REDACT",
                 "TETHER_REDACT_PATTERNS", "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    with OTLPReceiver() as r:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", r.endpoint)
        yield r


async def support_run(store: Store) -> tuple[str, Runtime]:
    """Look up, then two refunds in one turn: 20 (approved by alice) and 80 (denied by a rule)."""
    script: list[Any] = [
        call("get_order", order_id="#W2378156"),
        [call("refund", order_id="#W2378156", amount=20), call("refund", order_id="#W2378156",
                                                                 amount=80)],
        "I refunded 20.00; a larger refund needs a supervisor.",
    ]  # fmt: skip
    runtime = Runtime(store, model=ScriptedModel(script))
    first = await runtime.run(make_agent(), INPUT)
    assert first.status == "waiting_approval"
    approval = store.list_approvals()[0]
    runtime.approve(approval.id, by="alice", reason="customer is right")
    done = await runtime.resume(first.run_id, make_agent())
    assert done.status == "succeeded", done.reason
    return done.run_id, runtime


def export(store: Store, run_id: str, receiver: OTLPReceiver, **kwargs: Any) -> list[ReceivedSpan]:
    receiver.clear()
    provider = otlp_tracer_provider()
    try:
        count = export_run(store, run_id, tracer_provider=provider, **kwargs)
        assert provider.force_flush(10_000)
    finally:
        provider.shutdown()
    spans = receiver.wait_for_spans(count)
    assert len(spans) == count
    return spans


def ns(ts: float) -> int:
    return round(ts * 1e9)


def close(a: int, b: int) -> bool:
    return abs(a - b) <= 1_000  # within a microsecond


def by_type(events: list[Event], type_: str) -> list[Event]:
    return [e for e in events if e.type == type_]


def everything_said(spans: list[ReceivedSpan]) -> str:
    """Every attribute and event value of every span, as one text."""
    parts: list[Any] = []
    for s in spans:
        parts.append(s.attributes)
        parts.append([e[2] for e in s.events])
        parts.append(s.status_message)
    return json.dumps(parts, default=str)


# -- the span tree -----------------------------------------------------------------------------


async def test_span_tree_attributes_and_timeline(
    sqlite_store: Store, receiver: OTLPReceiver
) -> None:
    run_id, _ = await support_run(sqlite_store)
    events = sqlite_store.events(run_id)
    record = sqlite_store.get_run(run_id)
    spans = export(sqlite_store, run_id, receiver)

    roots = [s for s in spans if not s.parent_span_id]
    assert len(roots) == 1
    root = roots[0]
    assert root.name == "invoke_agent support"
    assert root.kind == PbSpan.SPAN_KIND_INTERNAL
    children = [s for s in spans if s is not root]
    assert {s.parent_span_id for s in children} == {root.span_id}
    assert {s.trace_id for s in spans} == {root.trace_id}
    assert root.resource["service.name"] == "tether"
    assert root.scope == "tether"

    a = root.attributes
    assert a["gen_ai.operation.name"] == "invoke_agent"
    assert a["gen_ai.agent.name"] == "support" and a["gen_ai.agent.version"] == "3"
    assert a["gen_ai.agent.id"] == events[0].payload["fingerprint"]
    assert a["gen_ai.conversation.id"] == run_id
    assert a["gen_ai.provider.name"] == a["gen_ai.system"] == "scripted"
    assert a["gen_ai.usage.input_tokens"] == record.input_tokens > 0
    assert a["gen_ai.usage.output_tokens"] == record.output_tokens > 0
    assert a["tether.run.status"] == "succeeded" and a["tether.run.steps"] == 3
    assert close(root.start_ns, ns(events[0].ts)) and close(root.end_ns, ns(events[-1].ts))
    assert [e[0] for e in root.events] == ["tether.run.resumed"]
    assert not root.is_error

    # one chat span per model call, tokens as journaled
    chats = sorted((s for s in spans if s.name.startswith("chat ")), key=lambda s: s.start_ns)
    responses = by_type(events, "model_response")
    assert len(chats) == len(responses) == 3
    for span, resp in zip(chats, responses, strict=True):
        usage = resp.payload["response"]["usage"]
        asked = resp.payload["request"]  # the request is journaled with its response
        assert span.name == "chat scripted" and span.kind == PbSpan.SPAN_KIND_CLIENT
        assert span.attributes["gen_ai.operation.name"] == "chat"
        assert span.attributes["gen_ai.request.model"] == "scripted"
        assert span.attributes["gen_ai.response.model"] == "scripted"
        assert span.attributes["gen_ai.usage.input_tokens"] == usage["input_tokens"]
        assert span.attributes["gen_ai.usage.output_tokens"] == usage["output_tokens"]
        assert span.attributes["gen_ai.conversation.id"] == run_id
        assert span.attributes["tether.step"] == resp.step
        assert span.attributes["tether.request.messages"] == asked["messages"]
        sent = resp.ts - resp.payload["duration_ms"] / 1000  # back-dated by the call's duration
        assert close(span.start_ns, ns(sent)) and close(span.end_ns, ns(resp.ts))
    assert [c.attributes["gen_ai.response.finish_reasons"] for c in chats] == [
        ["tool_calls"],
        ["tool_calls"],
        ["stop"],
    ]
    assert sum(c.attributes["gen_ai.usage.input_tokens"] for c in chats) == record.input_tokens

    # one execute_tool span per proposed call
    tools = {s.attributes["gen_ai.tool.call.id"]: s for s in spans
             if s.name.startswith("execute_tool ")}  # fmt: skip
    proposed = [e for e in events if proposal_of(e.data) is not None]
    assert [e.type for e in proposed] == ["tool_proposed", "tool_proposed", "tool_proposed"]
    assert set(tools) == {e.payload["call_id"] for e in proposed}
    lookup, approved, denied = (tools[e.payload["call_id"]] for e in proposed)
    for span, ev in zip((lookup, approved, denied), proposed, strict=True):
        assert span.name == f"execute_tool {ev.payload['tool']}"
        assert span.attributes["gen_ai.operation.name"] == "execute_tool"
        assert span.attributes["gen_ai.tool.name"] == ev.payload["tool"]
        assert span.attributes["gen_ai.tool.type"] == "function"
        assert span.attributes["tether.tool.effect"] == ev.payload["effect"]
        assert close(span.start_ns, ns(ev.ts))
    assert lookup.attributes["gen_ai.tool.description"] == "Look up an order."

    assert lookup.attributes["tether.tool.outcome"] == "ok" and not lookup.is_error
    assert lookup.event("tether.policy.decision") == [{
        "tether.policy.decision": "allow", "tether.policy.rule": "effect-default",
        "tether.policy.reason": "read tool",
    }]  # fmt: skip
    finished = {e.payload["call_id"]: e for e in by_type(events, "tool_finished")}
    assert close(lookup.end_ns, ns(finished[lookup.attributes["gen_ai.tool.call.id"]].ts))

    # the irreversible refund: approval requested, decided by alice, then executed
    assert [e[0] for e in approved.events] == [
        "tether.policy.decision", "tether.approval.requested", "tether.approval.decided",
        "tether.tool.started",
    ]  # fmt: skip
    assert approved.event("tether.policy.decision")[0]["tether.policy.decision"] == "approve"
    decided_ev = by_type(events, "approval_decided")[0]
    requested_ev = by_type(events, "approval_requested")[0]
    assert (
        approved.event("tether.approval.requested")[0]["tether.approval.id"]
        == (requested_ev.payload["approval_id"])
    )
    decided = approved.event("tether.approval.decided")[0]
    assert decided["tether.approval.status"] == "approved"
    assert decided["tether.approval.by"] == "alice"
    assert decided["tether.approval.at"] == decided_ev.payload["at"]
    decided_time = next(t for n, t, _ in approved.events if n == "tether.approval.decided")
    assert close(decided_time, ns(decided_ev.payload["at"]))  # when the human decided
    assert approved.attributes["tether.tool.outcome"] == "ok"
    assert approved.end_ns >= ns(decided_ev.ts) - 1_000  # the wait for a human is in the span

    # the refund above the cap: denied by the rule, never executed
    assert denied.attributes["tether.tool.outcome"] == "denied" and not denied.is_error
    assert denied.event("tether.policy.decision") == [{
        "tether.policy.decision": "deny", "tether.policy.rule": "refund-cap",
        "tether.policy.reason": "refunds above 50 need a supervisor",
    }]  # fmt: skip
    assert not denied.event("tether.tool.started")


async def test_content_is_absent_by_default(sqlite_store: Store, receiver: OTLPReceiver) -> None:
    run_id, _ = await support_run(sqlite_store)
    spans = export(sqlite_store, run_id, receiver)
    for span in spans:
        assert not CONTENT_KEYS & set(span.attributes), span.name
    said = everything_said(spans)
    for private in (API_KEY, EMAIL, "bottle leaks", "careful support agent", "#W2378156"):
        assert private not in said


async def test_content_capture_from_env_is_redacted(
    sqlite_store: Store, receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id, _ = await support_run(sqlite_store)
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    monkeypatch.setenv("TETHER_REDACT", "secrets,emails")
    spans = export(sqlite_store, run_id, receiver)
    said = everything_said(spans)
    assert API_KEY not in said and EMAIL not in said
    assert "[REDACTED:openai_key]" in said and "[REDACTED:email]" in said

    root = next(s for s in spans if not s.parent_span_id)
    assert json.loads(root.attributes["gen_ai.input.messages"]) == [
        {"role": "user", "parts": [{"type": "text", "content": INPUT.replace(EMAIL,
                                                                               "[REDACTED:email]")}]}
    ]  # fmt: skip
    assert json.loads(root.attributes["gen_ai.system_instructions"]) == [
        {"type": "text", "content": "You are a careful support agent."}
    ]
    output = json.loads(root.attributes["gen_ai.output.messages"])
    assert output[0]["parts"][0]["content"].startswith("I refunded 20.00")

    chats = sorted((s for s in spans if s.name.startswith("chat ")), key=lambda s: s.start_ns)
    first_in = json.loads(chats[0].attributes["gen_ai.input.messages"])
    assert [m["role"] for m in first_in] == ["user"]
    first_out = json.loads(chats[0].attributes["gen_ai.output.messages"])
    assert first_out == [{
        "role": "assistant", "finish_reason": "tool_calls",
        "parts": [{"type": "tool_call", "id": first_out[0]["parts"][0]["id"], "name": "get_order",
                   "arguments": {"order_id": "#W2378156"}}],
    }]  # fmt: skip
    last_in = json.loads(chats[-1].attributes["gen_ai.input.messages"])
    assert [m["role"] for m in last_in] == ["user", "assistant", "tool", "assistant", "tool",
                                            "tool"]  # fmt: skip
    tool_reply = last_in[2]["parts"][0]
    assert tool_reply["type"] == "tool_call_response"
    assert "[REDACTED:openai_key]" in tool_reply["response"]

    tools = {s.attributes["gen_ai.tool.call.id"]: s for s in spans
             if s.name.startswith("execute_tool ")}  # fmt: skip
    lookup = next(s for s in tools.values() if s.name == "execute_tool get_order")
    assert json.loads(lookup.attributes["gen_ai.tool.call.arguments"]) == {"order_id": "#W2378156"}
    result = json.loads(lookup.attributes["gen_ai.tool.call.result"])
    assert result["customer_email"] == "[REDACTED:email]"
    assert result["payment_gateway"]["api_key_hint"] == "key [REDACTED:openai_key]"
    refunds = [s for s in tools.values() if s.name == "execute_tool refund"]
    assert sorted(json.loads(s.attributes["gen_ai.tool.call.arguments"])["amount"]
                  for s in refunds) == [20.0, 80.0]  # fmt: skip
    executed = next(s for s in refunds if "gen_ai.tool.call.result" in s.attributes)
    assert executed.attributes["gen_ai.tool.call.result"] == "refunded 20.00 on #W2378156"
    decided = executed.event("tether.approval.decided")[0]
    assert decided["tether.approval.reason"] == "customer is right"


async def test_explicit_capture_and_redactor_override_the_env(
    sqlite_store: Store, receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id, _ = await support_run(sqlite_store)
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    spans = export(sqlite_store, run_id, receiver, capture_content=False)
    assert not any(CONTENT_KEYS & set(s.attributes) for s in spans)
    monkeypatch.delenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT")
    spans = export(sqlite_store, run_id, receiver, capture_content=True,
                   redactor=Redactor({"order": r"#W\d{7}"}))  # fmt: skip
    said = everything_said(spans)
    assert "#W2378156" not in said and "[REDACTED:order]" in said
    assert API_KEY not in said  # secrets stay on
    assert EMAIL in said  # emails were not asked for


# -- unfinished and failing runs -----------------------------------------------------------


async def test_a_run_waiting_for_approval(sqlite_store: Store, receiver: OTLPReceiver) -> None:
    runtime = Runtime(sqlite_store, model=ScriptedModel([call("refund", order_id="#W1", amount=5)]))
    result = await runtime.run(make_agent(), "refund #W1")
    assert result.status == "waiting_approval"
    events = sqlite_store.events(result.run_id)
    spans = export(sqlite_store, result.run_id, receiver)
    root = next(s for s in spans if not s.parent_span_id)
    assert root.attributes["tether.run.status"] == "waiting_approval"
    assert close(root.end_ns, ns(events[-1].ts))
    tool_span = next(s for s in spans if s.name == "execute_tool refund")
    assert tool_span.attributes["tether.tool.outcome"] == "awaiting_approval"
    assert [e[0] for e in tool_span.events] == ["tether.policy.decision",
                                                "tether.approval.requested"]  # fmt: skip


async def test_failures_are_error_spans(sqlite_store: Store, receiver: OTLPReceiver) -> None:
    script: list[Any] = [
        call("flaky", order_id="#W1"),
        ModelError("upstream overloaded", retryable=True, status=529),
    ]
    runtime = Runtime(sqlite_store, model=ScriptedModel(script))
    result = await runtime.run(make_agent(), "check #W1")
    assert result.status == "failed"
    spans = export(sqlite_store, result.run_id, receiver)
    root = next(s for s in spans if not s.parent_span_id)
    assert root.is_error and root.attributes["error.type"] == "failed"
    assert "upstream overloaded" in root.status_message
    tool_span = next(s for s in spans if s.name == "execute_tool flaky")
    assert tool_span.is_error and tool_span.attributes["error.type"] == "tool_error"
    assert tool_span.attributes["tether.tool.outcome"] == "error"
    assert "warehouse" not in tool_span.status_message  # tool output is content: not captured
    chats = sorted((s for s in spans if s.name.startswith("chat ")), key=lambda s: s.start_ns)
    assert not chats[0].is_error
    assert chats[1].is_error and chats[1].attributes["error.type"] == "529"
    assert chats[1].attributes["tether.model.retryable"] is True


# -- maybe_export ------------------------------------------------------------------------------


async def test_maybe_export_needs_the_endpoint(
    sqlite_store: Store, receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id, _ = await support_run(sqlite_store)
    # the runtime itself exported the run when it finished (the endpoint is set)
    exported_by_runtime = receiver.requests
    assert exported_by_runtime >= 1
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT")
    assert maybe_export(sqlite_store, run_id, flush=True) == 0
    assert receiver.requests == exported_by_runtime
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
    already = len(receiver.wait_for_spans(7))
    count = maybe_export(sqlite_store, run_id, flush=True)
    assert count == 7
    spans = receiver.wait_for_spans(already + count)[already:]
    assert sorted(s.name for s in spans) == sorted(
        ["invoke_agent support", *["chat scripted"] * 3, "execute_tool get_order",
         *["execute_tool refund"] * 2]
    )  # fmt: skip


async def test_maybe_export_never_raises(
    sqlite_store: Store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    assert maybe_export(sqlite_store, "no-such-run") == 0
    assert "could not export run no-such-run" in caplog.text
    assert os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://127.0.0.1:9"


async def test_without_opentelemetry_installed(
    sqlite_store: Store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    run_id, _ = await support_run(sqlite_store)
    for module in ("opentelemetry", "opentelemetry.sdk", "opentelemetry.sdk.trace",
                   "opentelemetry.exporter.otlp.proto.http.trace_exporter"):  # fmt: skip
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ImportError, match=r"pip install 'tether\[otel\]'"):
        export_run(sqlite_store, run_id)
    with pytest.raises(ImportError, match=r"pip install 'tether\[otel\]'"):
        otlp_tracer_provider()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9/never-used")
    monkeypatch.setattr(otel, "_warned", set())  # the warning is given once per process
    assert maybe_export(sqlite_store, run_id) == 0  # a warning, not a failed run
    assert "tether[otel]" in caplog.text
