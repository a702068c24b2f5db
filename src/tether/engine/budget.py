"""Budget checks: steps, tokens, dollars and the deadline, before and after each model call."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from tether.agent import Limits
from tether.engine.state import RunState
from tether.messages import ModelRequest, ModelResponse
from tether.models.base import estimate_request_tokens

CostEstimator = Callable[[ModelRequest], float]


DAY = 86_400
DAILY_COST = "cost-usd-per-day"


class DailySpend(Protocol):
    """Where the per-agent daily dollar counter lives (the store)."""

    def counter(self, name: str, key: str, window_start: int) -> tuple[int, float]: ...

    def add(self, name: str, key: str, window_start: int, amount: float) -> None: ...


class BudgetGuard:
    """Says why a run must stop, or ``None``. Checked before (estimated) and after (actual)."""

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
        estimate_usd = self.estimate_cost(request) if self.estimate_cost else 0.0
        if lim.max_cost_usd is not None and state.cost_usd + estimate_usd > lim.max_cost_usd:
            return (
                f"cost budget: ${state.cost_usd:.4f} spent + ~${estimate_usd:.4f} for the "
                f"next call > ${lim.max_cost_usd:.4f}"
            )
        if lim.max_cost_usd_per_day is not None and self.spend is not None:
            _, today = self.spend.counter(DAILY_COST, self.agent, _day(now))
            if today + estimate_usd > lim.max_cost_usd_per_day:
                return (
                    f"daily cost cap of agent {self.agent}: ${today:.4f} spent today + "
                    f"~${estimate_usd:.4f} > ${lim.max_cost_usd_per_day:.4f}"
                )
        return None

    def record(self, response: ModelResponse, now: float) -> None:
        """Add a call's actual cost to the agent's daily counter."""
        capped = self.limits.max_cost_usd_per_day is not None
        if self.spend is not None and capped and response.cost_usd:
            self.spend.add(DAILY_COST, self.agent, _day(now), response.cost_usd)

    def after(self, state: RunState, response: ModelResponse, now: float = 0.0) -> str | None:
        lim = self.limits
        if lim.max_cost_usd_per_day is not None:
            self.record(response, now)
        if lim.max_input_tokens is not None and state.input_tokens > lim.max_input_tokens:
            return f"input token budget exceeded ({state.input_tokens}/{lim.max_input_tokens})"
        if lim.max_output_tokens is not None and state.output_tokens > lim.max_output_tokens:
            return f"output token budget exceeded ({state.output_tokens}/{lim.max_output_tokens})"
        if lim.max_cost_usd is not None and state.cost_usd > lim.max_cost_usd:
            return f"cost budget exceeded (${state.cost_usd:.4f}/${lim.max_cost_usd:.4f})"
        return None


def _day(now: float) -> int:
    return int(now // DAY) * DAY
