"""The local model with the real SmolLM2-135M-Instruct weights, in its supervised server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, Literal

import pytest
from pydantic import BaseModel, ConfigDict, create_model

from tether.messages import Message, ModelRequest
from tether.models.local import LocalModel
from tether.models.local_prompt import json_grammar

pytest.importorskip(
    "llama_cpp", reason="llama-cpp-python is not installed: pip install 'tether[local]'"
)

STR = {"type": "string"}
TOOLS: list[dict[str, Any]] = [
    {
        "name": "get_order_details",
        "description": "Get the status and items of an order.",
        "parameters": {
            "type": "object",
            "properties": {"order_id": STR},
            "required": ["order_id"],
            "additionalProperties": False,
        },
    },
    {
        "name": "cancel_pending_order",
        "description": "Cancel an order that has not shipped yet.",
        "parameters": {
            "type": "object",
            "properties": {
                "order_id": STR,
                "reason": {"enum": ["no longer needed", "ordered by mistake"]},
            },
            "required": ["order_id", "reason"],
            "additionalProperties": False,
        },
    },
    {
        "name": "calculate",
        "description": "Evaluate an arithmetic expression.",
        "parameters": {
            "type": "object",
            "properties": {"expression": STR},
            "required": ["expression"],
            "additionalProperties": False,
        },
    },
]


def validator(schema: dict[str, Any]) -> type[BaseModel]:
    fields: dict[str, Any] = {}
    for prop, sub in schema["properties"].items():
        annotation = Literal[tuple(sub["enum"])] if "enum" in sub else str
        fields[prop] = (annotation, ...)
    model: type[BaseModel] = create_model(
        "Arguments", __config__=ConfigDict(strict=True, extra="forbid"), **fields
    )
    return model


@pytest.fixture(scope="module")
def model() -> Iterator[LocalModel]:
    local = LocalModel(n_ctx=2048)
    local.server.ensure()
    yield local
    local.server.stop()


PROMPTS = [
    ("What's the status of order #W2378156?", "auto", 0.0),
    ("Cancel order #W4817420, I ordered it by mistake.", "required", 0.0),
    ("How much is 3 times 19.99?", "required", 0.8),
    ("Please cancel #W1000001, I don't need it any more.", "cancel_pending_order", 1.0),
]


@pytest.mark.parametrize(("prompt", "choice", "temperature"), PROMPTS)
async def test_tool_calls_parse_and_validate(
    model: LocalModel, prompt: str, choice: str, temperature: float
) -> None:
    request = ModelRequest(
        [Message("system", "You are a retail support agent."), Message("user", prompt)],
        tools=TOOLS,
        params={"tool_choice": choice, "temperature": temperature, "max_tokens": 96, "seed": 3},
    )
    response = await model.request(request)
    assert response.usage.input_tokens > 0 and response.usage.output_tokens > 0
    if choice == "auto" and not response.tool_calls:
        assert response.text  # a final answer is the other well-formed outcome
        return
    assert len(response.tool_calls) == 1
    call = response.tool_calls[0]
    spec = next(t for t in TOOLS if t["name"] == call.name)
    if choice not in ("auto", "required"):
        assert call.name == choice
    assert isinstance(call.arguments, dict)
    validator(spec["parameters"]).model_validate(call.arguments)
    json.loads(call.arguments_text())  # round-trips as strict JSON


async def test_tool_result_then_final_answer(model: LocalModel) -> None:
    messages = [
        Message("system", "You are a retail support agent."),
        Message("user", "What's the status of order #W2378156?"),
    ]
    params = {"max_tokens": 96, "tool_choice": "get_order_details"}
    first = await model.request(ModelRequest(messages, tools=TOOLS, params=params))
    call = first.tool_calls[0]
    messages += [
        first.as_message(),
        Message("tool", '{"status": "delivered"}', tool_call_id=call.id),
    ]
    schema = {
        "type": "object",
        "properties": {"status": {"type": "string"}, "delivered": {"type": "boolean"}},
        "required": ["status", "delivered"],
    }
    second = await model.request(
        ModelRequest(messages, tools=TOOLS, response_schema=schema, params={"max_tokens": 96})
    )
    if second.tool_calls:  # the model may call another tool; it must still be well-formed
        assert isinstance(second.tool_calls[0].arguments, dict)
    else:
        answer = json.loads(second.text)
        assert isinstance(answer["delivered"], bool) and isinstance(answer["status"], str)


async def test_strings_never_hold_raw_control_characters(model: LocalModel) -> None:
    schema = {
        "type": "object",
        "properties": {"poem": {"type": "string", "maxLength": 300}},
        "required": ["poem"],
    }
    for seed in range(3):
        response = await model.request(
            ModelRequest(
                [Message("user", "Write a poem of four short lines about the sea.")],
                response_schema=schema,
                params={"temperature": 1.0, "seed": seed, "max_tokens": 120},
            )
        )
        if response.meta.get("finish_reason") == "length":
            continue
        assert isinstance(json.loads(response.text)["poem"], str)  # strict JSON parse


def test_grammar_excludes_control_characters() -> None:
    grammar = json_grammar({"type": "object", "properties": {"a": STR}, "required": ["a"]})
    assert r'char ::= [^"\\\x7F\x00-\x1F]' in grammar


def test_greedy_grammar_sampling_checks_the_best_token_first() -> None:
    """The server's sampling shortcut chooses the tokens the library's own sampling chooses."""
    import llama_cpp

    from tether.models.local_prompt import decision_schema, default_model_path
    from tether.models.local_server import check_grammar_last

    class Shortcut(llama_cpp.Llama):  # type: ignore[misc]
        pass

    check_grammar_last(Shortcut)
    grammar = json_grammar(decision_schema(TOOLS))
    texts: dict[str, list[str]] = {}
    for name, cls in (("library", llama_cpp.Llama), ("shortcut", Shortcut)):
        llm = cls(str(default_model_path()), n_ctx=1024, seed=0, verbose=False)
        texts[name] = [
            llm.create_chat_completion(
                messages=[
                    {"role": "system", "content": "You are a retail support agent."},
                    {"role": "user", "content": prompt},
                ],
                grammar=llama_cpp.LlamaGrammar.from_string(grammar),
                temperature=0.0,
                repeat_penalty=1.1,
                max_tokens=48,
            )["choices"][0]["message"]["content"]
            for prompt, _, _ in PROMPTS
        ]
        llm.close()
    assert texts["shortcut"] == texts["library"]
    assert all(text.startswith("{") for text in texts["library"])
