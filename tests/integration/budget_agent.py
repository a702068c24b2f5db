"""A spending agent driven in a child process by the daily cost cap concurrency test.

    python -m tests.integration.budget_agent DB GO NOW RUNS GUARD

The child prints ``READY``, waits until the file GO exists (so every child starts at once), then
makes RUNS runs one after another. Each run makes ``TURNS`` model calls that cost ``COST``
dollars each (estimated at ``ESTIMATE`` before the call), with ``LATENCY`` seconds of model
latency in which the other processes go on spending. All runs share one agent and so one daily
cap of ``CAP`` dollars. NOW fixes the clock, so no run straddles midnight.

GUARD ``reserve`` runs the engine as it is. GUARD ``check-then-add`` swaps in a guard that reads
the day's spend before a call and adds the cost after it, with nothing reserved in between: the
test run with it shows that the cap test can tell the two apart (it fails).

The child ends with one ``RESULT`` line of JSON: when its runs started and ended, and their
statuses and costs.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

from tether import Agent, Limits, ModelRequest, ModelResponse, ScriptedModel, ToolCall, tool
from tether.engine.budget import DAILY_COST, BudgetGuard
from tether.engine.state import RunState

AGENT_NAME = "spender"
CAP = 1.0
COST = 0.04
ESTIMATE = 0.05
TURNS = 3
LATENCY = 0.02


@tool
def note(n: int) -> str:
    """Write nothing down."""
    return f"noted {n}"


def decide(request: ModelRequest) -> ModelResponse:
    turn = sum(1 for m in request.messages if m.role == "assistant")
    if turn + 1 >= TURNS:
        return ModelResponse(text="done", cost_usd=COST)
    return ModelResponse(tool_calls=[ToolCall(f"t{turn}", "note", {"n": turn})], cost_usd=COST)


class SlowModel(ScriptedModel):
    """The scripted model with a provider's latency."""

    async def request(self, request: ModelRequest) -> ModelResponse:
        await asyncio.sleep(LATENCY)
        return await super().request(request)


class CheckThenAdd(BudgetGuard):
    """The daily cap as a read before the call and an add after it (no reservation)."""

    def before(self, state: RunState, request: ModelRequest, now: float) -> str | None:
        assert self.spend is not None and self.limits.max_cost_usd_per_day is not None
        day = int(now // 86_400) * 86_400
        _, today = self.spend.counter(DAILY_COST, self.agent, day)
        if today + ESTIMATE > self.limits.max_cost_usd_per_day:
            return f"daily cost cap of agent {self.agent}"
        return None

    def after(self, state: RunState, response: ModelResponse, now: float = 0.0) -> str | None:
        store: Any = self.spend
        store.add(DAILY_COST, self.agent, int(now // 86_400) * 86_400, response.cost_usd or 0.0)
        return None


agent = Agent(
    name=AGENT_NAME,
    instructions="Spend.",
    tools=[note],
    limits=Limits(max_steps=TURNS + 1, max_cost_usd_per_day=CAP),
)


def main() -> None:
    import tether.engine.runtime as runtime_module
    from tether.engine import Runtime
    from tether.journal import Store

    db, go, now, runs, guard = sys.argv[1:6]
    if guard == "check-then-add":
        runtime_module.BudgetGuard = CheckThenAdd  # type: ignore[misc]
    fixed = float(now)
    runtime = Runtime(
        Store(db),
        model=SlowModel(decide, name="scripted:spend"),
        clock=lambda: fixed,
        estimate_cost=lambda request: ESTIMATE,
    )
    print("READY", flush=True)
    deadline = time.monotonic() + 60
    while not os.path.exists(go):
        if time.monotonic() > deadline:
            raise SystemExit("never told to start")
        time.sleep(0.002)
    started = time.time()
    results = [asyncio.run(runtime.run(agent, "spend")) for _ in range(int(runs))]
    report = {
        "started": started,
        "finished": time.time(),
        "statuses": [r.status for r in results],
        "costs": [r.cost_usd for r in results],
    }
    runtime.store.close()
    print("RESULT", json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
