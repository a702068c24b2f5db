"""LlamaCppModel plumbing with a stand-in for llama_cpp (the real model is an integration test)."""

from __future__ import annotations

import json
import types
from pathlib import Path
from typing import Any

import pytest

import tether.models.llamacpp as llamacpp
from tether.messages import Message, ModelRequest, ToolCall
from tether.models.llamacpp import (
    LlamaCppModel,
    bound_schema,
    decision_schema,
    to_chat_messages,
    tools_prompt,
)

TOOLS = [
    {
        "name": "get_order_details",
        "description": "Get an order.",
        "parameters": {
            "type": "object",
            "properties": {"order_id": {"type": "string"}},
            "required": ["order_id"],
        },
    },
    {
        "name": "cancel_pending_order",
        "description": "Cancel a pending order.",
        "parameters": {
            "type": "object",
            "properties": {
                "order_id": {"type": "string"},
                "reason": {"enum": ["no longer needed", "ordered by mistake"]},
            },
            "required": ["order_id", "reason"],
        },
    },
]


class FakeLlama:
    """Records create_chat_completion calls and answers with queued texts."""

    instances: list[FakeLlama] = []
    replies: list[str] = []

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.calls: list[dict[str, Any]] = []
        FakeLlama.instances.append(self)

    def create_chat_completion(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(kwargs)
        reply = FakeLlama.replies.pop(0)
        text, finish = reply.split("|FINISH=") if "|FINISH=" in reply else (reply, "stop")
        return {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "model": self.kwargs["model_path"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": finish,
                }
            ],
            "usage": {"prompt_tokens": 120, "completion_tokens": 14, "total_tokens": 134},
        }


@pytest.fixture
def model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> LlamaCppModel:
    FakeLlama.instances = []
    FakeLlama.replies = []
    fake = types.SimpleNamespace(Llama=FakeLlama)
    monkeypatch.setattr(llamacpp, "_import_llama_cpp", lambda: fake)
    weights = tmp_path / "tiny.gguf"
    weights.write_bytes(b"GGUF")
    return LlamaCppModel(str(weights), n_ctx=2048, seed=7)


def test_decision_schema_shapes() -> None:
    schema = decision_schema(TOOLS)
    options = schema["anyOf"]
    assert [o["properties"].get("tool", {}).get("const") for o in options] == [
        "get_order_details",
        "cancel_pending_order",
        None,
    ]
    assert options[0]["properties"]["arguments"] == TOOLS[0]["parameters"]
    assert options[2]["properties"]["final"] == {"type": "string"}

    required = decision_schema(TOOLS, tool_choice="required")
    assert len(required["anyOf"]) == 2
    forced = decision_schema(TOOLS, tool_choice="cancel_pending_order")
    assert forced["properties"]["tool"] == {"const": "cancel_pending_order"}

    answer = {"type": "object", "properties": {"ok": {"type": "boolean"}}}
    assert decision_schema(TOOLS, answer)["anyOf"][2]["properties"]["final"] == answer


def test_prompt_and_messages() -> None:
    prompt = tools_prompt(TOOLS)
    assert "get_order_details(order_id: string): Get an order." in prompt
    assert 'reason: "no longer needed" | "ordered by mistake"' in prompt
    assert '{"final":' in prompt
    assert '{"final":' not in tools_prompt(TOOLS, allow_final=False)

    messages = [
        Message("system", "Be brief."),
        Message("user", "Cancel #W1"),
        Message(
            "assistant", "", tool_calls=[ToolCall("c1", "get_order_details", '{"order_id":"#W1"}')]
        ),
        Message("tool", '{"status":"pending"}', tool_call_id="c1"),
    ]
    chat = to_chat_messages(messages, "TOOLS")
    assert chat[0] == {"role": "system", "content": "Be brief.\n\nTOOLS"}
    assert chat[2] == {
        "role": "assistant",
        "content": '{"tool": "get_order_details", "arguments": {"order_id": "#W1"}}',
    }
    assert chat[3] == {
        "role": "user",
        "content": 'Result of get_order_details: {"status":"pending"}',
    }


