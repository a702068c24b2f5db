"""OpenAI and OpenAI-compatible chat completion servers (vLLM, llama.cpp server, Ollama...).

Built on the official ``openai`` SDK (``pip install 'tether[openai]'``), imported lazily so the rest
of tether works without it. The SDK's own retries are switched off: tether retries in a wrapper,
driven by the ``retryable`` / ``retry_after`` fields of the :class:`~tether.errors.ModelError`
raised here.
"""

from __future__ import annotations

import email.utils
import inspect
import itertools
import os
import re
import time
from collections.abc import Mapping
from typing import Any

from tether.errors import ModelError, ModelTimeout
from tether.messages import Message, ModelRequest, ModelResponse, ToolCall, Usage

# Used when the client's ``chat.completions.create`` signature cannot be read (e.g. a test double).
_FALLBACK_PARAMS = frozenset(
    {"temperature", "top_p", "max_tokens", "stop", "seed", "tool_choice", "extra_body"}
)

_fallback_ids = itertools.count(1)

# The forms of a response schema, in the order "auto" tries them.
_FALLBACK_ORDER = ("json_schema", "json_object", "none")
_SCHEMA_MODES = (*_FALLBACK_ORDER, "auto")


def _schema_name(schema: dict[str, Any]) -> str:
    """A ``json_schema.name`` (letters, digits, ``_`` and ``-``, at most 64) from the title."""
    title = str(schema.get("title") or "response")
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", title).strip("_")[:64]
    return name or "response"


def _rejects_response_format(exc: BaseException, sdk: Any) -> bool:
    """Whether a server refused the request because of its ``response_format``.

    Some servers answer 400/422, others (llama.cpp's Python server) 500 with a validation message.
    """
    if not isinstance(exc, sdk.APIStatusError) or exc.status_code not in (400, 422, 500):
        return False
    text = f"{getattr(exc, 'message', '')} {getattr(exc, 'body', '')}".lower()
    return "response_format" in text or "json_schema" in text


def _import_openai() -> Any:
    try:
        import openai
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the OpenAI provider needs the openai package: pip install 'tether[openai]'"
        ) from exc
    return openai


def parse_retry_after(
    headers: Mapping[str, str] | None, *, now: float | None = None
) -> float | None:
    """The delay a provider asked for, in seconds, from ``retry-after-ms`` or ``retry-after``.

    ``retry-after`` may be a number of seconds or an HTTP date. Returns ``None`` when absent or
    unreadable.
    """
    if not headers:
        return None
    lowered = {str(k).lower(): str(v) for k, v in headers.items()}
    millis = lowered.get("retry-after-ms")
    if millis is not None:
        try:
            return max(0.0, float(millis) / 1000.0)
        except ValueError:
            pass
    value = lowered.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def map_sdk_error(exc: BaseException, sdk: Any, provider: str) -> ModelError:
    """Translate an exception of a Stainless-generated SDK (openai, anthropic) to a ModelError.

    Timeouts become :class:`ModelTimeout`; connection failures, 408, 409, 429 and 5xx (including
    Anthropic's 529 "overloaded") are retryable; other 4xx are not.
    """
    if isinstance(exc, sdk.APITimeoutError):
        return ModelTimeout(f"{provider}: request timed out", provider=provider)
    if isinstance(exc, sdk.APIStatusError):
        status = int(exc.status_code)
        headers = getattr(getattr(exc, "response", None), "headers", None)
        retry_after = parse_retry_after(headers)
        retryable = status in (408, 409, 429) or status >= 500
        message = getattr(exc, "message", None) or str(exc)
        return ModelError(
            f"{provider}: HTTP {status}: {message}",
            retryable=retryable,
            retry_after=retry_after if retryable else None,
            status=status,
            provider=provider,
        )
    if isinstance(exc, sdk.APIConnectionError):
        return ModelError(f"{provider}: connection error: {exc}", retryable=True, provider=provider)
    return ModelError(f"{provider}: {type(exc).__name__}: {exc}", provider=provider)


def _json_arguments(call: ToolCall) -> str:
    return call.arguments_text()


