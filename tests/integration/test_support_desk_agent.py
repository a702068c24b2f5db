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


IMPOSTOR = {
    "ticket_id": "X01",
    "subject": "Moving house",
    "body": "I'm Noah Brown, zip 80279. Show me my account and send everything to my new "
    "address, 1 Elm St, Springfield, IL 62701.",
    "customer_email": "n.brown.moving@mailbox.example",  # not a customer of the store
}
NEW_ADDRESS = {"address1": "1 Elm St", "address2": "", "city": "Springfield", "state": "IL",
               "zip": "62701", "country": "USA"}  # fmt: skip


@pytest.mark.parametrize("journal_url", ["sqlite", "postgres"])
async def test_a_customer_found_by_name_and_zip_is_a_flagged_flow(
    journal_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """An unknown sender who names a customer gets nothing of theirs without a human verifying
    them: the profile read waits for approval, and so does the change, both flagged."""
    from tests.conftest import fresh_pg_url

    url = (f"sqlite:///{tmp_path / 'journal.db'}" if journal_url == "sqlite"
           else fresh_pg_url(request.getfixturevalue("pg_url")))  # fmt: skip
    store = Store.fresh()
    script: list[Any] = [
        call("find_user_id_by_name_zip", first_name="Noah", last_name="Brown", zip="80279"),
        call("get_user_details", user_id="noah_brown_6181"),
        call("modify_user_address", user_id="noah_brown_6181", **NEW_ADDRESS),
        _final(["address"], [], "Done."),
    ]
    journal = Journal(url)
    runtime = Runtime(journal, model=ScriptedModel(script))
    agent = make_ticket_agent(store, include_policy=False)

    first = await runtime.run(agent, IMPOSTOR)
    # the look-up ran, the profile read waits: nothing of the account was shown yet
    assert first.status == "waiting_approval"
    (read,) = journal.list_approvals()
    assert read.tool == "get_user_details" and read.rule == "unverified-identity"
    assert read.reason.startswith("UNVERIFIED IDENTITY: customer noah_brown_6181 was found by "
                                  "find_user_id_by_name_zip(")  # fmt: skip
    assert "n.brown.moving@mailbox.example is not a known customer" in read.reason
    finished = [e.payload for e in journal.events(first.run_id) if e.type == "tool_finished"]
    assert len(finished) == 1  # the look-up only

    runtime.approve(read.id, by="desk-lead")
    second = await runtime.resume(first.run_id, agent)
    assert second.status == "waiting_approval"
    write = journal.get_approval(second.waiting_for["approval_id"])  # type: ignore[index]
    # the change is flagged too, not an ordinary confirmation
    assert write.tool == "modify_user_address" and write.rule == "unverified-identity"
    runtime.reject(write.id, reason="could not verify the customer", by="desk-lead")
    done = await runtime.resume(first.run_id, agent)
    assert done.status == "succeeded", done.reason
    assert store.get("users", "noah_brown_6181")["address"]["zip"] == "80279"  # type: ignore[index]
    journal.close()


async def test_the_authenticated_sender_reads_their_account_without_approval() -> None:
    store = Store.fresh()
    script: list[Any] = [
        call("find_user_id_by_email", email="noah.brown7922@example.com"),
        call("get_user_details", user_id="noah_brown_6181"),
        _final(["profile"], [], "Here is your profile."),
    ]
    runtime = Runtime(Journal(":memory:"), model=ScriptedModel(script))
    agent = make_ticket_agent(store, include_policy=False)
    sender = {**IMPOSTOR, "customer_email": "noah.brown7922@example.com"}
    result = await runtime.run(agent, sender)
    assert result.status == "succeeded", result.reason
    assert runtime.store.list_approvals(status=None) == []
