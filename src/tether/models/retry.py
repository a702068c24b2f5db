"""RetryModel: retry transient model failures with exponential backoff.

Only :class:`~tether.errors.ModelError` with ``retryable=True`` is retried (timeouts, 429, 5xx);
anything else is raised at once. The delay before retry ``n`` (1-based) is

    backoff = min(max_delay, base_delay * 2 ** (n - 1))
    delay   = uniform(0, backoff) if jitter else backoff          # "full jitter"
    delay   = max(delay, min(retry_after, max_retry_after))       # when the provider asked

so a provider's ``Retry-After`` is always waited out, but never for longer than
``max_retry_after``. ``sleep`` and ``rng`` are injectable so tests can record delays without
waiting.

The response says what it took: ``meta["attempts"]`` is the number of calls made and
``meta["retry_errors"]`` lists each failure that was retried (attempt, error type, message, status,
the delay waited), so the runtime can journal retries. When every attempt fails, the last error is
raised with a note giving the attempt count.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

from tether.errors import ModelError
from tether.messages import ModelRequest, ModelResponse
from tether.models.base import Model

Sleep = Callable[[float], Awaitable[None]]


class RetryModel:
    """Wraps a model and retries retryable :class:`ModelError` with backoff and jitter."""

    def __init__(
        self,
        inner: Model,
        *,
        max_attempts: int = 4,
        base_delay: float = 0.5,
        max_delay: float = 30.0,
        jitter: bool = True,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
        max_retry_after: float = 60.0,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if base_delay < 0 or max_delay < 0 or max_retry_after < 0:
            raise ValueError("delays must not be negative")
        self.inner = inner
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.jitter = jitter
        self.max_retry_after = max_retry_after
        self._sleep = sleep
        self._rng = rng if rng is not None else random.Random()

    @property
    def name(self) -> str:
        return self.inner.name

    def delay(self, retry: int, error: ModelError) -> float:
        """Seconds to wait before retry number ``retry`` (1-based) after ``error``."""
        backoff = min(self.max_delay, self.base_delay * 2 ** (retry - 1))
        wait = self._rng.uniform(0, backoff) if self.jitter else backoff
        if error.retry_after is not None:
            wait = max(wait, min(max(error.retry_after, 0.0), self.max_retry_after))
        return wait

    async def request(self, request: ModelRequest) -> ModelResponse:
        seen: list[dict[str, Any]] = []
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await self.inner.request(request)
            except ModelError as err:
                if not err.retryable or attempt >= self.max_attempts:
                    if seen:
                        err.add_note(f"gave up after {attempt} attempts")
                    raise
                wait = self.delay(attempt, err)
                seen.append(_describe(attempt, err, wait))
                await self._sleep(wait)
                continue
            response.meta["attempts"] = attempt
            if seen:
                response.meta["retry_errors"] = seen
            return response


def _describe(attempt: int, err: ModelError, delay: float) -> dict[str, Any]:
    return {
        "attempt": attempt,
        "error": type(err).__name__,
        "message": str(err),
        "status": err.status,
        "retry_after": err.retry_after,
        "delay": delay,
    }
