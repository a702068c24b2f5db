"""Agents whose one side-effecting call blocks until the test lets it finish, for the lease tests.

Each execution of the tool appends a line to the file named by ``LEASE_LOG`` when it starts (so
the test sees a process is inside the call, and counts executions); the call then waits until
the file named by ``LEASE_GATE`` exists (at most 30 s) and returns. One agent's tool is
idempotent (a resume may call it again), the other's is not (a resume must not).
"""

from __future__ import annotations

import os
import time

from tether import Agent, ModelRequest, ScriptedModel, ToolCall, tool
from tether.models.scripted import ScriptItem

LOG_ENV = "LEASE_LOG"
GATE_ENV = "LEASE_GATE"


def _execute(kind: str) -> str:
    with open(os.environ[LOG_ENV], "a") as log:
        log.write(f"{kind} {os.getpid()}\n")
    deadline = time.monotonic() + 30
    while not os.path.exists(os.environ[GATE_ENV]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return f"{kind} done"


@tool(effect="write", idempotent=True)
def sync_orders() -> str:
    """Push orders to the warehouse; safe to repeat (the warehouse deduplicates)."""
    return _execute("sync")


@tool(effect="write")
def post_invoice() -> str:
    """Post an invoice; not safe to repeat."""
    return _execute("invoice")


def _agent(name: str, tool_name: str) -> Agent:
    def decide(request: ModelRequest) -> ScriptItem:
        if any(m.role == "tool" for m in request.messages):
            return "all done"
        return ToolCall("c1", tool_name, {})

    return Agent(
        name=name,
        instructions="Make the one call, then stop.",
        tools=[sync_orders, post_invoice],
        model=ScriptedModel(decide, name=f"scripted:{name}"),
    )


idempotent_agent = _agent("lease-idempotent", "sync_orders")
plain_agent = _agent("lease-plain", "post_invoice")
