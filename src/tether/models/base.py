"""The Model protocol: one async method.

Providers implement it; wrappers (retry, fallback, cache, budget, routing, faults) take a Model and
are a Model, so behaviour composes without branches in the step loop.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from tether.messages import ModelRequest, ModelResponse


@runtime_checkable
class Model(Protocol):
    """Anything that turns a :class:`ModelRequest` into a :class:`ModelResponse`."""

    @property
    def name(self) -> str:
        """Identifies the model in the journal and price tables (e.g. ``openai:gpt-4o-mini``)."""
        ...

    async def request(self, request: ModelRequest) -> ModelResponse:
        """Answer one request. Raise :class:`tether.errors.ModelError` on failure."""
        ...


def estimate_tokens(text: str) -> int:
    """A rough, deterministic token count (about four characters a token)."""
    return (len(text) + 3) // 4


def estimate_request_tokens(request: ModelRequest) -> int:
    """Rough input tokens of a request: messages plus tool schemas."""
    total = 0
    for m in request.messages:
        total += estimate_tokens(m.content) + 4
        for c in m.tool_calls:
            total += estimate_tokens(c.arguments_text()) + estimate_tokens(c.name)
    for t in request.tools:
        total += estimate_tokens(str(t))
    return total
