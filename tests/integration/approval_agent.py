"""A refund agent whose refunds wait for a human, driven in child processes by the restart test.

    python -m tests.integration.approval_agent DB LEDGER start [REQUESTED_BY]

starts a run that stops at the approval gate, prints ``RESULT <status> <run id> <approval id>``
and exits. Another process then decides, through ``python -m tether.cli.app approve|reject``,
which resumes the run from its ``agent_ref`` (this module's ``agent``).

The ledger is a separate SQLite file standing for the payment system: every refund the tool
really issues is a row there. The child processes find it through ``APPROVAL_LEDGER``.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys

from tether import Agent, Limits, ModelRequest, ScriptedModel, ToolCall, ToolContext, tool
from tether.models.scripted import ScriptItem
from tether.policy import Decision, Proposal, rule

LEDGER_ENV = "APPROVAL_LEDGER"
AGENT_REF = "tests.integration.approval_agent:agent"
ASKED = {"order_id": "#W100", "amount": 150}


def ledger() -> sqlite3.Connection:
    conn = sqlite3.connect(os.environ[LEDGER_ENV], timeout=30, isolation_level=None)
    conn.execute(
        "CREATE TABLE IF NOT EXISTS refunds (idempotency_key TEXT, order_id TEXT, amount INTEGER)"
    )
    return conn


@tool(effect="irreversible")
def refund(ctx: ToolContext, order_id: str, amount: int) -> str:
    """Send money back to the customer's card. Cannot be undone."""
    conn = ledger()
    try:
        conn.execute(
            "INSERT INTO refunds VALUES (?, ?, ?)", (ctx.idempotency_key, order_id, amount)
        )
    finally:
        conn.close()
    return f"refunded {amount} for {order_id}"


@rule("refund-cap", tools=["refund"])
def refund_cap(p: Proposal) -> Decision | None:
    """Edited arguments are checked again: a human cannot approve past the cap either."""
    return Decision.deny("refunds over $500 need finance") if p.args["amount"] > 500 else None


def decide(request: ModelRequest) -> ScriptItem:
    results = [m.content for m in request.messages if m.role == "tool"]
    if not results:
        return ToolCall("r1", "refund", dict(ASKED))
    return f"outcome: {results[-1]}"


agent = Agent(
    name="refund-approvals",
    instructions="Refund the order the customer asks about.",
    tools=[refund],
    policy=[refund_cap],
    limits=Limits(max_steps=6),
    model=ScriptedModel(decide, name="scripted:approvals"),
)


def main() -> None:
    from tether.engine import Runtime
    from tether.journal import Store

    db, ledger_path, mode = sys.argv[1:4]
    os.environ[LEDGER_ENV] = ledger_path
    if mode != "start":
        raise SystemExit(f"unknown mode {mode!r}")
    requested_by = sys.argv[4] if len(sys.argv) > 4 else None
    runtime = Runtime(Store(db), requested_by=requested_by)
    result = asyncio.run(runtime.run(agent, "Please refund order #W100.", agent_ref=AGENT_REF))
    waiting = result.waiting_for or {}
    print("RESULT", result.status, result.run_id, waiting.get("approval_id", "-"), flush=True)
    runtime.store.close()


if __name__ == "__main__":
    main()
