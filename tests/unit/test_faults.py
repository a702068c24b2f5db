"""FaultModel: seeded rates, determinism, each fault kind, and not advancing the oracle."""

from __future__ import annotations

import json
import re
from typing import Literal

import pydantic
import pytest

from tether.errors import ModelError, ModelTimeout
from tether.messages import Message, ModelRequest, ModelResponse, ToolCall
from tether.models.faults import FaultKind, FaultModel, Rewindable
from tether.models.retry import RetryModel
from tether.models.router import tool_call_problems
from tether.models.scripted import ScriptedModel, call
from tether.tools import tool


@tool
def refund(
    order_id: str, amount: float, reason: Literal["damaged", "late"], notify: bool = True
) -> str:
    """Refund an order."""
    return "ok"


ARGS = {"order_id": "#W1001", "amount": 10.0, "reason": "late"}
PREVIOUS = ToolCall("prev_1", "refund", {"order_id": "#W0001", "amount": 1.0, "reason": "late"})


def req(history: bool = True) -> ModelRequest:
    messages = [Message(role="user", content="refund #W1001")]
    if history:
        messages += [
            Message(role="assistant", tool_calls=[PREVIOUS]),
            Message(role="tool", content="done", tool_call_id="prev_1"),
        ]
    return ModelRequest(messages=messages, tools=[refund.spec()])


def oracle() -> ScriptedModel:
    """Always proposes the same valid refund call."""
    return ScriptedModel(lambda r: call("refund", **ARGS))


async def outcome(model: FaultModel, request: ModelRequest) -> str:
    try:
        response = await model.request(request)
    except ModelError as err:
        return type(err).__name__ + str(err.status)
    return str(response.meta.get("fault", "clean")) + json.dumps(
        [c.to_dict() for c in response.tool_calls], sort_keys=True
    )


# ---------------------------------------------------------------- rates and determinism


async def test_float_rate_is_honoured_and_spread_over_kinds() -> None:
    model = FaultModel(oracle(), 0.4, seed=11)
    n = 4000
    for _ in range(n):
        await outcome(model, req())
    total = sum(model.injected.values())
    assert abs(total / n - 0.4) < 0.03
    assert set(model.injected) == set(FaultKind)
    for kind in FaultKind:
        assert abs(model.injected[kind] / n - 0.05) < 0.015, kind
    assert sum(model.skipped.values()) == 0
    assert len(model.log) == total


async def test_per_kind_rates_are_honoured() -> None:
    rates = {FaultKind.TIMEOUT: 0.1, "malformed_json": 0.25}
    model = FaultModel(oracle(), rates, seed=3)
    n = 4000
    for _ in range(n):
        await outcome(model, req())
    assert abs(model.injected[FaultKind.TIMEOUT] / n - 0.1) < 0.02
    assert abs(model.injected[FaultKind.MALFORMED_JSON] / n - 0.25) < 0.03
    assert set(model.injected) == {FaultKind.TIMEOUT, FaultKind.MALFORMED_JSON}


async def test_kinds_restricts_a_float_rate() -> None:
    model = FaultModel(oracle(), 0.5, seed=5, kinds=["rate_limit", FaultKind.SERVER_ERROR])
    for _ in range(400):
        await outcome(model, req())
    assert set(model.injected) == {FaultKind.RATE_LIMIT, FaultKind.SERVER_ERROR}


async def test_same_seed_same_faults_and_outputs() -> None:
    async def run(seed: int) -> list[str]:
        inner = ScriptedModel(lambda r: ToolCall("c1", "refund", dict(ARGS)))
        model = FaultModel(inner, 0.5, seed=seed)
        return [await outcome(model, req()) for _ in range(200)]

    first = await run(42)
    assert first == await run(42)
    assert first != await run(43)


async def test_zero_rate_passes_through() -> None:
    model = FaultModel(oracle(), 0.0, seed=1)
    for _ in range(50):
        response = await model.request(req())
        assert "fault" not in response.meta
        assert tool_call_problems(req(), response.tool_calls[0]) == []
    assert not model.injected


def test_bad_rates_rejected() -> None:
    with pytest.raises(ValueError):
        FaultModel(oracle(), {"timeout": 0.7, "rate_limit": 0.5}, seed=0)
    with pytest.raises(ValueError):
        FaultModel(oracle(), 1.5, seed=0)
    with pytest.raises(ValueError):
        FaultModel(oracle(), {"not_a_kind": 0.1}, seed=0)


