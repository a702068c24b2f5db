"""AnthropicModel against recorded Messages API responses, at the HTTP level."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tether.errors import ModelError, ModelTimeout
from tether.messages import Message, ModelRequest, ToolCall

pytest.importorskip("anthropic")
httpx2 = pytest.importorskip("httpx2")

from tether.models.anthropic import (  # noqa: E402
    AnthropicModel,
    messages_to_anthropic,
    response_from_anthropic,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "anthropic"

ORDER_TOOL = {
    "name": "get_order_details",
    "description": "Get the status and details of an order.",
    "parameters": {
        "type": "object",
        "properties": {"order_id": {"type": "string"}},
        "required": ["order_id"],
    },
}


def fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return data


class Recorder:
    """A MockTransport handler that replays fixtures in order and keeps the requests."""

    def __init__(self, *names: str) -> None:
        self.names = list(names)
        self.requests: list[Any] = []

    def __call__(self, request: Any) -> Any:
        self.requests.append(request)
        data = fixture(self.names.pop(0))
        return httpx2.Response(data["status"], headers=data["headers"], json=data["body"])

    def body(self, index: int = -1) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.requests[index].content)
        return result


def make_model(handler: Any, **kwargs: Any) -> AnthropicModel:
    http_client = httpx2.AsyncClient(transport=httpx2.MockTransport(handler))
    return AnthropicModel(
        "claude-sonnet-4-6", api_key="sk-ant-test", http_client=http_client, **kwargs
    )


def conversation() -> list[Message]:
    return [
        Message("system", "You are a retail support agent."),
        Message("user", "What is the status of order #W2378156?"),
    ]


async def test_tool_use_response_and_request_shape() -> None:
    recorder = Recorder("tool_use")
    model = make_model(recorder)
    response = await model.request(
        ModelRequest(conversation(), tools=[ORDER_TOOL], params={"temperature": 0})
    )

    assert model.name == "anthropic:claude-sonnet-4-6"
    assert response.text == "I'll look up the details of that order for you."
    assert response.tool_calls == [
        ToolCall("toolu_01A09q90qw90lq917835lq9", "get_order_details", {"order_id": "#W2378156"})
    ]
    assert response.usage.input_tokens == 472
    assert response.usage.output_tokens == 71
    assert response.model == "anthropic:claude-sonnet-4-6"
    assert response.meta["stop_reason"] == "tool_use"
    assert response.meta["served_model"] == "claude-sonnet-4-6"

    sent = recorder.requests[0]
    assert sent.url.path == "/v1/messages"
    auth = sent.headers.get("x-api-key") or sent.headers.get("authorization", "")
    assert auth.endswith("sk-ant-test")
    assert sent.headers["x-stainless-retry-count"] == "0"
    body = recorder.body()
    assert body["model"] == "claude-sonnet-4-6"
    assert body["system"] == "You are a retail support agent."
    assert body["max_tokens"] == 4096
    assert body["temperature"] == 0
    assert body["messages"] == [
        {
            "role": "user",
            "content": [{"type": "text", "text": "What is the status of order #W2378156?"}],
        }
    ]
    assert body["tools"] == [
        {
            "name": "get_order_details",
            "description": "Get the status and details of an order.",
            "input_schema": ORDER_TOOL["parameters"],
        }
    ]


async def test_tool_result_round_trip_and_text_usage() -> None:
    recorder = Recorder("tool_use", "text")
    model = make_model(recorder)
    messages = conversation()
    first = await model.request(ModelRequest(messages, tools=[ORDER_TOOL]))
    messages.append(first.as_message())
    messages.append(
        Message(
            "tool",
            '{"status": "cancelled", "refund": 1293.48}',
            tool_call_id=first.tool_calls[0].id,
        )
    )
    second = await model.request(ModelRequest(messages, tools=[ORDER_TOOL]))

    assert second.tool_calls == []
    assert second.text.startswith("Order #W2378156 has been cancelled.")
    assert (second.usage.input_tokens, second.usage.output_tokens) == (2095, 503)
    assert second.meta["stop_reason"] == "end_turn"

    turns = recorder.body()["messages"]
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    assert turns[1]["content"] == [
        {"type": "text", "text": "I'll look up the details of that order for you."},
        {
            "type": "tool_use",
            "id": "toolu_01A09q90qw90lq917835lq9",
            "name": "get_order_details",
            "input": {"order_id": "#W2378156"},
        },
    ]
    assert turns[2]["content"] == [
        {
            "type": "tool_result",
            "tool_use_id": "toolu_01A09q90qw90lq917835lq9",
            "content": '{"status": "cancelled", "refund": 1293.48}',
        }
    ]


async def test_parallel_tool_use_and_cache_usage() -> None:
    model = make_model(Recorder("parallel_tool_use"))
    response = await model.request(ModelRequest(conversation(), tools=[ORDER_TOOL]))
    assert [c.name for c in response.tool_calls] == ["find_user_id_by_email", "get_order_details"]
    assert response.tool_calls[0].arguments == {"email": "mia.garcia2723@example.com"}
    assert response.usage.input_tokens == 1021
    assert response.meta["cache_read_input_tokens"] == 896


async def test_structured_output_request() -> None:
    schema = {
        "type": "object",
        "properties": {
            "order_id": {"type": "string"},
            "status": {"type": "string"},
            "refund_usd": {"type": "number"},
        },
        "required": ["order_id", "status", "refund_usd"],
        "additionalProperties": False,
    }
    recorder = Recorder("structured")
    model = make_model(recorder)
    response = await model.request(
        ModelRequest(conversation(), response_schema=schema, params={"max_tokens": 300})
    )
    assert json.loads(response.text) == {
        "order_id": "#W2378156",
        "status": "cancelled",
        "refund_usd": 1293.48,
    }
    body = recorder.body()
    assert body["output_config"] == {"format": {"type": "json_schema", "schema": schema}}
    assert body["max_tokens"] == 300


async def test_rate_limit_is_retryable_with_retry_after() -> None:
    recorder = Recorder("rate_limit_429")
    model = make_model(recorder)
    with pytest.raises(ModelError) as info:
        await model.request(ModelRequest(conversation()))
    error = info.value
    assert error.retryable is True
    assert error.retry_after == 17.0
    assert error.status == 429
    assert error.provider == "anthropic:claude-sonnet-4-6"
    assert "rate limit" in str(error)
    assert len(recorder.requests) == 1  # the SDK itself does not retry


@pytest.mark.parametrize(("name", "status"), [("overloaded_529", 529), ("server_error_500", 500)])
async def test_server_errors_are_retryable(name: str, status: int) -> None:
    recorder = Recorder(name)
    model = make_model(recorder)
    with pytest.raises(ModelError) as info:
        await model.request(ModelRequest(conversation()))
    assert info.value.retryable is True
    assert info.value.status == status
    assert info.value.retry_after is None
    assert not isinstance(info.value, ModelTimeout)
    assert len(recorder.requests) == 1


async def test_bad_request_is_not_retryable() -> None:
    model = make_model(Recorder("invalid_request_400"))
    with pytest.raises(ModelError) as info:
        await model.request(ModelRequest(conversation()))
    assert info.value.retryable is False
    assert info.value.status == 400
    assert "tool_result" in str(info.value)


async def test_timeout_maps_to_model_timeout() -> None:
    def handler(request: Any) -> Any:
        raise httpx2.ReadTimeout("timed out", request=request)

    model = make_model(handler)
    with pytest.raises(ModelTimeout) as info:
        await model.request(ModelRequest(conversation()))
    assert info.value.retryable is True


async def test_connection_error_is_retryable() -> None:
    def handler(request: Any) -> Any:
        raise httpx2.ConnectError("connection refused", request=request)

    model = make_model(handler)
    with pytest.raises(ModelError) as info:
        await model.request(ModelRequest(conversation()))
    assert info.value.retryable is True
    assert info.value.status is None


def test_message_conversion_merges_user_side_blocks() -> None:
    messages = [
        Message("system", "Rule one."),
        Message("system", "Rule two."),
        Message("user", "Cancel #W1 and #W2."),
        Message(
            "assistant",
            "",
            tool_calls=[
                ToolCall("toolu_1", "cancel", '{"order_id": "#W1"}'),
                ToolCall("toolu_2", "cancel", "{not json"),
            ],
        ),
        Message("tool", "ok", tool_call_id="toolu_1"),
        Message("tool", "error: invalid arguments", tool_call_id="toolu_2"),
        Message("user", "Thanks."),
    ]
    system, turns = messages_to_anthropic(messages)
    assert system == "Rule one.\n\nRule two."
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    assert turns[1]["content"][0]["input"] == {"order_id": "#W1"}
    assert turns[1]["content"][1]["input"] == {"_raw_arguments": "{not json"}
    assert [b["type"] for b in turns[2]["content"]] == ["tool_result", "tool_result", "text"]


def test_response_from_dict() -> None:
    response = response_from_anthropic(fixture("tool_use")["body"], "anthropic:x")
    assert response.tool_calls[0].name == "get_order_details"
    assert response.usage.output_tokens == 71
