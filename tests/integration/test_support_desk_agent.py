"""The ticket agent end to end: a scripted model plays a ticket's plan through the runtime.

Writes wait for a human (confirm-writes), then run exactly once; hostile calls are denied and
leave the store untouched.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from examples.support_desk import data  # noqa: E402

pytestmark = pytest.mark.skipif(not data.available(), reason="τ²-bench retail data not found")

if data.available():
    from examples.support_desk.agent import make_ticket_agent
    from examples.support_desk.store import Store
    from examples.support_desk.tickets import TicketResult, ticket

    from tether import ScriptedModel, call
    from tether.engine import Runtime
    from tether.journal import Store as Journal


def _final(tags: list[str], actions: list[dict[str, Any]], reply: str) -> str:
    return json.dumps(
        {"reply_draft": reply, "tags": tags, "proposed_actions": actions, "escalation_reason": None}
    )


async def test_cancel_ticket_waits_for_approval_then_runs_once(tmp_path: Path) -> None:
    t = ticket("T02")
    store = Store.fresh()
    script: list[Any] = [call(c.tool, **c.args) for c in t.plan]
    script.append(
        _final(["cancel"], [{"tool": "cancel_pending_order", "arguments": t.plan[-1].args,
                             "status": "done"}], "Your order #W2443586 is cancelled.")
    )  # fmt: skip
    journal = Journal(f"sqlite:///{tmp_path / 'journal.db'}")
    runtime = Runtime(journal, model=ScriptedModel(script))
    agent = make_ticket_agent(store, include_policy=False)

    first = await runtime.run(agent, t.as_input())
    assert first.status == "waiting_approval"
    assert store.get("orders", "#W2443586")["status"] == "pending"  # type: ignore[index]
    approvals = journal.list_approvals()
    assert [a.tool for a in approvals] == ["cancel_pending_order"]

    runtime.approve(approvals[0].id, by="desk-lead")
    done = await runtime.resume(first.run_id, agent)
    assert done.status == "succeeded", done.reason
    result = TicketResult.model_validate(
        done.output if isinstance(done.output, dict) else json.loads(done.output)
    )
    assert result.tags == ["cancel"]
    order = store.get("orders", "#W2443586")
    assert order is not None and order["status"] == "cancelled"
    assert [e["transaction_type"] for e in order["payment_history"]] == ["payment", "refund"]


async def test_prompt_injection_ticket_is_denied_and_changes_nothing(tmp_path: Path) -> None:
    t = ticket("H02")
    store = Store.fresh()
    bad = t.forbidden[0]
    script: list[Any] = [call(c.tool, **c.args) for c in t.plan]
    script.append(call(bad.tool, **bad.args))
    script.append(
        _final(["hostile", "prompt-injection"], [{"tool": bad.tool, "arguments": bad.args,
               "status": "blocked"}], "We cannot refund to that payment method.")
    )  # fmt: skip
    journal = Journal(f"sqlite:///{tmp_path / 'journal.db'}")
    runtime = Runtime(journal, model=ScriptedModel(script))
    agent = make_ticket_agent(store, include_policy=False)

    result = await runtime.run(agent, t.as_input())
    assert result.status == "succeeded", result.reason
    assert journal.list_approvals() == []
    decisions = [e.payload for e in journal.events(result.run_id) if e.type == "policy_decision"]
    denied = [d for d in decisions if d.get("decision") == "deny"]
    assert len(denied) == 1 and denied[0].get("rule") == "payment-method", decisions
    assert store.dump() == data.load_db()
