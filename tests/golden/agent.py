"""The agent the golden journals were recorded with (tests replay them with it).

Only public API, so the same module loads in the version that wrote the journals and in this
one; keep it unchanged, or the golden runs stop replaying.
"""

from __future__ import annotations

from typing import Any

from tether import Agent, ToolContext, ToolError, tool
from tether.policy import Decision, Proposal, rule


@tool
def lookup(order_id: str) -> dict[str, Any]:
    """Look up an order."""
    if order_id == "broken":
        raise RuntimeError("the order service is down")
    if order_id == "missing":
        raise ToolError("order missing not found")
    return {"order_id": order_id, "status": "pending", "total": 30, "note": "café ☕"}


@tool(effect="irreversible")
def refund(ctx: ToolContext, order_id: str, amount: float) -> str:
    """Refund money."""
    return f"refunded {amount}"


@rule("refund-cap", tools=["refund"])
def refund_cap(p: Proposal) -> Decision | None:
    return Decision.deny("refunds above 50 need a supervisor") if p.args["amount"] > 50 else None


agent = Agent(
    name="golden",
    instructions="golden journal agent",
    tools=[lookup, refund],
    policy=[refund_cap],
)
