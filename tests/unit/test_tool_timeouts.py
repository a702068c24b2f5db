"""Tool calls are bounded in time: by the tool's ``timeout``, the agent's ``tool_timeout`` and the
run's deadline. An overrunning read is an error the model sees; an overrunning side effect is in
doubt, as after a crash: escalated, or, for an idempotent tool, retried with the same key on
resume. Each tool here overruns by seconds, not forever, so the old behaviour fails the test
(the run waits it out) instead of hanging it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tether import Agent, Limits, ScriptedModel, ToolContext, call, tool
from tether.engine import Runtime
from tether.journal import Store

HANG = 3.0  # seconds an overrunning tool takes; every timeout here is far shorter
RAN: list[str] = []


@pytest.fixture(autouse=True)
def _clear() -> None:
    RAN.clear()


@tool(timeout=0.2)
def stuck_read(key: str) -> str:
    """A read whose backend does not answer."""
    time.sleep(HANG)
    RAN.append(f"read {key}")
    return "late"


@tool
async def stuck_async_read(key: str) -> str:
    """An async read that does not answer."""
    await asyncio.sleep(HANG)
    return "late"


@tool(effect="write", timeout=0.2)
def stuck_write(amount: int) -> str:
    """A payment whose provider does not answer."""
    time.sleep(HANG)
    RAN.append(f"paid {amount}")
    return "paid"


KEYS: list[str] = []


@tool(effect="write", idempotent=True, timeout=0.3)
def flaky_write(ctx: ToolContext, amount: int) -> str:
    """Hangs the first time; the provider deduplicates by idempotency key."""
    KEYS.append(ctx.idempotency_key)
    if len(KEYS) == 1:
        time.sleep(HANG)
    return "paid"


def agent(*tools: Any, **kw: Any) -> Agent:
    return Agent(name="slow", instructions="x", tools=list(tools), **kw)


def events(store: Store, run_id: str, type_: str) -> list[dict[str, Any]]:
    return [e.payload for e in store.events(run_id) if e.type == type_]


async def test_a_read_that_overruns_its_timeout_is_an_error_the_model_sees(store: Store) -> None:
    rt = Runtime(store, model=ScriptedModel([call("stuck_read", key="k"), "gave up"]))
    began = time.monotonic()
    result = await rt.run(agent(stuck_read), "go")
    assert time.monotonic() - began < HANG / 2
    assert result.ok and result.output == "gave up"
    (finished,) = events(store, result.run_id, "tool_finished")
    assert finished["ok"] is False and finished["timed_out"] is True
    assert finished["content"] == "stuck_read did not finish within 0.2s"
    assert RAN == []  # its late result is discarded


async def test_the_agent_default_bounds_tools_without_a_timeout(store: Store) -> None:
    rt = Runtime(store, model=ScriptedModel([call("stuck_async_read", key="k"), "gave up"]))
    began = time.monotonic()
    result = await rt.run(agent(stuck_async_read, tool_timeout=0.2), "go")
    assert time.monotonic() - began < HANG / 2
    (finished,) = events(store, result.run_id, "tool_finished")
    assert finished["ok"] is False and "within 0.2s" in finished["content"]


async def test_the_run_deadline_bounds_a_tool_call(store: Store) -> None:
    rt = Runtime(store, model=ScriptedModel([call("stuck_async_read", key="k"), "never asked"]))
    began = time.monotonic()
    result = await rt.run(agent(stuck_async_read, limits=Limits(deadline_seconds=0.3)), "go")
    assert time.monotonic() - began < HANG / 2
    assert result.status == "budget_exceeded" and "deadline" in (result.reason or "")
    (finished,) = events(store, result.run_id, "tool_finished")
    assert finished["timed_out"] is True


async def test_a_side_effect_that_overruns_is_in_doubt_and_escalates(store: Store) -> None:
    rt = Runtime(store, model=ScriptedModel([call("stuck_write", amount=5), "never asked"]))
    began = time.monotonic()
    result = await rt.run(agent(stuck_write), "go")
    assert time.monotonic() - began < HANG / 2
    assert result.status == "escalated" and "in doubt" in (result.reason or "")
    assert "did not finish within 0.2s" in (result.reason or "")
    # its intent is journaled, its result is not
    assert len(events(store, result.run_id, "tool_started")) == 1
    assert events(store, result.run_id, "tool_finished") == []


async def test_an_idempotent_side_effect_in_doubt_is_retried_with_its_key_on_resume(
    store: Store,
) -> None:
    KEYS.clear()
    first = Runtime(store, model=ScriptedModel([call("flaky_write", amount=5)]))
    result = await first.run(agent(flaky_write), "go")
    assert result.status == "waiting_input"
    assert result.waiting_for is not None and result.waiting_for["kind"] == "in_doubt"
    assert events(store, result.run_id, "tool_finished") == []
    resumed = await Runtime(store, model=ScriptedModel(["paid once"])).resume(
        result.run_id, agent(flaky_write)
    )
    assert resumed.ok and resumed.output == "paid once"
    assert len(KEYS) == 2 and KEYS[0] == KEYS[1]  # the same call, the same idempotency key
    (finished,) = events(store, result.run_id, "tool_finished")
    assert finished["ok"] is True and finished["content"] == "paid"


def test_timeouts_must_be_positive() -> None:
    with pytest.raises(ValueError, match="timeout"):
        tool(timeout=0)(lambda: None)
    with pytest.raises(ValueError, match="tool_timeout"):
        Agent(name="a", instructions="x", tool_timeout=-1)
