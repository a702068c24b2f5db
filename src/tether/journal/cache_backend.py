"""The response cache kept in the store, so cached answers survive restarts and are shared by
every process using the same database: the store's ``cache`` table (:class:`CacheRows`) and the
model wrappers' backend on it (:class:`StoreCache`)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from tether.journal.base import StoreBase
from tether.journal.protocols import CacheStore


class CacheRows(StoreBase):
    """The cache table: text under a key, until it expires."""

    def cache_get(self, key: str, now: float | None = None) -> str | None:
        cache = self.t["cache"]
        now = time.time() if now is None else now
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(cache.c.value).where(cache.c.key == key, cache.c.expires_at > now)
            ).first()
        return None if row is None else str(row[0])

    def cache_set(self, key: str, value: str, ttl: float, now: float | None = None) -> None:
        cache = self.t["cache"]
        now = time.time() if now is None else now
        with self._tx() as conn:
            conn.execute(cache.delete().where(cache.c.key == key))
            conn.execute(cache.insert().values(key=key, value=value, expires_at=now + ttl))


class StoreCache:
    """:class:`tether.models.cache.CacheBackend` on the store's ``cache`` table (TTL per entry)."""

    def __init__(self, store: CacheStore, *, clock: Callable[[], float] = time.time) -> None:
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
