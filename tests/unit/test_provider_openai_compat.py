"""OpenAICompatModel at the HTTP level: request shape, message conversion, error mapping."""

from __future__ import annotations

import email.utils
import json
from typing import Any

import pytest

from tether.errors import ModelError, ModelTimeout
from tether.messages import Message, ModelRequest, ToolCall

pytest.importorskip("openai")
httpx2 = pytest.importorskip("httpx2")

from tether.models.openai_compat import (  # noqa: E402
    OpenAICompatModel,
    messages_to_openai,
    parse_retry_after,
    response_from_openai,
)

ORDER_TOOL = {
    "name": "get_order_details",
    "description": "Get the status and details of an order.",
    "parameters": {
        "type": "object",
        "properties": {"order_id": {"type": "string"}},
        "required": ["order_id"],
    },
}

TOOL_CALL_COMPLETION = {
    "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
    "object": "chat.completion",
    "created": 1741570283,
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_Kx2hVf8mTq3ZpR7nLw9yBcDe",
                        "type": "function",
                        "function": {
                            "name": "get_order_details",
                            "arguments": '{"order_id":"#W2378156"}',
                        },
                    }
                ],
                "refusal": None,
                "annotations": [],
            },
            "logprobs": None,
            "finish_reason": "tool_calls",
        }
    ],
    "usage": {
        "prompt_tokens": 82,
        "completion_tokens": 18,
        "total_tokens": 100,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    },
    "service_tier": "default",
    "system_fingerprint": "fp_06737a9306",
}

TEXT_COMPLETION = {
    "id": "chatcmpl-B9MHEq0aLdUZ8a2xk1QbRf5T7sYwN",
    "object": "chat.completion",
    "created": 1741570290,
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": '{"status":"delivered"}',
                "refusal": None,
                "annotations": [],
            },
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 131, "completion_tokens": 7, "total_tokens": 138},
}


def error_body(message: str, kind: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


class Server:
    """A MockTransport handler answering from a queue of (status, headers, body)."""

    def __init__(self, *replies: tuple[int, dict[str, str], Any]) -> None:
        self.replies = list(replies)
        self.requests: list[Any] = []

    def __call__(self, request: Any) -> Any:
        self.requests.append(request)
        status, headers, body = self.replies.pop(0)
        return httpx2.Response(status, headers=headers, json=body)

    def body(self, index: int = -1) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.requests[index].content)
        return result


def make_model(handler: Any, **kwargs: Any) -> OpenAICompatModel:
    http_client = httpx2.AsyncClient(transport=httpx2.MockTransport(handler))
    return OpenAICompatModel("gpt-4o-mini", api_key="sk-test", http_client=http_client, **kwargs)


def conversation() -> list[Message]:
    return [
        Message("system", "You are a retail support agent."),
        Message("user", "Where is order #W2378156?"),
    ]


