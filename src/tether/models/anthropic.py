"""Anthropic Messages API provider.

Built on the official ``anthropic`` SDK (``pip install 'tether[anthropic]'``), imported lazily. The
system prompt travels separately, tool calls are ``tool_use`` blocks and tool results
``tool_result`` blocks in a user turn. SDK retries are off; errors are mapped to
:class:`~tether.errors.ModelError` with ``retryable`` / ``retry_after`` like the OpenAI provider.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Mapping
from typing import Any

from tether.messages import Message, ModelRequest, ModelResponse, ToolCall, Usage
from tether.models.openai_compat import map_sdk_error

# Used when the client's ``messages.create`` signature cannot be read (e.g. a test double).
_FALLBACK_PARAMS = frozenset({"extra_headers", "extra_query", "extra_body", "tool_choice"})


def _import_anthropic() -> Any:
    try:
        import anthropic
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the Anthropic provider needs the anthropic package: pip install 'tether[anthropic]'"
        ) from exc
    return anthropic


def _tool_input(call: ToolCall) -> dict[str, Any]:
    """A tool call's arguments as the object a ``tool_use`` block needs."""
    if isinstance(call.arguments, dict):
        return call.arguments
    try:
        parsed = json.loads(call.arguments) if call.arguments.strip() else {}
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        return parsed
    # Malformed arguments the model produced earlier: keep them visible, in an object.
    return {"_raw_arguments": call.arguments}


def messages_to_anthropic(messages: list[Message]) -> tuple[str, list[dict[str, Any]]]:
    """Split tether messages into the system prompt and Messages API turns.

    Consecutive tool results and user messages are merged into one user turn, since the API wants
    user and assistant turns to alternate and all results of one assistant turn together.
    """
    system_parts: list[str] = []
    turns: list[dict[str, Any]] = []

    def add(role: str, blocks: list[dict[str, Any]]) -> None:
        if not blocks:
            return
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": list(blocks)})

    for m in messages:
        if m.role == "system":
            if m.content:
                system_parts.append(m.content)
        elif m.role == "user":
            add("user", [{"type": "text", "text": m.content}] if m.content else [])
        elif m.role == "tool":
            add(
                "user",
                [
                    {
                        "type": "tool_result",
                        "tool_use_id": m.tool_call_id or "",
                        "content": m.content,
                    }
                ],
            )
        else:
            blocks: list[dict[str, Any]] = []
            if m.content:
                blocks.append({"type": "text", "text": m.content})
            for c in m.tool_calls:
                blocks.append(
                    {"type": "tool_use", "id": c.id, "name": c.name, "input": _tool_input(c)}
                )
            add("assistant", blocks)
    return "\n\n".join(system_parts), turns