# ---------------------------------------------------------------- each kind


def only(kind: FaultKind, inner: ScriptedModel | None = None) -> FaultModel:
    return FaultModel(inner or oracle(), {kind: 1.0}, seed=0)


async def test_malformed_json() -> None:
    for seed in range(20):
        model = FaultModel(oracle(), {FaultKind.MALFORMED_JSON: 1.0}, seed=seed)
        response = await model.request(req())
        (c,) = response.tool_calls
        assert response.meta["fault"] == "malformed_json"
        assert isinstance(c.arguments, str)
        with pytest.raises(ValueError):
            json.loads(c.arguments)
        assert "not valid JSON" in tool_call_problems(req(), c)[0]
    assert model.injected[FaultKind.MALFORMED_JSON] == 1


async def test_unknown_tool() -> None:
    response = await only(FaultKind.UNKNOWN_TOOL).request(req())
    (c,) = response.tool_calls
    assert response.meta["fault"] == "unknown_tool"
    assert c.name != "refund"
    assert tool_call_problems(req(), c) == [f"unknown tool {c.name!r}"]
    assert c.arguments == ARGS


async def test_wrong_type() -> None:
    seen = set()
    for seed in range(30):
        model = FaultModel(oracle(), {FaultKind.WRONG_TYPE: 1.0}, seed=seed)
        response = await model.request(req())
        detail = response.meta["fault_detail"]
        seen.add(detail["argument"])
        assert response.meta["fault"] == "wrong_type"
        assert type(detail["to"]) is not type(detail["from"])
        with pytest.raises(pydantic.ValidationError):
            refund.validate(response.tool_calls[0].arguments)  # type: ignore[arg-type]
    assert seen == {"order_id", "amount", "reason"}
    model = only(FaultKind.WRONG_TYPE, ScriptedModel([call("refund", order_id="#W1")]))
    response = await model.request(req())
    assert isinstance(response.tool_calls[0].arguments, dict)
    assert isinstance(response.tool_calls[0].arguments["order_id"], int)  # int where str expected


async def test_wrong_valid_changes_an_id_and_stays_valid() -> None:
    values = set()
    for seed in range(20):
        model = FaultModel(oracle(), {FaultKind.WRONG_VALID: 1.0}, seed=seed)
        response = await model.request(req())
        assert response.meta["fault"] == "wrong_valid"
        args = response.tool_calls[0].arguments
        assert isinstance(args, dict)
        refund.validate(args)  # still valid
        assert tool_call_problems(req(), response.tool_calls[0]) == []
        assert response.meta["fault_detail"]["argument"] == "order_id"
        assert args["order_id"] != ARGS["order_id"]
        assert re.fullmatch(r"#W\d{4}", args["order_id"])
        values.add(args["order_id"])
    assert len(values) > 3


async def test_wrong_valid_without_ids_uses_enum_number_or_flag() -> None:
    inner = ScriptedModel(
        lambda r: call("refund", order_id="abc", amount=10.0, reason="late", notify=True)
    )
    changed = set()
    for seed in range(30):
        model = FaultModel(inner, {FaultKind.WRONG_VALID: 1.0}, seed=seed)
        response = await model.request(req())
        detail = response.meta["fault_detail"]
        changed.add(detail["argument"])
        refund.validate(response.tool_calls[0].arguments)  # type: ignore[arg-type]
        if detail["argument"] == "reason":
            assert detail["to"] == "damaged"
        if detail["argument"] == "notify":
            assert detail["to"] is False
    assert changed == {"amount", "reason", "notify"}


async def test_repeated_call_reemits_previous_turn_without_calling_inner() -> None:
    inner = oracle()
    model = only(FaultKind.REPEATED_CALL, inner)
    response = await model.request(req())
    (c,) = response.tool_calls
    assert response.meta["fault"] == "repeated_call"
    assert (c.name, c.arguments) == (PREVIOUS.name, PREVIOUS.arguments)
    assert c.id != PREVIOUS.id
    assert inner.requests == []


async def test_repeated_call_skipped_on_first_turn() -> None:
    model = only(FaultKind.REPEATED_CALL)
    response = await model.request(req(history=False))
    assert "fault" not in response.meta
    assert model.skipped[FaultKind.REPEATED_CALL] == 1
    assert not model.injected


