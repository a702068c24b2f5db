"""A response-cache backend kept in the store, so cached answers survive restarts and are shared
by every process using the same database."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from tether.journal.store import Store


class StoreCache:
    """:class:`tether.models.cache.CacheBackend` on the store's ``cache`` table (TTL per entry)."""

    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock

    def get(self, key: str) -> dict[str, Any] | None:
        text = self.store.cache_get(key, now=self.clock())
        if text is None:
            return None
        value: dict[str, Any] = json.loads(text)
        return value

    def set(self, key: str, value: dict[str, Any], ttl: float) -> None:
        self.store.cache_set(key, json.dumps(value, default=str), ttl, now=self.clock())
