"""FallbackModel: the first model that answers wins."""

from __future__ import annotations

import pytest

from tether.errors import ModelError, ModelTimeout
from tether.messages import Message, ModelRequest, ModelResponse
from tether.models.fallback import FallbackModel
from tether.models.scripted import ScriptedModel


def req() -> ModelRequest:
    return ModelRequest(messages=[Message(role="user", content="hi")])


async def test_primary_answers_without_touching_fallbacks() -> None:
    primary = ScriptedModel(["from a"], name="a")
    backup = ScriptedModel(["from b"], name="b")
    response = await FallbackModel(primary, backup).request(req())
    assert response.text == "from a"
    assert response.model == "a"
    assert response.meta["fallback_from"] == []
    assert backup.requests == []


async def test_fallback_used_when_primary_fails() -> None:
    primary = ScriptedModel([ModelError("a down", retryable=True)], name="a")
    second = ScriptedModel([ModelTimeout()], name="b")
    third = ScriptedModel(["from c"], name="c")
    response = await FallbackModel(primary, second, third).request(req())
    assert response.text == "from c"
    assert response.model == "c"
    assert response.meta["fallback_from"] == ["a", "b"]
    assert response.meta["fallback_errors"] == ["a down", "model call timed out"]
    assert len(primary.requests) == len(second.requests) == len(third.requests) == 1


async def test_response_model_set_by_inner_is_kept() -> None:
    primary = ScriptedModel([ModelError("down")], name="a")
    backup = ScriptedModel([ModelResponse(text="x", model="b-2024-01-01")], name="b")
    response = await FallbackModel(primary, backup).request(req())
    assert response.model == "b-2024-01-01"


async def test_on_predicate_stops_fallback() -> None:
    primary = ScriptedModel([ModelError("bad request", status=400)], name="a")
    backup = ScriptedModel(["never"], name="b")
    model = FallbackModel(primary, backup, on=lambda err: err.retryable)
    with pytest.raises(ModelError, match="bad request"):
        await model.request(req())
    assert backup.requests == []


async def test_all_failing_raises_last_with_others_chained() -> None:
    first = ModelError("a down", retryable=True, status=503)
    second = ModelError("b down", retryable=True, status=502)
    model = FallbackModel(ScriptedModel([first], name="a"), ScriptedModel([second], name="b"))
    with pytest.raises(ModelError) as info:
        await model.request(req())
    assert info.value is second
    assert info.value.__cause__ is first
    note = " ".join(info.value.__notes__)
    assert "a: a down" in note and "b: b down" in note


async def test_non_model_errors_propagate() -> None:
    backup = ScriptedModel(["never"], name="b")
    model = FallbackModel(ScriptedModel([KeyError("bug")], name="a"), backup)
    with pytest.raises(KeyError):
        await model.request(req())
    assert backup.requests == []


def test_name_lists_models() -> None:
    model = FallbackModel(ScriptedModel([], name="a"), ScriptedModel([], name="b"))
    assert model.name == "fallback:a,b"


async def test_existing_causes_are_kept() -> None:
    low_level = OSError("connection reset")
    second = ModelError("b down", retryable=True)
    second.__cause__ = low_level
    model = FallbackModel(
        ScriptedModel([ModelError("a down")], name="a"), ScriptedModel([second], name="b")
    )
    with pytest.raises(ModelError) as info:
        await model.request(req())
    assert info.value.__cause__ is low_level
    assert "a: a down" in " ".join(info.value.__notes__)