async def test_tool_call_round_trip() -> None:
    server = Server((200, {}, TOOL_CALL_COMPLETION), (200, {}, TEXT_COMPLETION))
    model = make_model(server)
    assert model.name == "openai:gpt-4o-mini"
    messages = conversation()
    first = await model.request(
        ModelRequest(messages, tools=[ORDER_TOOL], params={"temperature": 0, "top_k": 5})
    )
    assert first.tool_calls == [
        ToolCall("call_Kx2hVf8mTq3ZpR7nLw9yBcDe", "get_order_details", '{"order_id":"#W2378156"}')
    ]
    assert (first.usage.input_tokens, first.usage.output_tokens) == (82, 18)
    assert first.meta["finish_reason"] == "tool_calls"
    assert first.meta["served_model"] == "gpt-4o-mini-2024-07-18"
    assert first.model == "openai:gpt-4o-mini"

    body = server.body()
    assert server.requests[0].url.path == "/v1/chat/completions"
    assert server.requests[0].headers["authorization"] == "Bearer sk-test"
    assert body["temperature"] == 0
    assert body["top_k"] == 5  # unknown to the SDK: sent in the body
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_order_details",
                "description": "Get the status and details of an order.",
                "parameters": ORDER_TOOL["parameters"],
            },
        }
    ]
    assert body["messages"] == [
        {"role": "system", "content": "You are a retail support agent."},
        {"role": "user", "content": "Where is order #W2378156?"},
    ]

    messages.append(first.as_message())
    messages.append(
        Message("tool", '{"status": "delivered"}', tool_call_id="call_Kx2hVf8mTq3ZpR7nLw9yBcDe")
    )
    schema = {"type": "object", "properties": {"status": {"type": "string"}}}
    second = await model.request(ModelRequest(messages, tools=[ORDER_TOOL], response_schema=schema))
    assert json.loads(second.text) == {"status": "delivered"}
    assert second.tool_calls == []

    body = server.body()
    assert body["messages"][2] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": "call_Kx2hVf8mTq3ZpR7nLw9yBcDe",
                "type": "function",
                "function": {"name": "get_order_details", "arguments": '{"order_id":"#W2378156"}'},
            }
        ],
    }
    assert body["messages"][3] == {
        "role": "tool",
        "tool_call_id": "call_Kx2hVf8mTq3ZpR7nLw9yBcDe",
        "content": '{"status": "delivered"}',
    }
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "response", "schema": schema, "strict": False},
    }


async def test_json_object_schema_mode() -> None:
    server = Server((200, {}, TEXT_COMPLETION))
    model = make_model(server, schema_mode="json_object")
    schema = {"type": "object", "properties": {"status": {"type": "string"}}}
    await model.request(ModelRequest(conversation(), response_schema=schema))
    assert server.body()["response_format"] == {"type": "json_object", "schema": schema}


async def test_rate_limit_with_retry_after() -> None:
    server = Server(
        (
            429,
            {"retry-after": "20", "x-ratelimit-remaining-requests": "0"},
            error_body(
                "Rate limit reached for gpt-4o-mini on requests per min (RPM): Limit 3, Used 3.",
                "requests",
                "rate_limit_exceeded",
            ),
        )
    )
    model = make_model(server)
    with pytest.raises(ModelError) as info:
        await model.request(ModelRequest(conversation()))
    assert info.value.retryable is True
    assert info.value.retry_after == 20.0
    assert info.value.status == 429
    assert info.value.provider == "openai:gpt-4o-mini"
    assert len(server.requests) == 1  # no SDK retries


async def test_rate_limit_with_retry_after_ms() -> None:
    server = Server(
        (429, {"retry-after-ms": "1500"}, error_body("slow down", "tokens", "rate_limit_exceeded"))
    )
    with pytest.raises(ModelError) as info:
        await make_model(server).request(ModelRequest(conversation()))
    assert info.value.retry_after == 1.5


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_errors_are_retryable(status: int) -> None:
    server = Server((status, {}, error_body("The server had an error.", "server_error")))
    with pytest.raises(ModelError) as info:
        await make_model(server).request(ModelRequest(conversation()))
    assert info.value.retryable is True
    assert info.value.status == status


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
async def test_client_errors_are_not_retryable(status: int) -> None:
    server = Server((status, {"retry-after": "5"}, error_body("bad", "invalid_request_error")))
    with pytest.raises(ModelError) as info:
        await make_model(server).request(ModelRequest(conversation()))
    assert info.value.retryable is False
    assert info.value.retry_after is None
    assert info.value.status == status


async def test_timeout_and_connection_errors() -> None:
    def timeout(request: Any) -> Any:
        raise httpx2.ReadTimeout("read timed out", request=request)

    def refused(request: Any) -> Any:
        raise httpx2.ConnectError("connection refused", request=request)

    with pytest.raises(ModelTimeout):
        await make_model(timeout).request(ModelRequest(conversation()))
    with pytest.raises(ModelError) as info:
        await make_model(refused).request(ModelRequest(conversation()))
    assert info.value.retryable is True
    assert not isinstance(info.value, ModelTimeout)


