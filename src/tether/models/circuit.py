"""CircuitBreakerModel: stop calling a provider that keeps failing.

One breaker guards one wrapped model (so, one provider). States:

``closed``
    Calls go through. Each failure that counts (by default a *retryable* ``ModelError``: timeouts,
    429, 5xx) adds to a run of consecutive failures; any answer resets it. After
    ``failure_threshold`` consecutive failures the breaker opens.
``open``
    Calls fail at once with :class:`CircuitOpen` (a retryable ``ModelError`` whose
    ``retry_after`` is the time left), without touching the provider. After ``reset_after``
    seconds the breaker is half-open.
``half_open``
    One trial call goes through (others still fail fast while it runs). Success closes the breaker;
    a counted failure opens it again for another ``reset_after``.

Other exceptions (cancellation, say) leave the counts alone. A non-retryable error (a 400) means
the provider answered, so it counts as the provider being up.

Put the breaker outside a :class:`~tether.models.retry.RetryModel` to count a failure only once
retries are spent, and inside a :class:`~tether.models.fallback.FallbackModel` so that an open
circuit moves on to the next provider at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

from tether.errors import CircuitOpen, ModelError
from tether.messages import ModelRequest, ModelResponse
from tether.models.base import Model

State = Literal["closed", "open", "half_open"]


def _counts(err: ModelError) -> bool:
    return err.retryable


class CircuitBreakerModel:
    """Wraps a model with a circuit breaker (closed -> open -> half-open -> closed)."""

    def __init__(
        self,
        inner: Model,
        *,
        failure_threshold: int = 5,
        reset_after: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        counts: Callable[[ModelError], bool] = _counts,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        self.inner = inner
        self.failure_threshold = failure_threshold
        self.reset_after = reset_after
        self._clock = clock
        self._counts = counts
        self.failures = 0
        self._opened_at: float | None = None
        self._trial_running = False

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def state(self) -> State:
        """The breaker's state now."""
        if self._opened_at is None:
            return "closed"
        if self._clock() - self._opened_at >= self.reset_after:
            return "half_open"
        return "open"

    def _reject(self) -> CircuitOpen:
        assert self._opened_at is not None
        left = max(0.0, self.reset_after - (self._clock() - self._opened_at))
        return CircuitOpen(
            f"circuit open for {self.inner.name}",
            retryable=True,
            retry_after=left,
            provider=self.inner.name,
        )

    async def request(self, request: ModelRequest) -> ModelResponse:
        state = self.state
        if state == "open" or (state == "half_open" and self._trial_running):
            raise self._reject()
        trial = state == "half_open"
        if trial:
            self._trial_running = True
        try:
            response = await self.inner.request(request)
        except ModelError as err:
            if self._counts(err):
                self._failed()
            else:
                self._succeeded()
            raise
        else:
            self._succeeded()
            return response
        finally:
            if trial:
                self._trial_running = False

    def _failed(self) -> None:
        self.failures += 1
        if self._opened_at is not None or self.failures >= self.failure_threshold:
            self._opened_at = self._clock()

    def _succeeded(self) -> None:
        self.failures = 0
        self._opened_at = None
