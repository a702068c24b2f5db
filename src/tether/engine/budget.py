"""Budget checks: steps, tokens, dollars and the deadline, before and after each model call."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Protocol

from tether.agent import Limits
from tether.engine.state import RunState
from tether.journal.store import Reservation
from tether.messages import ModelRequest, ModelResponse
from tether.models.base import estimate_request_tokens

CostEstimator = Callable[[ModelRequest], float]


DAY = 86_400
DAILY_COST = "cost-usd-per-day"


class DailySpend(Protocol):
    """Where the per-agent daily dollar counter lives (the store)."""

    def counter(self, name: str, key: str, window_start: int) -> tuple[int, float]: ...

    def reserve_many(self, wanted: Sequence[Reservation]) -> int | None: ...

    def settle(self, held: Reservation, amount: float) -> None: ...

    def release_many(self, held: Sequence[Reservation]) -> None: ...


class BudgetGuard:
    """Says why a run must stop, or ``None``. Checked before (estimated) and after (actual).

    The daily dollar cap is shared by every run of the agent, in any process: before a model
    call the estimated cost is reserved on the store's counter in one atomic conditional update
    (refused if it would pass the cap), after the call the reservation is settled to the real
    cost, and a call that failed gives it back. Concurrent runs therefore never overshoot the
    cap, except by what a call costs beyond its estimate (with no estimator, the whole call).
    """

    def __init__(
        self,
        limits: Limits,
        *,
        estimate_cost: CostEstimator | None = None,
        agent: str = "",
        spend: DailySpend | None = None,
    ) -> None:
        self.limits = limits
        self.estimate_cost = estimate_cost
        self.agent = agent
        self.spend = spend
        self.held: Reservation | None = None  # the daily-cap reservation of the call under way

    def before(self, state: RunState, request: ModelRequest, now: float) -> str | None:
        lim = self.limits
        if state.step >= lim.max_steps:
            return f"step limit reached ({lim.max_steps} steps)"
        if lim.deadline_seconds is not None and now - state.started_at > lim.deadline_seconds:
            return f"deadline passed ({lim.deadline_seconds:g}s)"
        if lim.max_input_tokens is not None:
            estimate = estimate_request_tokens(request)
            if state.input_tokens + estimate > lim.max_input_tokens:
                return (
                    f"input token budget: {state.input_tokens} used + ~{estimate} for the next "
                    f"call > {lim.max_input_tokens}"
                )
        if lim.max_output_tokens is not None and state.output_tokens >= lim.max_output_tokens:
            return f"output token budget spent ({state.output_tokens}/{lim.max_output_tokens})"
        estimate_usd = _dollars(self.estimate_cost(request)) if self.estimate_cost else 0.0
        if lim.max_cost_usd is not None and state.cost_usd + estimate_usd > lim.max_cost_usd:
            return (
                f"cost budget: ${state.cost_usd:.4f} spent + ~${estimate_usd:.4f} for the "
                f"next call > ${lim.max_cost_usd:.4f}"
            )
        if lim.max_cost_usd_per_day is not None and self.spend is not None:
            # the last check: nothing after it may refuse the call once the money is reserved
            held = Reservation(
                DAILY_COST, self.agent, _day(now), estimate_usd, None, lim.max_cost_usd_per_day
            )
            if self.spend.reserve_many([held]) is not None:
                _, today = self.spend.counter(DAILY_COST, self.agent, held.window_start)
                return (
                    f"daily cost cap of agent {self.agent}: ${today:.4f} spent today + "
                    f"~${estimate_usd:.4f} > ${lim.max_cost_usd_per_day:.4f}"
                )
            self.held = held
        return None

    def record(self, response: ModelResponse) -> None:
        """Settle the call's daily-cap reservation to its actual cost."""
        held, self.held = self.held, None
        if held is not None and self.spend is not None:
            actual = response.cost_usd
            self.spend.settle(held, held.amount if actual is None else _dollars(actual))

    def release(self) -> None:
        """The model call failed: give its daily-cap reservation back."""
        held, self.held = self.held, None
        if held is not None and self.spend is not None:
            self.spend.release_many([held])

    def after(self, state: RunState, response: ModelResponse, now: float = 0.0) -> str | None:
        lim = self.limits
        self.record(response)
        if lim.max_input_tokens is not None and state.input_tokens > lim.max_input_tokens:
            return f"input token budget exceeded ({state.input_tokens}/{lim.max_input_tokens})"
        if lim.max_output_tokens is not None and state.output_tokens > lim.max_output_tokens:
            return f"output token budget exceeded ({state.output_tokens}/{lim.max_output_tokens})"
        if lim.max_cost_usd is not None and state.cost_usd > lim.max_cost_usd:
            return f"cost budget exceeded (${state.cost_usd:.4f}/${lim.max_cost_usd:.4f})"
        return None


def _dollars(value: float) -> float:
    """A cost as the counter may hold it: a finite number ≥ 0 (anything else counts as 0)."""
    return value if math.isfinite(value) and value > 0 else 0.0


def _day(now: float) -> int:
    return int(now // DAY) * DAY
