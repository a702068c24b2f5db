"""CascadeModel, RouterModel and the tool-call validator."""

from __future__ import annotations

from typing import Literal

import pytest
from pydantic import BaseModel

from tether.errors import ModelError, UsageError
from tether.messages import Message, ModelRequest, ModelResponse, ToolCall
from tether.models.router import (
    CascadeModel,
    RouterModel,
    response_problems,
    schema_errors,
    tool_call_problems,
)
from tether.models.scripted import ScriptedModel, call, raw_call
from tether.tools import tool


class Address(BaseModel):
    city: str
    zip: int | None = None


@tool
def ship(order_id: str, qty: int, mode: Literal["air", "sea"], to: Address) -> str:
    """Ship an order."""
    return "shipped"


def req(**kwargs: object) -> ModelRequest:
    return ModelRequest(
        messages=[Message(role="user", content="ship #W1")],
        tools=[ship.spec()],
        **kwargs,  # type: ignore[arg-type]
    )


GOOD = {"order_id": "#W1", "qty": 2, "mode": "air", "to": {"city": "Oslo"}}


def problems(c: ToolCall) -> list[str]:
    return tool_call_problems(req(), c)


def test_valid_call_has_no_problems() -> None:
    assert problems(call("ship", **GOOD)) == []
    text = '{"order_id":"#W1","qty":2,"mode":"sea","to":{"city":"x"}}'
    assert problems(raw_call("ship", text)) == []
    assert problems(ToolCall("1", "ship", {**GOOD, "to": {"city": "x", "zip": None}})) == []


def test_unknown_tool() -> None:
    assert problems(call("ship_order", **GOOD)) == ["unknown tool 'ship_order'"]


def test_malformed_json() -> None:
    (problem,) = problems(raw_call("ship", '{"order_id": "#W1"'))
    assert "not valid JSON" in problem
    (problem,) = problems(raw_call("ship", "[1, 2]"))
    assert "JSON object" in problem


def test_schema_mismatches_are_reported() -> None:
    bad = {"order_id": 7, "qty": "2", "mode": "rail", "to": {"city": 3, "zip": "x"}, "extra": 1}
    found = problems(call("ship", **bad))
    assert any("order_id: expected string" in p for p in found)
    assert any("qty: expected integer" in p for p in found)
    assert any("'rail' is not one of" in p for p in found)
    assert any("to.city: expected string" in p for p in found)
    assert any("to.zip" in p for p in found)
    assert any("unexpected 'extra'" in p for p in found)
    missing = problems(call("ship", order_id="#W1"))
    assert any("missing 'qty'" in p for p in missing)


def test_schema_bounds() -> None:
    schema = {
        "type": "object",
        "properties": {
            "n": {"type": "integer", "minimum": 1, "maximum": 3},
            "s": {"type": "string", "minLength": 2, "pattern": "^[a-z]+$"},
            "xs": {"type": "array", "items": {"type": "number"}, "maxItems": 2},
        },
    }
    assert schema_errors({"n": 2, "s": "ab", "xs": [1, 2.5]}, schema) == []
    assert schema_errors({"n": 0, "s": "A", "xs": [1, "2", 3]}, schema) == [
        "$.n: below 1",
        "$.s: shorter than 2",
        "$.s: does not match '^[a-z]+$'",
        "$.xs: more than 2 items",
        "$.xs[1]: expected number, got string",
    ]


def test_response_schema_checked_on_final_text() -> None:
    request = req(response_schema={"type": "object", "required": ["answer"]})
    assert response_problems(request, ModelResponse(text='{"answer": 1}')) == []
    assert response_problems(request, ModelResponse(text="no json")) == ["output is not valid JSON"]
    assert response_problems(request, ModelResponse(text="{}")) == ["output: $: missing 'answer'"]


async def test_cascade_keeps_valid_small_answer() -> None:
    small = ScriptedModel([call("ship", **GOOD)], name="small")
    large = ScriptedModel(["unused"], name="large")
    response = await CascadeModel(small, large).request(req())
    assert response.tool_calls[0].name == "ship"
    assert response.meta["routed_to"] == "small"
    assert response.meta["escalated"] is False
    assert large.requests == []