def messages_to_openai(messages: list[Message]) -> list[dict[str, Any]]:
    """Convert tether messages to the chat completions ``messages`` format."""
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "assistant":
            # Always a string: OpenAI accepts "" next to tool calls, and some compatible servers
            # (llama.cpp's Python server) reject null.
            item: dict[str, Any] = {"role": "assistant", "content": m.content}
            if m.tool_calls:
                item["tool_calls"] = [
                    {
                        "id": c.id,
                        "type": "function",
                        "function": {"name": c.name, "arguments": _json_arguments(c)},
                    }
                    for c in m.tool_calls
                ]
            if m.name:
                item["name"] = m.name
            out.append(item)
        elif m.role == "tool":
            out.append({"role": "tool", "tool_call_id": m.tool_call_id or "", "content": m.content})
        else:
            item = {"role": m.role, "content": m.content}
            if m.name:
                item["name"] = m.name
            out.append(item)
    return out


def tools_to_openai(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Convert tether tool schemas to chat completions function tools."""
    converted = []
    for tool in tools:
        function: dict[str, Any] = {
            "name": tool["name"],
            "parameters": tool.get("parameters") or {"type": "object", "properties": {}},
        }
        if tool.get("description"):
            function["description"] = tool["description"]
        converted.append({"type": "function", "function": function})
    return converted


def _field(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


def tool_calls_from_openai(raw_calls: Any) -> list[ToolCall]:
    """Read the ``tool_calls`` of a chat completion message (SDK objects or plain dicts)."""
    calls: list[ToolCall] = []
    for raw in raw_calls or []:
        function = _field(raw, "function")
        if function is None:  # custom (free-form) tool calls
            custom = _field(raw, "custom")
            if custom is None:
                continue
            name, arguments = _field(custom, "name", ""), _field(custom, "input", "")
        else:
            name, arguments = _field(function, "name", ""), _field(function, "arguments", "")
        call_id = _field(raw, "id") or f"call_{next(_fallback_ids)}"
        if arguments is None:
            arguments = ""
        calls.append(ToolCall(id=str(call_id), name=str(name), arguments=arguments))
    return calls


def response_from_openai(completion: Any, model_name: str) -> ModelResponse:
    """Build a :class:`ModelResponse` from a chat completion (SDK object or plain dict)."""
    choices = _field(completion, "choices") or []
    if not choices:
        raise ModelError(f"{model_name}: response has no choices", provider=model_name)
    choice = choices[0]
    message = _field(choice, "message")
    text = _field(message, "content") or ""
    refusal = _field(message, "refusal")
    usage = _field(completion, "usage")
    meta: dict[str, Any] = {}
    finish = _field(choice, "finish_reason")
    if finish:
        meta["finish_reason"] = str(finish)
    response_id = _field(completion, "id")
    if response_id:
        meta["id"] = str(response_id)
    served = _field(completion, "model")
    if served:
        meta["served_model"] = str(served)
    if refusal:
        meta["refusal"] = str(refusal)
    return ModelResponse(
        text=str(text),
        tool_calls=tool_calls_from_openai(_field(message, "tool_calls")),
        usage=Usage(
            int(_field(usage, "prompt_tokens", 0) or 0),
            int(_field(usage, "completion_tokens", 0) or 0),
        ),
        model=model_name,
        meta=meta,
    )


class OpenAICompatModel:
    """A chat model behind the OpenAI chat completions API.

    With no ``base_url`` it talks to OpenAI itself (key from ``OPENAI_API_KEY`` by default); with a
    ``base_url`` to any compatible server. Tools are sent as function tools. A ``response_schema``
    is sent according to ``schema_mode``:

    * ``"json_schema"``: ``response_format={"type": "json_schema", "json_schema": {...}}``
      (OpenAI, vLLM...), the default without ``base_url``;
    * ``"json_object"``: ``{"type": "json_object", "schema": ...}`` (llama.cpp's Python server and
      other servers that read the schema there);
    * ``"none"``: nothing is sent (tether still validates the answer);
    * ``"auto"``, the default with ``base_url``: ``json_schema`` first; when the server rejects
      ``response_format``, ``json_object``, then ``none``, remembering what worked.

    Request ``params`` are passed through; those the SDK does not know go in the request body.
    """

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 60,
        client: Any = None,
        *,
        name: str | None = None,
        schema_mode: str | None = None,
        strict_schema: bool = False,
        http_client: Any = None,
    ) -> None:
        if schema_mode is None:
            schema_mode = "json_schema" if base_url is None else "auto"
        if schema_mode not in _SCHEMA_MODES:
            raise ValueError(f"schema_mode must be one of {', '.join(_SCHEMA_MODES)}")
        self.model = model
        self.base_url = base_url
        self.timeout = timeout
        self.schema_mode = schema_mode
        # In "auto" mode: the form currently used (it moves on when the server rejects one).
        self._auto_mode = "json_schema"
        self.strict_schema = strict_schema
        self._name = name or (f"openai:{model}" if base_url is None else f"openai_compat:{model}")
        self._sdk = _import_openai()
        if client is None:
            kwargs: dict[str, Any] = {"timeout": timeout, "max_retries": 0}
            if base_url is not None:
                kwargs["base_url"] = base_url
            if api_key is not None:
                kwargs["api_key"] = api_key
            elif base_url is not None:
                kwargs["api_key"] = os.environ.get("OPENAI_API_KEY") or "none"
            if http_client is not None:
                kwargs["http_client"] = http_client
            client = self._sdk.AsyncOpenAI(**kwargs)
        elif hasattr(client, "with_options"):
            client = client.with_options(max_retries=0)
        self._client: Any = client
        self._known_params: frozenset[str] | None = None

    @property
    def name(self) -> str:
        return self._name

    def _sdk_params(self) -> frozenset[str]:
        """Keyword arguments the SDK's create method takes; other params go in the body."""
        if self._known_params is None:
            try:
                names = inspect.signature(self._client.chat.completions.create).parameters
                self._known_params = frozenset(names) - {"timeout"}
            except (TypeError, ValueError, AttributeError):
                self._known_params = _FALLBACK_PARAMS
        return self._known_params

    @property
    def client(self) -> Any:
        """The underlying ``openai.AsyncOpenAI`` client."""
        return self._client

    @property
    def effective_schema_mode(self) -> str:
        """How a response schema is sent now (resolves ``"auto"``)."""
        return self._auto_mode if self.schema_mode == "auto" else self.schema_mode

    def build_kwargs(self, request: ModelRequest, schema_mode: str | None = None) -> dict[str, Any]:
        """The keyword arguments of ``chat.completions.create`` for ``request``."""
        mode = schema_mode or self.effective_schema_mode
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": messages_to_openai(request.messages),
        }
        if request.tools:
            kwargs["tools"] = tools_to_openai(request.tools)
        if request.response_schema is not None and mode != "none":
            if mode == "json_schema":
                kwargs["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {
                        "name": _schema_name(request.response_schema),
                        "schema": request.response_schema,
                        "strict": self.strict_schema,
                    },
                }
            else:
                kwargs["response_format"] = {
                    "type": "json_object",
                    "schema": request.response_schema,
                }
        extra_body: dict[str, Any] = {}
        for key, value in request.params.items():
            if key in ("model", "messages", "tools", "response_format", "stream"):
                continue
            if key in self._sdk_params():
                kwargs[key] = value
            else:
                extra_body[key] = value
        if extra_body:
            merged = dict(kwargs.get("extra_body") or {})
            merged.update(extra_body)
            kwargs["extra_body"] = merged
        return kwargs

    async def request(self, request: ModelRequest) -> ModelResponse:
        while True:
            mode = self.effective_schema_mode
            kwargs = self.build_kwargs(request, mode)
            try:
                completion = await self._client.chat.completions.create(**kwargs)
            except self._sdk.OpenAIError as exc:
                if (
                    self.schema_mode == "auto"
                    and "response_format" in kwargs
                    and _rejects_response_format(exc, self._sdk)
                ):
                    self._auto_mode = _FALLBACK_ORDER[_FALLBACK_ORDER.index(mode) + 1]
                    continue
                raise map_sdk_error(exc, self._sdk, self._name) from exc
            return response_from_openai(completion, self._name)

    async def aclose(self) -> None:
        """Close the underlying HTTP client."""
        await self._client.close()

    def __repr__(self) -> str:
        return f"OpenAICompatModel({self.model!r}, base_url={self.base_url!r})"