def tools_to_anthropic(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Convert tether tool schemas to Messages API tools."""
    converted = []
    for tool in tools:
        item: dict[str, Any] = {
            "name": tool["name"],
            "input_schema": tool.get("parameters") or {"type": "object", "properties": {}},
        }
        if tool.get("description"):
            item["description"] = tool["description"]
        converted.append(item)
    return converted


def _field(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


def response_from_anthropic(message: Any, model_name: str) -> ModelResponse:
    """Build a :class:`ModelResponse` from a Messages API message (SDK object or dict)."""
    texts: list[str] = []
    calls: list[ToolCall] = []
    for block in _field(message, "content") or []:
        kind = _field(block, "type")
        if kind == "text":
            texts.append(str(_field(block, "text", "")))
        elif kind == "tool_use":
            raw_input = _field(block, "input")
            arguments: str | dict[str, Any]
            arguments = dict(raw_input) if isinstance(raw_input, Mapping) else str(raw_input or "")
            calls.append(
                ToolCall(
                    id=str(_field(block, "id", "")),
                    name=str(_field(block, "name", "")),
                    arguments=arguments,
                )
            )
    usage = _field(message, "usage")
    meta: dict[str, Any] = {}
    for key in ("id", "stop_reason", "model"):
        value = _field(message, key)
        if value:
            meta["served_model" if key == "model" else key] = str(value)
    cache_read = _field(usage, "cache_read_input_tokens")
    if cache_read:
        meta["cache_read_input_tokens"] = int(cache_read)
    cache_write = _field(usage, "cache_creation_input_tokens")
    if cache_write:
        meta["cache_creation_input_tokens"] = int(cache_write)
    return ModelResponse(
        text="".join(texts),
        tool_calls=calls,
        usage=Usage(
            int(_field(usage, "input_tokens", 0) or 0),
            int(_field(usage, "output_tokens", 0) or 0),
        ),
        model=model_name,
        meta=meta,
    )


class AnthropicModel:
    """A Claude model behind the Anthropic Messages API.

    The key comes from ``ANTHROPIC_API_KEY`` unless given. ``max_tokens`` (required by the API) is
    taken from the request's ``params`` or else the constructor. A ``response_schema`` is sent as
    structured output (``output_config={"format": {"type": "json_schema", ...}}``); pass
    ``structured_output=False`` for models without it.
    """

    def __init__(
        self,
        model: str,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float = 60,
        client: Any = None,
        *,
        name: str | None = None,
        max_tokens: int = 4096,
        structured_output: bool = True,
        http_client: Any = None,
    ) -> None:
        self.model = model
        self.base_url = base_url
        self.timeout = timeout
        self.max_tokens = max_tokens
        self.structured_output = structured_output
        self._name = name or f"anthropic:{model}"
        self._sdk = _import_anthropic()
        if client is None:
            kwargs: dict[str, Any] = {"timeout": timeout, "max_retries": 0}
            if api_key is not None:
                kwargs["api_key"] = api_key
            if base_url is not None:
                kwargs["base_url"] = base_url
            if http_client is not None:
                kwargs["http_client"] = http_client
            client = self._sdk.AsyncAnthropic(**kwargs)
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
                names = inspect.signature(self._client.messages.create).parameters
                self._known_params = frozenset(names) - {"timeout"}
            except (TypeError, ValueError, AttributeError):
                self._known_params = _FALLBACK_PARAMS
        return self._known_params

    @property
    def client(self) -> Any:
        """The underlying ``anthropic.AsyncAnthropic`` client."""
        return self._client

    def build_kwargs(self, request: ModelRequest) -> dict[str, Any]:
        """The keyword arguments of ``messages.create`` for ``request``."""
        system, turns = messages_to_anthropic(request.messages)
        params = dict(request.params)
        max_tokens = params.pop("max_tokens", None) or params.pop("max_completion_tokens", None)
        kwargs: dict[str, Any] = {
            "model": self.model,
            "max_tokens": int(max_tokens or self.max_tokens),
            "messages": turns,
        }
        if system:
            kwargs["system"] = system
        if request.tools:
            kwargs["tools"] = tools_to_anthropic(request.tools)
        if request.response_schema is not None and self.structured_output:
            kwargs["output_config"] = {
                "format": {"type": "json_schema", "schema": request.response_schema}
            }
        if "stop" in params and "stop_sequences" not in params:
            stop = params.pop("stop")
            params["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
        extra_body: dict[str, Any] = {}
        for key, value in params.items():
            if key in ("model", "messages", "tools", "system", "stream", "max_completion_tokens"):
                continue
            if key == "output_config" and "output_config" in kwargs:
                kwargs["output_config"] = {**value, **kwargs["output_config"]}
            elif key in self._sdk_params():
                kwargs[key] = value
            else:
                extra_body[key] = value
        if extra_body:
            kwargs["extra_body"] = {**(kwargs.get("extra_body") or {}), **extra_body}
        return kwargs

    async def request(self, request: ModelRequest) -> ModelResponse:
        kwargs = self.build_kwargs(request)
        try:
            message = await self._client.messages.create(**kwargs)
        except self._sdk.AnthropicError as exc:
            raise map_sdk_error(exc, self._sdk, self._name) from exc
        return response_from_anthropic(message, self._name)

    async def aclose(self) -> None:
        """Close the underlying HTTP client."""
        await self._client.close()

    def __repr__(self) -> str:
        return f"AnthropicModel({self.model!r})"