@pytest.mark.parametrize(
    ("kind", "error", "statuses"),
    [
        (FaultKind.TIMEOUT, ModelTimeout, {None}),
        (FaultKind.RATE_LIMIT, ModelError, {429}),
        (FaultKind.SERVER_ERROR, ModelError, {500, 502, 503}),
    ],
)
async def test_raising_kinds_do_not_call_inner(
    kind: FaultKind, error: type[ModelError], statuses: set[int | None]
) -> None:
    inner = oracle()
    model = only(kind, inner)
    with pytest.raises(error) as info:
        await model.request(req())
    assert info.value.retryable is True
    assert info.value.status in statuses
    if kind is FaultKind.RATE_LIMIT:
        assert info.value.retry_after == 0.01
    assert inner.requests == []
    assert model.injected[kind] == 1
    assert model.log == [(1, kind)]


async def test_corrupting_fault_on_text_answer_is_skipped() -> None:
    model = only(FaultKind.WRONG_TYPE, ScriptedModel(["all done"]))
    response = await model.request(req())
    assert response.text == "all done"
    assert "fault" not in response.meta
    assert model.skipped[FaultKind.WRONG_TYPE] == 1


# ---------------------------------------------------------------- not advancing the oracle


async def test_held_proposal_is_asked_again_after_a_fault() -> None:
    first, second = call("refund", **ARGS), call("refund", **{**ARGS, "order_id": "#W2"})
    inner = ScriptedModel([first, second])
    model = FaultModel(inner, {FaultKind.UNKNOWN_TOOL: 1.0}, seed=0)
    faulty = await model.request(req())
    assert faulty.tool_calls[0].name != "refund"
    assert faulty.tool_calls[0].id != first.id
    model.rates = {}  # no more faults
    again = await model.request(req())
    assert again.tool_calls[0].to_dict() == first.to_dict()
    assert "fault" not in again.meta
    assert (await model.request(req())).tool_calls[0].to_dict() == second.to_dict()
    assert len(inner.requests) == 2


async def test_fault_on_held_proposal_keeps_holding() -> None:
    first = call("refund", **ARGS)
    inner = ScriptedModel([first, "end"])
    model = FaultModel(inner, {FaultKind.MALFORMED_JSON: 1.0}, seed=0)
    await model.request(req())
    await model.request(req())
    model.rates = {FaultKind.TIMEOUT: 1.0}
    with pytest.raises(ModelTimeout):
        await model.request(req())
    model.rates = {}
    assert (await model.request(req())).tool_calls[0].to_dict() == first.to_dict()
    assert (await model.request(req())).text == "end"
    assert len(inner.requests) == 2


class RewindOracle:
    """A scripted oracle that can repeat its last proposal."""

    name = "oracle"

    def __init__(self, proposals: list[ToolCall | str]) -> None:
        self.proposals = proposals
        self.index = 0
        self.rewinds = 0

    async def request(self, request: ModelRequest) -> ModelResponse:
        item = self.proposals[self.index]
        self.index += 1
        if isinstance(item, str):
            return ModelResponse(text=item, model=self.name)
        return ModelResponse(tool_calls=[ToolCall(item.id, item.name, item.arguments)])

    def rewind(self) -> None:
        self.rewinds += 1
        self.index -= 1


async def test_rewindable_inner_is_rewound() -> None:
    first = call("refund", **ARGS)
    inner = RewindOracle([first, "end"])
    assert isinstance(inner, Rewindable)
    model = FaultModel(inner, {FaultKind.WRONG_VALID: 1.0}, seed=0)
    faulty = await model.request(req())
    assert faulty.meta["fault"] == "wrong_valid"
    assert inner.rewinds == 1
    model.rates = {}
    assert (await model.request(req())).tool_calls[0].to_dict() == first.to_dict()
    assert (await model.request(req())).text == "end"
    assert inner.index == 2


async def test_transient_faults_behind_retry_keep_the_ground_truth_sequence() -> None:
    truth = [call("refund", **{**ARGS, "order_id": f"#W{i}"}) for i in range(30)]
    inner = ScriptedModel(list(truth))
    faulty = FaultModel(inner, {"rate_limit": 0.3, "server_error": 0.2}, seed=9)

    async def no_sleep(seconds: float) -> None:
        return None

    model = RetryModel(faulty, max_attempts=50, sleep=no_sleep)
    got = [(await model.request(req())).tool_calls[0].to_dict() for _ in truth]
    assert got == [c.to_dict() for c in truth]
    assert sum(faulty.injected.values()) > 5
