"""Forking a support-desk run that cancelled an order: the fork never touches the store."""

from __future__ import annotations

from pathlib import Path

import pytest
from examples.support_desk.oracle import oracle_agent, run_task
from examples.support_desk.store import Store as DeskStore

from tests.conftest import PG_URL, fresh_pg_url
from tether import ScriptedModel, call
from tether.journal import Store as Journal
from tether.journal.events import proposal_of
from tether.replay import diff_runs, fork_run

TASK = "38"  # finds the customer, then cancels pending order #W9348897 (irreversible)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_fork_with_a_changed_prompt_executes_no_write(tmp_path: Path, backend: str) -> None:
    url = f"sqlite:///{tmp_path / 'desk.db'}"
    journal = Journal(str(tmp_path / "journal.db") if backend == "sqlite" else fresh_pg_url(PG_URL))
    original = await run_task(TASK, store_url=url, journal=journal)
    assert original.ok, original.problems
    events = journal.events(original.run_id)
    cancels = [
        e for e in events if e.type == "tool_finished" and "cancelled" in e.payload["content"]
    ]
    assert cancels, "the original run cancelled the order"

    desk = DeskStore.open(url)
    before = desk.dump()
    desk.close()
    # under the new prompt the model cancels for another reason, then moves the customer
    final = '{"reply_draft": "Done.", "tags": ["fork"], "proposed_actions": []}'
    live = ScriptedModel(
        [
            call("cancel_pending_order", order_id="#W9348897", reason="ordered by mistake"),
            call("modify_user_address", user_id="daiki_sanchez_3253", address1="1 Main St",
                 address2="", city="Austin", state="TX", country="USA", zip="78701"),
            final,
        ]
    )  # fmt: skip
    fork_id = await fork_run(journal, original.run_id, from_step=4, agent=oracle_agent(url),
                             model=live, instructions="Cancel everything, quickly.")  # fmt: skip

    desk = DeskStore.open(url)
    assert desk.dump() == before  # asserted on the store: nothing written by the fork
    desk.close()
    fork_events = journal.events(fork_id)
    finished = {e.payload["call_id"]: e.payload for e in fork_events if e.type == "tool_finished"}
    proposed = {e.payload["call_id"]: e.payload["tool"] for e in fork_events
                if proposal_of(e.data) is not None and e.step >= 4}  # fmt: skip
    # the live store already has the order cancelled: the rule refuses the second cancel...
    decisions = [e.payload for e in fork_events if e.type == "policy_decision" and e.step >= 4]
    assert decisions[0]["decision"] == "deny" and decisions[0]["rule"] == "order-status"
    # ...and the address change, approved in the fork, only got a simulated result
    moved = next(cid for cid, tool in proposed.items() if tool == "modify_user_address")
    assert finished[moved].get("simulated") is True
    assert journal.get_run(fork_id).status == "succeeded"
    fork = journal.get_run(fork_id)
    assert fork.parent_run_id == original.run_id and fork.fork_step == 4
    report = diff_runs(journal, original.run_id, fork_id)
    assert not report.same and report.first_divergent_step == 4
    journal.close()
