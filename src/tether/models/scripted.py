"""ScriptedModel: a model whose decisions are written down in advance.

For tests and examples. Give it a queue of responses, or a function of the request:

    model = ScriptedModel([call("lookup", id=3), "All done."])
    model = ScriptedModel(lambda request: ...)

A queue item is a :class:`ModelResponse`, a string (final text), a :class:`ToolCall` or a list of
them (tool calls in one turn), or an Exception (raised). Usage is estimated deterministically.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from tether.errors import ModelError
from tether.messages import ModelRequest, ModelResponse, ToolCall, Usage
from tether.models.base import estimate_request_tokens, estimate_tokens

ScriptItem = ModelResponse | str | ToolCall | list[ToolCall] | BaseException
ScriptFunction = Callable[[ModelRequest], ScriptItem]

_call_ids = itertools.count(1)


def call(name: str, /, **arguments: Any) -> ToolCall:
    """A tool call for a script: ``call("get_order", order_id="#W1")``."""
    return ToolCall(id=f"call_{next(_call_ids)}", name=name, arguments=arguments)


def raw_call(name: str, arguments: str, /) -> ToolCall:
    """A tool call with literal argument text (e.g. malformed JSON, for tests)."""
    return ToolCall(id=f"call_{next(_call_ids)}", name=name, arguments=arguments)


def to_response(
    item: ScriptItem, request: ModelRequest, model_name: str, *, estimate: bool = True
) -> ModelResponse:
    """Turn a script item into a response, with estimated usage unless ``estimate`` is off."""
    if isinstance(item, BaseException):
        raise item
    if isinstance(item, ModelResponse):
        response = item
    elif isinstance(item, str):
        response = ModelResponse(text=item)
    elif isinstance(item, ToolCall):
        response = ModelResponse(tool_calls=[item])
    else:
        response = ModelResponse(tool_calls=list(item))
    if not response.model:
        response.model = model_name
    if estimate and response.usage.input_tokens == 0 and response.usage.output_tokens == 0:
        out = estimate_tokens(response.text) + sum(
            estimate_tokens(c.arguments_text()) + 2 for c in response.tool_calls
        )
        response.usage = Usage(estimate_request_tokens(request), out)
    return response


class ScriptedModel:
    """A model that answers from a script (queue or function). Ships for tests and examples."""

    def __init__(
        self,
        script: Iterable[ScriptItem] | ScriptFunction,
        *,
        name: str = "scripted",
        estimate_usage: bool = True,
    ) -> None:
        self._fn: ScriptFunction | None = script if callable(script) else None
        self._queue: deque[ScriptItem] = deque() if callable(script) else deque(script)
        self._name = name
        self._estimate_usage = estimate_usage
        self.requests: list[ModelRequest] = []
        self.record_requests = True

    @property
    def name(self) -> str:
        return self._name

    @property
    def remaining(self) -> int:
        """Items left in a queue script."""
        return len(self._queue)

    async def request(self, request: ModelRequest) -> ModelResponse:
        if self.record_requests:
            self.requests.append(request)
        if self._fn is not None:
            item = self._fn(request)
        elif self._queue:
            item = self._queue.popleft()
        else:
            raise ModelError("scripted model has no responses left", provider="scripted")
        return to_response(item, request, self._name, estimate=self._estimate_usage)