@pytest.mark.parametrize(
    "bad",
    [
        call("unship", **GOOD),
        raw_call("ship", '{"order_id": '),
        call("ship", **{**GOOD, "qty": "two"}),
    ],
    ids=["unknown-tool", "malformed-json", "wrong-type"],
)
async def test_cascade_escalates_invalid_tool_call(bad: ToolCall) -> None:
    small = ScriptedModel([bad], name="small")
    large = ScriptedModel([call("ship", **GOOD)], name="large")
    response = await CascadeModel(small, large).request(req())
    assert response.model == "large"
    assert response.meta["routed_to"] == "large"
    assert response.meta["escalated"] is True
    assert response.meta["escalation_reasons"][0].startswith("invalid: ")
    assert response.meta["prior_calls"][0]["model"] == "small"
    assert len(large.requests) == 1


async def test_cascade_escalates_on_low_confidence_only_below_threshold() -> None:
    sure = ModelResponse(text="fine", meta={"confidence": 0.9})
    unsure = ModelResponse(text="maybe", meta={"confidence": 0.2})
    small = ScriptedModel([sure, unsure], name="small")
    large = ScriptedModel(["certain"], name="large")
    model = CascadeModel(small, large, min_confidence=0.5)
    assert (await model.request(req())).text == "fine"
    escalated = await model.request(req())
    assert escalated.text == "certain"
    assert escalated.meta["escalation_reasons"] == ["low confidence: 0.2 < 0.5"]


async def test_cascade_escalates_by_rule() -> None:
    small = ScriptedModel(["short", "a long enough answer"], name="small")
    large = ScriptedModel(["from large"], name="large")
    model = CascadeModel(
        small, large, escalate_if=lambda request, response: len(response.text) < 10 or None
    )
    assert (await model.request(req())).text == "from large"
    assert (await model.request(req())).text == "a long enough answer"


async def test_cascade_escalates_on_small_error_unless_disabled() -> None:
    small = ScriptedModel([ModelError("down"), ModelError("down again")], name="small")
    large = ScriptedModel(["from large"], name="large")
    response = await CascadeModel(small, large).request(req())
    assert response.meta["escalation_reasons"] == ["error: down"]
    assert "prior_calls" not in response.meta
    with pytest.raises(ModelError):
        await CascadeModel(small, large, escalate_on_error=False).request(req())


async def test_cascade_sums_costs_when_both_priced() -> None:
    small = ScriptedModel([ModelResponse(text="?", cost_usd=0.01, meta={"confidence": 0.0})])
    large = ScriptedModel([ModelResponse(text="!", cost_usd=0.5)], name="large")
    response = await CascadeModel(small, large).request(req())
    assert response.cost_usd == pytest.approx(0.51)
    assert response.meta["prior_calls"][0]["cost_usd"] == 0.01


async def test_router_routes_by_choice() -> None:
    fast = ScriptedModel(["fast answer"], name="fast")
    deep = ScriptedModel(["deep answer"], name="deep")
    model = RouterModel(
        {"fast": fast, "deep": deep},
        lambda r: "deep" if "think" in r.messages[-1].content else "fast",
    )
    thought = await model.request(ModelRequest(messages=[Message(role="user", content="think")]))
    assert thought.text == "deep answer"
    assert thought.meta["routed_to"] == "deep"
    assert thought.meta["route"] == "deep"
    assert (await model.request(req())).text == "fast answer"
    assert model.name == "router:fast,deep"


async def test_router_unknown_route() -> None:
    fast = ScriptedModel(["fast answer"], name="fast")
    with pytest.raises(UsageError, match="unknown route 'nope'"):
        await RouterModel({"fast": fast}, lambda r: "nope").request(req())
    routed = await RouterModel({"fast": fast}, lambda r: "nope", default="fast").request(req())
    assert routed.meta["route"] == "fast"
    with pytest.raises(ValueError):
        RouterModel({"fast": fast}, lambda r: "fast", default="slow")
