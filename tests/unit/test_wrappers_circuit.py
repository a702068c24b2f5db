"""CircuitBreakerModel: closed -> open -> half-open -> closed."""

from __future__ import annotations

import asyncio

import pytest

from tether.errors import ModelError
from tether.messages import Message, ModelRequest, ModelResponse
from tether.models.circuit import CircuitBreakerModel, CircuitOpen
from tether.models.scripted import ScriptedModel


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def req() -> ModelRequest:
    return ModelRequest(messages=[Message(role="user", content="hi")])


def down() -> ModelError:
    return ModelError("503", retryable=True, status=503, provider="p")


async def fail(model: CircuitBreakerModel, times: int) -> None:
    for _ in range(times):
        with pytest.raises(ModelError):
            await model.request(req())


async def test_opens_after_consecutive_failures_and_fails_fast() -> None:
    inner = ScriptedModel([down(), down(), down(), "unreached"], name="prov")
    clock = Clock()
    breaker = CircuitBreakerModel(inner, failure_threshold=3, reset_after=30, clock=clock)
    await fail(breaker, 2)
    assert breaker.state == "closed"
    await fail(breaker, 1)
    assert breaker.state == "open"
    clock.now += 10
    with pytest.raises(CircuitOpen) as info:
        await breaker.request(req())
    err = info.value
    assert "circuit open for prov" in str(err)
    assert err.retryable is True
    assert err.retry_after == pytest.approx(20.0)
    assert err.provider == "prov"
    assert len(inner.requests) == 3  # the open circuit did not call the provider
    assert inner.remaining == 1


async def test_half_open_trial_success_closes() -> None:
    inner = ScriptedModel([down(), down(), "recovered", "again"])
    clock = Clock()
    breaker = CircuitBreakerModel(inner, failure_threshold=2, reset_after=30, clock=clock)
    await fail(breaker, 2)
    clock.now += 29.9
    assert breaker.state == "open"
    clock.now += 0.1
    assert breaker.state == "half_open"
    assert (await breaker.request(req())).text == "recovered"
    assert breaker.state == "closed"
    assert breaker.failures == 0
    assert (await breaker.request(req())).text == "again"


async def test_half_open_trial_failure_reopens() -> None:
    inner = ScriptedModel([down(), down(), down(), "ok"])
    clock = Clock()
    breaker = CircuitBreakerModel(inner, failure_threshold=2, reset_after=30, clock=clock)
    await fail(breaker, 2)
    clock.now += 30
    await fail(breaker, 1)  # the trial call reaches the provider and fails
    assert len(inner.requests) == 3
    assert breaker.state == "open"
    clock.now += 29
    with pytest.raises(CircuitOpen):
        await breaker.request(req())
    clock.now += 1
    assert (await breaker.request(req())).text == "ok"


async def test_success_resets_the_failure_run() -> None:
    inner = ScriptedModel([down(), down(), "ok", down(), down(), "ok2"])
    breaker = CircuitBreakerModel(inner, failure_threshold=3, clock=Clock())
    await fail(breaker, 2)
    await breaker.request(req())
    await fail(breaker, 2)
    assert breaker.state == "closed"
    assert (await breaker.request(req())).text == "ok2"


async def test_non_retryable_errors_do_not_trip() -> None:
    bad = ModelError("400", status=400)
    inner = ScriptedModel([bad, bad, bad, "ok"])
    breaker = CircuitBreakerModel(inner, failure_threshold=2, clock=Clock())
    await fail(breaker, 3)
    assert breaker.state == "closed"
    assert (await breaker.request(req())).text == "ok"


async def test_custom_counting_rule() -> None:
    bad = ModelError("401", status=401)
    inner = ScriptedModel([bad, bad, "unreached"])
    breaker = CircuitBreakerModel(
        inner, failure_threshold=2, clock=Clock(), counts=lambda e: e.status == 401
    )
    await fail(breaker, 2)
    with pytest.raises(CircuitOpen):
        await breaker.request(req())


class Gate:
    """Fails once, then answers only when released (to hold a trial call open)."""

    name = "gate"

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.calls = 0

    async def request(self, request: ModelRequest) -> ModelResponse:
        self.calls += 1
        if self.calls == 1:
            raise down()
        await self.release.wait()
        return ModelResponse(text="through")


async def test_half_open_allows_one_trial_at_a_time() -> None:
    gate = Gate()
    clock = Clock()
    breaker = CircuitBreakerModel(gate, failure_threshold=1, reset_after=5, clock=clock)
    await fail(breaker, 1)
    assert breaker.state == "open"
    clock.now += 5
    trial = asyncio.create_task(breaker.request(req()))
    await asyncio.sleep(0)
    with pytest.raises(CircuitOpen):
        await breaker.request(req())
    gate.release.set()
    assert (await trial).text == "through"
    assert gate.calls == 2
    assert breaker.state == "closed"


def test_rejects_bad_threshold() -> None:
    with pytest.raises(ValueError):
        CircuitBreakerModel(ScriptedModel([]), failure_threshold=0)
