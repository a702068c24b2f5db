"""Sample tickets are actionable, cover every tool, and hostile ones are blocked by the rules."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pydantic
import pytest

_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from examples.support_desk import data  # noqa: E402
from examples.support_desk.tickets import (  # noqa: E402
    HOSTILE,
    MAX_BODY_CHARS,
    TICKETS,
    Ticket,
    TicketResult,
    ticket,
)

needs_data = pytest.mark.skipif(not data.available(), reason="τ²-bench retail data not found")

if data.available():
    from examples.support_desk.agent import make_ticket_agent
    from examples.support_desk.oracle_direct import call_tool
    from examples.support_desk.policy import RULES, blocks, evaluate
    from examples.support_desk.store import Store
    from examples.support_desk.tools import TOOLS, TOOLS_BY_NAME

    from tether import ToolError
    from tether.policy import PastCall, Proposal


def test_enough_distinct_tickets() -> None:
    assert len(TICKETS) >= 20
    assert len({t.id for t in TICKETS}) == len(TICKETS)
    assert ticket("T01").subject
    with pytest.raises(KeyError):
        ticket("nope")


def test_hostile_tickets_cover_the_required_attacks() -> None:
    tags = {tag for t in HOSTILE for tag in t.tags}
    assert {"other-customer", "prompt-injection", "oversized"} <= tags
    assert all(t.hostile and t.forbidden for t in HOSTILE)
    oversized = [t for t in HOSTILE if "oversized" in t.tags]
    assert all(len(t.body) > 5 * MAX_BODY_CHARS for t in oversized)
    cut = oversized[0].as_input()
    assert cut["body_truncated"] is True and len(cut["body"]) < MAX_BODY_CHARS + 100
    assert json.loads(json.dumps(cut)) == cut


@needs_data
def test_tickets_reference_real_customers_orders_and_items() -> None:
    db = data.load_db()
    emails = {u["email"] for u in db["users"].values()}
    items = {i for p in db["products"].values() for i in p["variants"]}
    for t in TICKETS:
        if t.id != "T13":  # written from an address that is not on file, on purpose
            assert t.customer_email in emails, t.id
        for order_id in re.findall(r"#W\d{7}", f"{t.subject} {t.body}"):
            assert order_id in db["orders"], (t.id, order_id)
        for c in (*t.plan, *t.forbidden):
            if "order_id" in c.args:
                assert c.args["order_id"] in db["orders"], (t.id, c)
            for item_id in c.args.get("new_item_ids", []):
                assert item_id in items, (t.id, item_id)


@needs_data
def test_plans_use_every_tool() -> None:
    used = {c.tool for t in TICKETS for c in t.plan}
    assert used == {t.name for t in TOOLS}


def _proposal(
    t: Ticket, tool: str, args: dict[str, object], history: list[PastCall], store: Store
) -> Proposal:
    return Proposal(
        tool=tool,
        effect=TOOLS_BY_NAME[tool].effect,
        args=dict(args),
        agent="support-desk",
        run_id=t.id,
        run_input=t.as_input(),
        history=tuple(history),
        deps=store,
    )


@needs_data
@pytest.mark.parametrize("t", TICKETS, ids=[t.id for t in TICKETS])
def test_plan_is_allowed_and_succeeds_and_forbidden_calls_are_blocked(t: Ticket) -> None:
    store = Store.fresh()
    history: list[PastCall] = []
    for c in t.plan:
        decisions = evaluate(_proposal(t, c.tool, c.args, history, store), RULES)
        assert not blocks(decisions), (c, [d.reason for d in decisions])
        try:
            result = call_tool(store, c.tool, c.args)
        except ToolError as exc:  # pragma: no cover - reported by the assertion
            pytest.fail(f"{t.id} {c.tool}: {exc}")
        history.append(PastCall(c.tool, dict(c.args), True, result))
    for c in t.forbidden:
        decisions = evaluate(_proposal(t, c.tool, c.args, history, store), RULES)
        assert blocks(decisions), (t.id, c)


def test_ticket_result_model() -> None:
    result = TicketResult.model_validate_json(
        json.dumps(
            {
                "reply_draft": "Your order is on its way.",
                "tags": ["order-status"],
                "proposed_actions": [
                    {"tool": "cancel_pending_order", "arguments": {"order_id": "#W1"}}
                ],
                "escalation_reason": None,
            }
        )
    )
    assert result.proposed_actions[0].status == "proposed"
    with pytest.raises(pydantic.ValidationError):
        TicketResult.model_validate({"reply_draft": ""})


@needs_data
def test_ticket_agent_definition() -> None:
    store = Store.fresh()
    agent = make_ticket_agent(store)
    assert {t.name for t in agent.tools} == set(TOOLS_BY_NAME)
    assert list(agent.policy) == RULES
    assert agent.output_type is TicketResult
    assert agent.deps_factory is not None and agent.deps_factory() is store
    assert "written policy" in agent.instructions
    json.dumps(agent.snapshot())
    lazy = make_ticket_agent(include_policy=False)
    assert lazy.deps_factory is not None
    first = lazy.deps_factory()
    assert isinstance(first, Store) and lazy.deps_factory() is first
    validator = agent.output_validators[0]
    bad = TicketResult(reply_draft="x", proposed_actions=[{"tool": "rm_rf", "arguments": {}}])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="rm_rf"):
        validator(bad)
