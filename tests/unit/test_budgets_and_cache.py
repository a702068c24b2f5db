"""Budgets (tokens, dollars, deadline, daily cap), priced calls and caching."""

from __future__ import annotations

from typing import Any

import pytest

from tether import Agent, Limits, ModelResponse, ScriptedModel, Usage, call, tool
from tether.engine import Runtime
from tether.journal import Store
from tether.journal.cache_backend import StoreCache
from tether.models.cache import CacheModel
from tether.models.fallback import FallbackModel
from tether.models.pricing import PriceTable

CALLS: list[str] = []


@tool(cache_ttl=0)
def per_run(key: str) -> str:
    """Cached within a run."""
    CALLS.append(f"run:{key}")
    return f"value {key}"


@tool(cache_ttl=600)
def shared(key: str) -> str:
    """Cached across runs for ten minutes."""
    CALLS.append(f"shared:{key}")
    return f"shared {key}"


@pytest.fixture(autouse=True)
def _clear() -> None:
    CALLS.clear()


PRICES = PriceTable.from_dict(
    {"priced": {"input": 1000.0, "output": 1000.0}}, include_defaults=False
)


def usage_model(n_calls: int, tokens: int = 100) -> ScriptedModel:
    items: list[Any] = [
        ModelResponse(tool_calls=[call("per_run", key=str(i))], usage=Usage(tokens, 10))
        for i in range(n_calls)
    ]
    items.append(ModelResponse(text="done", usage=Usage(tokens, 10)))
    return ScriptedModel(items, name="priced")


def agent(**limits: Any) -> Agent:
    return Agent(
        name="b", instructions="x", tools=[per_run, shared], limits=Limits(max_repeats=50, **limits)
    )


async def test_cost_of_each_call_is_journaled(sqlite_store: Store) -> None:
    rt = Runtime(sqlite_store, model=usage_model(2), prices=PRICES)
    result = await rt.run(agent(), "go")
    assert result.ok
    costs = [
        e.payload["response"]["cost_usd"]
        for e in sqlite_store.events(result.run_id)
        if e.type == "model_response"
    ]
    assert costs == pytest.approx([0.11, 0.11, 0.11])  # (100 + 10) tokens at $1000/Mtok
    assert sqlite_store.get_run(result.run_id).cost_usd == pytest.approx(0.33)


@pytest.mark.parametrize("budget", [0.05, 0.2, 0.5, 1.0])
async def test_dollar_budget_never_exceeded_by_more_than_one_call(
    sqlite_store: Store, budget: float
) -> None:
    rt = Runtime(sqlite_store, model=usage_model(40), prices=PRICES)
    result = await rt.run(agent(max_cost_usd=budget), "go")
    assert result.status == "budget_exceeded" and "cost budget" in (result.reason or "")
    one_call = 0.11
    assert result.cost_usd <= budget + one_call
    assert result.cost_usd <= budget  # the estimate before each call keeps it within the budget


async def test_token_budget(sqlite_store: Store) -> None:
    rt = Runtime(sqlite_store, model=usage_model(40, tokens=1000))
    result = await rt.run(agent(max_input_tokens=5000), "go")
    assert result.status == "budget_exceeded"
    assert result.input_tokens <= 5000 + 1000


async def test_deadline(sqlite_store: Store) -> None:
    now = [1000.0]

    def clock() -> float:
        now[0] += 5
        return now[0]

    rt = Runtime(sqlite_store, model=usage_model(40), clock=clock)
    result = await rt.run(agent(deadline_seconds=60), "go")
    assert result.status == "budget_exceeded" and "deadline" in (result.reason or "")


async def test_daily_cost_cap_spans_runs(sqlite_store: Store) -> None:
    results = []
    for _ in range(4):
        rt = Runtime(sqlite_store, model=usage_model(1), prices=PRICES)
        results.append(await rt.run(agent(max_cost_usd_per_day=0.5), "go"))
    statuses = [r.status for r in results]
    assert statuses[0] == "succeeded" and "budget_exceeded" in statuses
    spent = sum(r.cost_usd for r in results)
    assert spent <= 0.5 + 0.11
    assert "daily cost cap" in (results[-1].reason or "")


async def test_read_results_cached_per_run_and_across_runs(sqlite_store: Store) -> None:
    script = [call("per_run", key="a"), call("per_run", key="a"), call("shared", key="s"), "ok"]
    for _ in range(2):
        rt = Runtime(sqlite_store, model=ScriptedModel(list(script)))
        assert (await rt.run(agent(), "go")).ok
    # per-run: executed once in each run; shared: once in all
    assert CALLS == ["run:a", "shared:s", "run:a"]


async def test_response_cache_in_the_store_serves_a_second_run(sqlite_store: Store) -> None:
    inner = ScriptedModel([call("per_run", key="a"), "ok"])
    rt = Runtime(sqlite_store, model=CacheModel(inner, StoreCache(sqlite_store), ttl=60))
    assert (await rt.run(agent(), "go")).ok
    second = await Runtime(
        sqlite_store, model=CacheModel(ScriptedModel([]), StoreCache(sqlite_store), ttl=60)
    ).run(agent(), "go")
    assert second.ok  # the empty script was never asked: both answers came from the cache
    hits = [
        e.payload["response"]["meta"].get("cache")
        for e in sqlite_store.events(second.run_id)
        if e.type == "model_response"
    ]
    assert hits == ["hit", "hit"]


async def test_fallback_model_is_used_when_the_primary_fails(sqlite_store: Store) -> None:
    from tether.errors import ModelError

    primary = ScriptedModel(
        [ModelError("overloaded", retryable=True, status=529)] * 5, name="primary"
    )
    backup = ScriptedModel(["from the backup"], name="backup")
    rt = Runtime(sqlite_store, model=FallbackModel(primary, backup))
    result = await rt.run(agent(), "go")
    assert result.ok and result.output == "from the backup"
    response = next(
        e.payload["response"]
        for e in sqlite_store.events(result.run_id)
        if e.type == "model_response"
    )
    assert response["model"] == "backup" and response["meta"]["fallback_from"] == ["primary"]


async def test_daily_cap_reserves_the_estimate_settles_and_releases(store_url: str) -> None:
    """While a model call is under way its estimated cost is held on the daily counter (so other
    runs cannot spend it); the real cost replaces it after, and a failed call gives it back."""
    from tether.engine.budget import DAILY_COST
    from tether.errors import ModelError
    from tether.messages import ModelRequest

    day = 1_700_000_000.0
    window = int(day // 86_400) * 86_400
    seen: list[tuple[int, float]] = []

    with Store(store_url) as store:

        def answer(request: ModelRequest) -> ModelResponse:
            seen.append(store.counter(DAILY_COST, "b", window))
            if len(seen) == 1:
                raise ModelError("provider down", provider="scripted")
            return ModelResponse(text="ok", cost_usd=0.1)

        def runtime() -> Runtime:
            return Runtime(
                store,
                model=ScriptedModel(answer),
                clock=lambda: day,
                estimate_cost=lambda request: 0.3,
            )

        failed = await runtime().run(agent(max_cost_usd_per_day=1.0), "go")
        assert failed.status == "failed"
        assert store.counter(DAILY_COST, "b", window) == (0, 0.0)  # given back
        ok = await runtime().run(agent(max_cost_usd_per_day=1.0), "go")
        assert ok.ok
        assert seen == [(1, 0.3), (1, 0.3)]  # held during each call
        count, total = store.counter(DAILY_COST, "b", window)
        assert count == 1 and total == pytest.approx(0.1)  # settled to the real cost