async def test_tool_call_and_final_answer(model: LlamaCppModel) -> None:
    FakeLlama.replies = [
        '{"tool": "cancel_pending_order", "arguments": {"order_id": "#W1", '
        '"reason": "ordered by mistake"}}',
        '{"final": "Cancelled."}',
    ]
    messages = [Message("user", "Cancel #W1, I ordered it by mistake")]
    first = await model.request(ModelRequest(messages, tools=TOOLS, params={"max_tokens": 64}))
    assert first.tool_calls[0].name == "cancel_pending_order"
    assert first.tool_calls[0].arguments == {"order_id": "#W1", "reason": "ordered by mistake"}
    assert (first.usage.input_tokens, first.usage.output_tokens) == (120, 14)
    assert first.model == "local:tiny"

    messages += [first.as_message(), Message("tool", "ok", tool_call_id=first.tool_calls[0].id)]
    second = await model.request(ModelRequest(messages, tools=TOOLS))
    assert second.text == "Cancelled."
    assert second.tool_calls == []

    llm = FakeLlama.instances[0]
    assert len(FakeLlama.instances) == 1  # loaded once
    assert llm.kwargs["n_ctx"] == 2048 and llm.kwargs["seed"] == 7
    call = llm.calls[0]
    assert call["max_tokens"] == 64
    assert call["temperature"] == 0.0
    assert call["response_format"]["type"] == "json_object"
    grammar_schema = call["response_format"]["schema"]
    # free strings are capped in the grammar, enums are left alone
    first_args = grammar_schema["anyOf"][0]["properties"]["arguments"]
    assert first_args["properties"]["order_id"]["maxLength"] == 100  # (64 - 24) * 2.5
    second_args = grammar_schema["anyOf"][1]["properties"]["arguments"]
    assert "maxLength" not in second_args["properties"]["reason"]
    assert llm.calls[1]["messages"][-1]["content"] == "Result of cancel_pending_order: ok"


async def test_tool_choice_forms(model: LlamaCppModel) -> None:
    FakeLlama.replies = ['{"tool": "get_order_details", "arguments": {"order_id": "1"}}'] * 3
    for choice in (
        "get_order_details",
        {"type": "function", "function": {"name": "get_order_details"}},
        {"type": "tool", "name": "get_order_details"},
    ):
        await model.request(
            ModelRequest([Message("user", "x")], tools=TOOLS, params={"tool_choice": choice})
        )
        schema = FakeLlama.instances[0].calls[-1]["response_format"]["schema"]
        assert schema["properties"]["tool"] == {"const": "get_order_details"}


async def test_schema_and_text_modes(model: LlamaCppModel) -> None:
    answer = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    FakeLlama.replies = ['{"n": 4}', "Hello there."]
    structured = await model.request(
        ModelRequest([Message("user", "2+2?")], response_schema=answer)
    )
    assert json.loads(structured.text) == {"n": 4}
    plain = await model.request(ModelRequest([Message("user", "hi")]))
    assert plain.text == "Hello there."
    calls = FakeLlama.instances[0].calls
    assert calls[0]["response_format"] == {"type": "json_object", "schema": answer}
    assert "response_format" not in calls[1]


async def test_truncated_output_is_retried_with_tighter_limits(model: LlamaCppModel) -> None:
    FakeLlama.replies = [
        '{"tool": "get_order_details", "argu|FINISH=length',
        '{"tool": "get_order_details", "arguments": {"order_id": "#W1"}}',
    ]
    response = await model.request(ModelRequest([Message("user", "x")], tools=TOOLS))
    assert response.tool_calls[0].arguments == {"order_id": "#W1"}
    assert response.meta["retried_truncated"] is True
    assert (response.usage.input_tokens, response.usage.output_tokens) == (240, 28)
    calls = FakeLlama.instances[0].calls
    caps = [
        c["response_format"]["schema"]["anyOf"][0]["properties"]["arguments"]["properties"][
            "order_id"
        ]["maxLength"]
        for c in calls
    ]
    assert caps[1] < caps[0]


async def test_truncated_output_twice_is_kept_as_text(model: LlamaCppModel) -> None:
    FakeLlama.replies = ['{"tool": "get_order_details", "argu|FINISH=length'] * 2
    response = await model.request(ModelRequest([Message("user", "x")], tools=TOOLS))
    assert response.tool_calls == []
    assert response.meta["unparsed"] is True


def test_bound_schema() -> None:
    schema = {
        "type": "object",
        "properties": {
            "to": {"type": "string"},
            "subject": {"type": "string", "maxLength": 20},
            "tags": {"type": "array", "items": {"type": "string"}},
            "kind": {"type": "string", "enum": ["a", "b"]},
        },
    }
    bounded = bound_schema(schema, 124)  # (124 - 24) * 2.5 = 250 chars over 1 + 4 strings
    props = bounded["properties"]
    assert props["to"]["maxLength"] == 50
    assert props["subject"] == {"type": "string", "maxLength": 20}
    assert props["tags"]["maxItems"] == llamacpp.MAX_ARRAY_ITEMS
    assert props["tags"]["items"]["maxLength"] == 50
    assert "maxLength" not in props["kind"]
    assert "maxLength" not in schema["properties"]["to"]  # the original is untouched
    tiny = bound_schema({"type": "string"}, 10)
    assert tiny["maxLength"] == llamacpp.MIN_STRING_CHARS


def test_missing_model_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(llamacpp, "_import_llama_cpp", lambda: types.SimpleNamespace())
    with pytest.raises(FileNotFoundError):
        LlamaCppModel("/nonexistent/model.gguf")
