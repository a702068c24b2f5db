"""A ``max_total`` limit counts only real, non-negative amounts of calls that ran.

A negative amount would lower the counter and a non-finite one poison it, so both are refused;
a call whose tool fails gives its reservation back, so a rejected call does not use up the cap.
Each test runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from tether import Agent, Limits, ScriptedModel, ToolError, call, tool
from tether.engine import Runtime
from tether.journal import Store
from tether.policy import Limit
from tether.policy.config import load_policy

DAY = 86_400
NOW = 1_700_000_000.0

POLICY = """
[[limit]]
name = "refund-dollars"
tools = ["refund"]
amount = "amount"
max_total = 500
window = "1d"
"""


def refund_tool(paid: list[float], *, fail_over: float | None = None) -> Any:
    @tool(effect="write")
    def refund(amount: float) -> str:
        """Refund money; the payment system rejects negative amounts (and, in some tests,
        large ones)."""
        if amount < 0 or (fail_over is not None and amount > fail_over):
            raise ToolError(f"payment system rejected a refund of {amount}")
        paid.append(amount)
        return f"refunded {amount}"

    return refund


def limits_from(tmp_path: Path) -> list[Limit]:
    path = tmp_path / "policy.toml"
    path.write_text(textwrap.dedent(POLICY), encoding="utf-8")
    return load_policy(path).limits


async def run_refunds(
    store: Store, limits: list[Limit], refund: Any, amounts: list[float]
) -> tuple[str, Runtime]:
    agent = Agent(
        name="desk",
        instructions="refund",
        tools=[refund],
        limits=Limits(max_consecutive_failures=100, max_repeats=100),
    )
    script: list[Any] = [call("refund", amount=a) for a in amounts] + ["done"]
    rt = Runtime(store, model=ScriptedModel(script), limits=limits)
    rt.policy.clock = lambda: NOW
    result = await rt.run(agent, "refund")
    assert result.status == "succeeded", result
    return result.run_id, rt


def decisions(store: Store, run_id: str) -> list[dict[str, Any]]:
    return [e.payload for e in store.events(run_id) if e.type == "policy_decision"]


def dollars(store: Store) -> tuple[int, float]:
    return store.counter("refund-dollars", "desk|*", int(NOW // DAY) * DAY)


async def test_a_negative_amount_is_refused_and_cannot_lower_the_total(
    store_url: str, tmp_path: Path
) -> None:
    paid: list[float] = []
    with Store(store_url) as store:
        run_id, _ = await run_refunds(
            store, limits_from(tmp_path), refund_tool(paid), [-1_000_000, 200, 200, 200, 200, 200]
        )
        assert paid == [200, 200]  # $400; a third $200 would break the $500 cap
        assert dollars(store) == (2, 400.0)
        denied = decisions(store, run_id)
        assert [d["rule"] for d in denied] == ["refund-dollars"] * 4
        assert "finite number >= 0" in denied[0]["reason"] and "-1000000" in denied[0]["reason"]


async def test_a_call_the_tool_rejects_gives_its_reservation_back(
    store_url: str, tmp_path: Path
) -> None:
    paid: list[float] = []
    with Store(store_url) as store:
        run_id, _ = await run_refunds(
            store, limits_from(tmp_path), refund_tool(paid, fail_over=250), [300, 200, 200, 200]
        )
        # the rejected $300 never happened: two $200 refunds fit, the third does not
        assert paid == [200, 200]
        assert dollars(store) == (2, 400.0)
        assert [d["rule"] for d in decisions(store, run_id)] == ["refund-dollars"]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1.0, "lots"])
async def test_a_python_limit_refuses_amounts_it_cannot_count(store_url: str, bad: Any) -> None:
    paid: list[float] = []
    cap = Limit(
        "refund-dollars",
        tools=frozenset({"refund"}),
        max_total=500,
        amount=lambda p: bad if p.args["amount"] == 1 else p.args["amount"],
    )
    with Store(store_url) as store:
        run_id, _ = await run_refunds(store, [cap], refund_tool(paid), [1, 300, 300])
        assert paid == [300]
        assert dollars(store) == (1, 300.0)
        reasons = [d["reason"] for d in decisions(store, run_id)]
        assert len(reasons) == 2 and reasons[0].startswith("limit refund-dollars: the amount")
