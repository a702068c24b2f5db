"""CacheModel: answer a request seen before from a cache.

The key is exact-match on the normalised request: the model name, messages, tool schemas,
response schema and params are rendered as canonical JSON (sorted keys, no whitespace) and hashed
with SHA-256 (:func:`cache_key`). Normalising means:

* dict key order never matters;
* tool-call arguments given as JSON text and as a dict are the same request;
* tool-call ids are renumbered by first appearance (``c0``, ``c1``, ...) in both ``tool_calls``
  and ``tool_call_id``, since providers mint fresh ids on every call and they would otherwise
  defeat the cache after the first tool call.

A backend is anything with ``get(key) -> dict | None`` and ``set(key, value, ttl)``
(:class:`CacheBackend`); values are :meth:`ModelResponse.to_dict` dicts. :class:`MemoryCache`
ships here; a store-backed backend lives with the journal.

A hit returns the stored response with ``meta["cache"] = "hit"`` and ``cost_usd = 0``. Its usage
is kept, for reporting, but marked by the hit; the original cost is kept in
``meta["cached_cost_usd"]`` when it was known. A miss calls the inner model, stores its answer and
returns it with ``meta["cache"] = "miss"``. Errors are never cached.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from tether.messages import ModelRequest, ModelResponse
from tether.models.base import Model


@runtime_checkable
class CacheBackend(Protocol):
    """Where cached responses live. Values are JSON-compatible dicts."""

    def get(self, key: str) -> dict[str, Any] | None:
        """The value stored under ``key``, or ``None`` if absent or expired."""
        ...

    def set(self, key: str, value: dict[str, Any], ttl: float) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds."""
        ...


class MemoryCache:
    """An in-process :class:`CacheBackend` with per-entry TTL and an optional size bound.

    When ``max_entries`` is set, the least recently used entry is dropped to make room.
    """

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, max_entries: int | None = None
    ) -> None:
        self._clock = clock
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> dict[str, Any] | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if self._clock() >= expires:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return copy.deepcopy(value)

    def set(self, key: str, value: dict[str, Any], ttl: float) -> None:
        self._entries[key] = (self._clock() + ttl, copy.deepcopy(value))
        self._entries.move_to_end(key)
        if self.max_entries is not None:
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)


def _normal_arguments(arguments: str | dict[str, Any]) -> Any:
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except ValueError:
            return {"__raw__": arguments}
    return arguments


def normalise_request(model_name: str, request: ModelRequest) -> dict[str, Any]:
    """The request as a plain structure with ids renumbered and arguments parsed."""
    ids: dict[str, str] = {}

    def ref(call_id: str) -> str:
        return ids.setdefault(call_id, f"c{len(ids)}")

    messages: list[dict[str, Any]] = []
    for m in request.messages:
        data = m.to_dict()
        if m.tool_calls:
            data["tool_calls"] = [
                {"id": ref(c.id), "name": c.name, "arguments": _normal_arguments(c.arguments)}
                for c in m.tool_calls
            ]
        if m.tool_call_id is not None:
            data["tool_call_id"] = ref(m.tool_call_id)
        messages.append(data)
    return {
        "model": model_name,
        "messages": messages,
        "tools": request.tools,
        "response_schema": request.response_schema,
        "params": request.params,
    }


def cache_key(model_name: str, request: ModelRequest) -> str:
    """SHA-256 hex digest of the canonical JSON of the normalised request."""
    canonical = json.dumps(
        normalise_request(model_name, request),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=str,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class CacheModel:
    """Wraps a model with an exact-match response cache."""

    def __init__(self, inner: Model, backend: CacheBackend, *, ttl: float = 3600.0) -> None:
        self.inner = inner
        self.backend = backend
        self.ttl = ttl

    @property
    def name(self) -> str:
        return self.inner.name

    def key(self, request: ModelRequest) -> str:
        """The cache key of ``request`` for this model."""
        return cache_key(self.inner.name, request)

    async def request(self, request: ModelRequest) -> ModelResponse:
        key = self.key(request)
        stored = self.backend.get(key)
        if stored is not None:
            response = ModelResponse.from_dict(stored)
            if response.cost_usd:
                response.meta["cached_cost_usd"] = response.cost_usd
            response.cost_usd = 0.0
            response.meta["cache"] = "hit"
            return response
        response = await self.inner.request(request)
        self.backend.set(key, copy.deepcopy(response.to_dict()), self.ttl)
        response.meta["cache"] = "miss"
        return response