def test_compat_name_and_base_url() -> None:
    model = OpenAICompatModel("smollm2", base_url="http://127.0.0.1:9/v1", api_key="none")
    assert model.name == "openai_compat:smollm2"
    assert str(model.client.base_url).startswith("http://127.0.0.1:9/v1")
    assert model.client.max_retries == 0


def test_message_conversion() -> None:
    messages = [
        Message("system", "sys"),
        Message("user", "hi", name="alice"),
        Message(
            "assistant", "thinking", tool_calls=[ToolCall("c1", "calc", {"expression": "1+1"})]
        ),
        Message("tool", "2", tool_call_id="c1"),
        Message("assistant", "done"),
    ]
    converted = messages_to_openai(messages)
    assert converted[1] == {"role": "user", "content": "hi", "name": "alice"}
    assert converted[2]["content"] == "thinking"
    assert converted[2]["tool_calls"][0]["function"] == {
        "name": "calc",
        "arguments": '{"expression":"1+1"}',
    }
    assert converted[3] == {"role": "tool", "tool_call_id": "c1", "content": "2"}
    assert converted[4] == {"role": "assistant", "content": "done"}


def test_response_from_plain_dict() -> None:
    response = response_from_openai(TOOL_CALL_COMPLETION, "openai:x")
    assert response.tool_calls[0].name == "get_order_details"
    assert response.text == ""
    with pytest.raises(ModelError):
        response_from_openai({"choices": []}, "openai:x")


def test_parse_retry_after_forms() -> None:
    assert parse_retry_after({"Retry-After": "3"}) == 3.0
    assert parse_retry_after({"retry-after": "0.5"}) == 0.5
    assert parse_retry_after({}) is None
    assert parse_retry_after({"retry-after": "soon"}) is None
    when = email.utils.formatdate(1_000_030, usegmt=True)
    assert parse_retry_after({"retry-after": when}, now=1_000_000) == 30.0


async def test_auto_schema_mode_falls_back_and_remembers() -> None:
    rejection = {
        "error": {
            "message": "1 validation error: body.response_format.type: "
            "Input should be 'text' or 'json_object'",
            "type": "internal_server_error",
            "param": None,
            "code": None,
        }
    }
    server = Server((500, {}, rejection), (200, {}, TEXT_COMPLETION), (200, {}, TEXT_COMPLETION))
    http_client = httpx2.AsyncClient(transport=httpx2.MockTransport(server))
    model = OpenAICompatModel("smollm2", base_url="http://127.0.0.1:9/v1", http_client=http_client)
    assert model.schema_mode == "auto"
    schema = {"type": "object", "properties": {"status": {"type": "string"}}}
    request = ModelRequest(conversation(), response_schema=schema)
    response = await model.request(request)
    assert json.loads(response.text) == {"status": "delivered"}
    assert server.body(0)["response_format"]["type"] == "json_schema"
    assert server.body(1)["response_format"] == {"type": "json_object", "schema": schema}
    assert model.effective_schema_mode == "json_object"
    await model.request(request)
    assert len(server.requests) == 3  # no second attempt with json_schema
    assert server.body(2)["response_format"]["type"] == "json_object"


async def test_explicit_schema_mode_does_not_fall_back() -> None:
    server = Server((400, {}, error_body("response_format json_schema unsupported", "bad")))
    model = make_model(server, schema_mode="json_schema")
    schema = {"type": "object"}
    with pytest.raises(ModelError) as info:
        await model.request(ModelRequest(conversation(), response_schema=schema))
    assert info.value.status == 400
    assert len(server.requests) == 1


def test_schema_name_is_sanitised() -> None:
    model = OpenAICompatModel("gpt-4o-mini", api_key="sk-test")
    kwargs = model.build_kwargs(
        ModelRequest(conversation(), response_schema={"title": "Order summary!", "type": "object"})
    )
    assert kwargs["response_format"]["json_schema"]["name"] == "Order_summary"
