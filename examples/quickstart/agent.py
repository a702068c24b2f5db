"""Quickstart: an order-refund agent driven by a scripted model.

The scripted model decides from the conversation alone (no hidden state), so a run of this agent
can be stopped at any point and resumed from its journal in another process.

    tether run examples.quickstart.agent:agent --input "Refund order #1001, it arrived broken"
"""

from __future__ import annotations

import json
import re

from tether import Agent, Limits, ModelRequest, ScriptedModel, ToolCall, ToolContext, tool
from tether.models.scripted import ScriptItem

ORDERS = {
    "#1001": {"customer": "ana@example.com", "total": 42.5, "status": "delivered"},
    "#1002": {"customer": "bo@example.com", "total": 12.0, "status": "pending"},
}
REFUNDS: list[dict[str, object]] = []


@tool(effect="read")
def get_order(order_id: str) -> dict[str, object]:
    """Look up an order by id (like "#1001")."""
    order = ORDERS.get(order_id)
    if order is None:
        from tether import ToolError

        raise ToolError(f"order {order_id} not found")
    return {"order_id": order_id, **order}


@tool(effect="irreversible", idempotent=True)
def refund_order(ctx: ToolContext, order_id: str, amount: float, reason: str) -> str:
    """Refund money to the customer. Irreversible: money leaves the company."""
    if any(r["key"] == ctx.idempotency_key for r in REFUNDS):
        return f"refund of ${amount:.2f} for {order_id} already issued"
    REFUNDS.append({"key": ctx.idempotency_key, "order_id": order_id, "amount": amount})
    return f"refunded ${amount:.2f} for {order_id} ({reason})"


def decide(request: ModelRequest) -> ScriptItem:
    """The scripted model's policy: look the order up, refund it, then confirm."""
    user = next(m.content for m in request.messages if m.role == "user")
    found = re.search(r"#\d+", user)
    order_id = found.group(0) if found else "#0000"
    results = [m for m in request.messages if m.role == "tool"]
    step = len([m for m in request.messages if m.role == "assistant"])
    if not results:
        return ToolCall(f"c{step}", "get_order", {"order_id": order_id})
    last = results[-1].content
    if last.startswith(("Error", "Denied", "A human rejected")):
        return f"I could not complete the refund for {order_id}: {last}"
    if len(results) == 1:
        order = json.loads(last)
        # the scripted "model" follows one instruction: refunding half when told to
        half = "half" in request.messages[0].content.lower()
        amount = round(order["total"] / 2, 2) if half else order["total"]
        return ToolCall(
            f"c{step}",
            "refund_order",
            {"order_id": order_id, "amount": amount, "reason": "arrived damaged"},
        )
    return f"Done: {last}."


agent = Agent(
    name="refund-desk",
    version="1",
    instructions="You handle refund requests. Look the order up, then refund it.",
    tools=[get_order, refund_order],
    limits=Limits(max_steps=6),
    model=ScriptedModel(decide, name="scripted:refund-desk"),
)
