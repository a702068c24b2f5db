"""RetryModel: backoff, jitter, Retry-After, and giving up."""

from __future__ import annotations

import random

import pytest

from tether.errors import ModelError, ModelTimeout
from tether.messages import Message, ModelRequest
from tether.models.retry import RetryModel
from tether.models.scripted import ScriptedModel


class Sleeps:
    """Records requested delays instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def req() -> ModelRequest:
    return ModelRequest(messages=[Message(role="user", content="hi")])


def transient(status: int = 503, retry_after: float | None = None) -> ModelError:
    return ModelError(f"status {status}", retryable=True, status=status, retry_after=retry_after)


async def test_retries_retryable_errors_with_exponential_backoff() -> None:
    inner = ScriptedModel([transient(), ModelTimeout(), transient(429), "done"])
    sleeps = Sleeps()
    model = RetryModel(inner, base_delay=0.5, jitter=False, sleep=sleeps)
    response = await model.request(req())
    assert response.text == "done"
    assert sleeps.delays == [0.5, 1.0, 2.0]
    assert response.meta["attempts"] == 4
    errors = response.meta["retry_errors"]
    assert [e["error"] for e in errors] == ["ModelError", "ModelTimeout", "ModelError"]
    assert [e["status"] for e in errors] == [503, None, 429]
    assert [e["delay"] for e in errors] == [0.5, 1.0, 2.0]


async def test_first_try_success_records_one_attempt() -> None:
    sleeps = Sleeps()
    response = await RetryModel(ScriptedModel(["ok"]), sleep=sleeps).request(req())
    assert response.meta["attempts"] == 1
    assert "retry_errors" not in response.meta
    assert sleeps.delays == []


async def test_backoff_is_capped_by_max_delay() -> None:
    inner = ScriptedModel([transient()] * 4 + ["ok"])
    sleeps = Sleeps()
    model = RetryModel(
        inner, max_attempts=5, base_delay=1.0, max_delay=3.0, jitter=False, sleep=sleeps
    )
    await model.request(req())
    assert sleeps.delays == [1.0, 2.0, 3.0, 3.0]


async def test_retry_after_is_waited_at_least() -> None:
    inner = ScriptedModel([transient(429, retry_after=5.0), "ok"])
    sleeps = Sleeps()
    model = RetryModel(inner, base_delay=0.5, jitter=False, sleep=sleeps)
    response = await model.request(req())
    assert sleeps.delays == [5.0]
    assert response.meta["retry_errors"][0]["retry_after"] == 5.0


async def test_retry_after_shorter_than_backoff_keeps_backoff() -> None:
    inner = ScriptedModel([transient(429, retry_after=0.1), "ok"])
    sleeps = Sleeps()
    await RetryModel(inner, base_delay=2.0, jitter=False, sleep=sleeps).request(req())
    assert sleeps.delays == [2.0]


async def test_retry_after_is_capped() -> None:
    inner = ScriptedModel([transient(429, retry_after=600.0), "ok"])
    sleeps = Sleeps()
    model = RetryModel(inner, jitter=False, sleep=sleeps, max_retry_after=10.0)
    await model.request(req())
    assert sleeps.delays == [10.0]


async def test_full_jitter_draws_from_zero_to_backoff() -> None:
    inner = ScriptedModel([transient(), transient(), transient(), "ok"])
    sleeps = Sleeps()
    model = RetryModel(inner, base_delay=1.0, sleep=sleeps, rng=random.Random(7))
    await model.request(req())
    expected = random.Random(7)
    assert sleeps.delays == [expected.uniform(0, b) for b in (1.0, 2.0, 4.0)]
    assert all(0 <= d <= b for d, b in zip(sleeps.delays, (1.0, 2.0, 4.0), strict=True))


async def test_jitter_still_honours_retry_after() -> None:
    inner = ScriptedModel([transient(429, retry_after=3.0), "ok"])
    sleeps = Sleeps()
    await RetryModel(inner, base_delay=1.0, sleep=sleeps, rng=random.Random(1)).request(req())
    assert sleeps.delays == [3.0]


async def test_non_retryable_error_raises_at_once() -> None:
    inner = ScriptedModel([ModelError("bad request", status=400), "never"])
    sleeps = Sleeps()
    with pytest.raises(ModelError, match="bad request"):
        await RetryModel(inner, sleep=sleeps).request(req())
    assert sleeps.delays == []
    assert len(inner.requests) == 1
    assert inner.remaining == 1


async def test_gives_up_after_max_attempts_with_last_error() -> None:
    inner = ScriptedModel([transient(500), transient(502), transient(503), "never"])
    sleeps = Sleeps()
    model = RetryModel(inner, max_attempts=3, jitter=False, sleep=sleeps)
    with pytest.raises(ModelError) as info:
        await model.request(req())
    assert info.value.status == 503
    assert any("3 attempts" in note for note in info.value.__notes__)
    assert sleeps.delays == [0.5, 1.0]
    assert inner.remaining == 1


async def test_other_exceptions_are_not_retried() -> None:
    inner = ScriptedModel([RuntimeError("bug"), "never"])
    with pytest.raises(RuntimeError):
        await RetryModel(inner, sleep=Sleeps()).request(req())
    assert inner.remaining == 1


def test_rejects_bad_settings() -> None:
    with pytest.raises(ValueError):
        RetryModel(ScriptedModel([]), max_attempts=0)
    assert RetryModel(ScriptedModel([], name="p")).name == "p"
