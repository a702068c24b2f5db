"""CacheModel and MemoryCache: hits, misses, TTL and key normalisation."""

from __future__ import annotations

import pytest

from tether.errors import ModelError
from tether.messages import Message, ModelRequest, ModelResponse, ToolCall, Usage
from tether.models.cache import CacheBackend, CacheModel, MemoryCache, cache_key
from tether.models.scripted import ScriptedModel


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def req(content: str = "hi", **params: object) -> ModelRequest:
    return ModelRequest(messages=[Message(role="user", content=content)], params=dict(params))


async def test_miss_then_hit() -> None:
    inner = ScriptedModel(
        [ModelResponse(text="answer", usage=Usage(10, 5), cost_usd=0.25), "second"], name="m"
    )
    model = CacheModel(inner, MemoryCache())
    first = await model.request(req())
    assert first.meta["cache"] == "miss"
    assert first.cost_usd == 0.25
    hit = await model.request(req())
    assert hit.text == "answer"
    assert hit.meta["cache"] == "hit"
    assert hit.cost_usd == 0.0
    assert hit.meta["cached_cost_usd"] == 0.25
    assert hit.usage == Usage(10, 5)
    assert hit.model == "m"
    assert len(inner.requests) == 1


async def test_different_requests_miss() -> None:
    inner = ScriptedModel(["one", "two", "three"])
    model = CacheModel(inner, MemoryCache())
    assert (await model.request(req("a"))).text == "one"
    assert (await model.request(req("b"))).text == "two"
    assert (await model.request(req("a", temperature=0.5))).text == "three"
    assert len(inner.requests) == 3


async def test_ttl_expiry() -> None:
    clock = Clock()
    inner = ScriptedModel(["old", "new"])
    model = CacheModel(inner, MemoryCache(clock=clock), ttl=60)
    await model.request(req())
    clock.now = 59.9
    assert (await model.request(req())).text == "old"
    clock.now = 60.0
    fresh = await model.request(req())
    assert fresh.text == "new"
    assert fresh.meta["cache"] == "miss"


async def test_hits_do_not_share_state() -> None:
    model = CacheModel(ScriptedModel(["x"]), MemoryCache())
    await model.request(req())
    hit = await model.request(req())
    hit.meta["mutated"] = True
    again = await model.request(req())
    assert "mutated" not in again.meta


async def test_errors_are_not_cached() -> None:
    inner = ScriptedModel([ModelError("down"), "ok"])
    model = CacheModel(inner, MemoryCache())
    with pytest.raises(ModelError):
        await model.request(req())
    assert (await model.request(req())).text == "ok"


def conversation(call_id: str, arguments: str | dict[str, object]) -> ModelRequest:
    return ModelRequest(
        messages=[
            Message(role="user", content="find order"),
            Message(role="assistant", tool_calls=[ToolCall(call_id, "get_order", arguments)]),
            Message(role="tool", content="{}", tool_call_id=call_id),
        ],
        tools=[{"name": "get_order", "parameters": {"type": "object", "properties": {}}}],
        params={"temperature": 0, "top_p": 1},
    )


def test_key_ignores_dict_order_and_argument_form_and_ids() -> None:
    a = conversation("call_1", {"order_id": "#W1", "qty": 2})
    b = conversation("call_99", '{"qty": 2, "order_id": "#W1"}')
    b.params = {"top_p": 1, "temperature": 0}
    assert cache_key("m", a) == cache_key("m", b)


def test_key_depends_on_content_model_and_schema() -> None:
    base = conversation("c", {"order_id": "#W1"})
    other_args = conversation("c", {"order_id": "#W2"})
    with_schema = conversation("c", {"order_id": "#W1"})
    with_schema.response_schema = {"type": "object"}
    keys = {
        cache_key("m", base),
        cache_key("m2", base),
        cache_key("m", other_args),
        cache_key("m", with_schema),
    }
    assert len(keys) == 4
    assert len(cache_key("m", base)) == 64


def test_key_keeps_links_between_calls_and_results() -> None:
    def two_calls(result_for: str) -> ModelRequest:
        return ModelRequest(
            messages=[
                Message(
                    role="assistant",
                    tool_calls=[ToolCall("x", "f", {}), ToolCall("y", "g", {})],
                ),
                Message(role="tool", content="r", tool_call_id=result_for),
            ]
        )

    assert cache_key("m", two_calls("x")) != cache_key("m", two_calls("y"))


def test_memory_cache_bounds_entries_lru() -> None:
    cache = MemoryCache(max_entries=2)
    assert isinstance(cache, CacheBackend)
    cache.set("a", {"v": 1}, 100)
    cache.set("b", {"v": 2}, 100)
    assert cache.get("a") == {"v": 1}  # a is now most recent
    cache.set("c", {"v": 3}, 100)
    assert cache.get("b") is None
    assert cache.get("a") == {"v": 1}
    assert cache.get("c") == {"v": 3}
    assert len(cache) == 2
