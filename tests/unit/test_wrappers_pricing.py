"""PriceTable, estimate_cost and PricedModel."""

from __future__ import annotations

from pathlib import Path

import pytest

from tether.messages import Message, ModelRequest, ModelResponse, Usage
from tether.models.base import estimate_request_tokens
from tether.models.cache import CacheModel, MemoryCache
from tether.models.pricing import Price, PricedModel, PriceTable, cost_estimator, estimate_cost
from tether.models.router import CascadeModel
from tether.models.scripted import ScriptedModel


def req() -> ModelRequest:
    return ModelRequest(messages=[Message(role="user", content="x" * 400)])


def test_cost_per_million_tokens() -> None:
    table = PriceTable({"m": Price(2.0, 8.0)})
    assert table.cost("m", Usage(1_000_000, 0)) == pytest.approx(2.0)
    assert table.cost("m", Usage(500_000, 250_000)) == pytest.approx(1.0 + 2.0)


def test_lookup_rules() -> None:
    table = PriceTable()
    assert table.lookup("openai:gpt-4o-mini") == table["gpt-4o-mini"]
    assert table.lookup("gpt-4o-mini-2024-07-18") == table["gpt-4o-mini"]
    assert table.lookup("gpt-4o-2024-08-06") == table["gpt-4o"]
    assert table.lookup("anthropic:claude-3-5-haiku-20241022") == table["claude-3-5-haiku"]
    assert table.lookup("local:smollm2-360m") == Price(0.0, 0.0)
    assert table.lookup("scripted") == Price(0.0, 0.0)
    assert table.lookup("localhost-model") is None
    assert table.lookup("mystery") is None
    with pytest.raises(KeyError):
        table.cost("mystery", Usage(1, 1))
    fallback = PriceTable(default=Price(1.0, 1.0))
    assert fallback.cost("mystery", Usage(1_000_000, 0)) == pytest.approx(1.0)


def test_defaults_are_optional_and_overridable() -> None:
    assert "gpt-4o" not in PriceTable({"x": (1, 2)}, include_defaults=False)
    assert PriceTable({"gpt-4o": {"input": 9, "output": 9}})["gpt-4o"] == Price(9.0, 9.0)


def test_load_from_dict_toml_yaml(tmp_path: Path) -> None:
    from_dict = PriceTable.from_dict({"models": {"a": {"input": 1, "output": 2}}})
    assert from_dict["a"] == Price(1.0, 2.0)
    toml = '[models]\n"acme:big" = { input = 3.0, output = 6.0 }\nsmall = [0.1, 0.2]\n'
    table = PriceTable.from_toml(toml, include_defaults=False)
    assert dict(table) == {"acme:big": Price(3.0, 6.0), "small": Price(0.1, 0.2)}
    yaml_text = "acme:big:\n  input: 3\n  output: 6\n"
    assert PriceTable.from_yaml(yaml_text)["acme:big"] == Price(3.0, 6.0)
    path = tmp_path / "prices.toml"
    path.write_text(toml)
    assert PriceTable.load(path)["small"] == Price(0.1, 0.2)
    with pytest.raises(ValueError):
        PriceTable.from_dict({"bad": {"input": 1}})
    with pytest.raises(ValueError):
        PriceTable.load(tmp_path / "prices.txt")


def test_estimate_cost_uses_request_tokens_and_max_output() -> None:
    table = PriceTable({"m": Price(1.0, 10.0)})
    request = req()
    expected = (estimate_request_tokens(request) * 1.0 + 1000 * 10.0) / 1_000_000
    assert estimate_cost("m", request, 1000, table) == pytest.approx(expected)
    assert estimate_cost("scripted", request, 1000) == 0.0


async def test_priced_model_sets_cost() -> None:
    inner = ScriptedModel([ModelResponse(text="a", usage=Usage(2_000_000, 1_000_000))], name="m")
    response = await PricedModel(inner, PriceTable({"m": Price(1.0, 4.0)})).request(req())
    assert response.cost_usd == pytest.approx(6.0)


async def test_priced_model_marks_unknown_price() -> None:
    response = await PricedModel(ScriptedModel(["a"], name="mystery")).request(req())
    assert response.cost_usd is None
    assert response.meta["price_unknown"] is True


async def test_cache_hit_stays_free() -> None:
    inner = ScriptedModel([ModelResponse(text="a", usage=Usage(1_000_000, 0))], name="m")
    model = PricedModel(CacheModel(inner, MemoryCache()), PriceTable({"m": Price(5.0, 5.0)}))
    assert (await model.request(req())).cost_usd == pytest.approx(5.0)
    assert (await model.request(req())).cost_usd == 0.0


async def test_priced_cascade_counts_both_calls() -> None:
    small = ScriptedModel(
        [ModelResponse(text="?", usage=Usage(1_000_000, 0), meta={"confidence": 0.1})],
        name="small",
    )
    large = ScriptedModel([ModelResponse(text="!", usage=Usage(1_000_000, 0))], name="large")
    table = PriceTable({"small": Price(1.0, 0.0), "large": Price(10.0, 0.0)})
    response = await PricedModel(CascadeModel(small, large), table).request(req())
    assert response.cost_usd == pytest.approx(11.0)


def test_cost_estimator_binds_model_and_output_cap() -> None:
    table = PriceTable({"m": Price(1.0, 10.0)})
    estimate = cost_estimator("m", 500, table)
    assert estimate(req()) == pytest.approx(estimate_cost("m", req(), 500, table))
    assert estimate(req()) > 0
    assert cost_estimator("mystery", 500)(req()) == 0.0
