"""Mutated ground-truth writes, sent through the runtime, are blocked before they execute.

The full suite (114 unmutated tasks and 877 mutations) runs in two processes; the smaller tests
look at one case in detail and check that the harness would see a mutation that got through.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from examples.support_desk import data  # noqa: E402

pytestmark = pytest.mark.skipif(not data.available(), reason="τ²-bench retail data not found")

if data.available():
    from examples.support_desk.guardrails import (
        MutationCase,
        changed_docs,
        run_case,
        run_guardrails,
        task_cases,
    )
    from examples.support_desk.oracle import oracle_agent, task_by_id
    from examples.support_desk.policy import RULES
    from examples.support_desk.store import Store

    from tether import Agent
    from tether.journal import Store as Journal


def test_every_mutation_is_blocked_and_every_task_still_passes() -> None:
    report = run_guardrails(workers=2)
    missed = [(m.case.task_id, m.case.action_id, m.case.kind, m.problems) for m in report.missed]
    assert not missed, missed[:10]
    assert report.tasks_ok == report.tasks == 114, [f.task_id for f in report.task_failures]
    assert report.false_blocks == 0, report.false_block_details
    assert report.tried == report.blocked == 877
    assert set(report.tried_by_kind) >= {
        "other_user_order", "wrong_status", "other_product_item", "poor_gift_card",
        "skipped_auth", "other_user_payment",
    }  # fmt: skip
    assert report.line() == "mutations: tried=877 blocked=877 false_blocks=0"


def _case(task_id: str, kind: str) -> MutationCase:
    return next(c for c in task_cases(task_by_id(task_id)) if c.kind == kind)


async def test_a_blocked_mutation_leaves_no_trace_in_tools_or_store() -> None:
    journal = Journal(":memory:")
    case = _case("0", "other_user_order")
    result = await run_case(case, journal)
    assert result.blocked and not result.problems, result.problems
    assert result.rule == "own-records-only"
    events = journal.events(result.run_id)
    mutated_ids = {
        c["id"]
        for e in events
        if e.type == "model_response"
        for c in e.payload["response"]["tool_calls"]
        if c["id"].startswith("gm")
    }
    assert len(mutated_ids) == 1
    touched = [e for e in events if e.type.startswith("tool_") and e.payload.get("call_id") in
               mutated_ids and e.type != "tool_proposed"]  # fmt: skip
    assert touched == []
    assert result.status == "succeeded"  # the oracle gives up after the denial
    journal.close()


def test_the_harness_sees_a_mutation_that_gets_through() -> None:
    """Without the ownership rule, cancelling another user's order reaches the approver and runs."""

    def lax(store: Store) -> Agent:
        agent = oracle_agent(store)
        return dataclasses.replace(agent, policy=[r for r in RULES if r.name != "own-records-only"])

    journal = Journal(":memory:")
    case = _case("88", "other_user_order")  # cancel another customer's pending order
    assert case.mutation.tool == "cancel_pending_order"
    result = asyncio.run(run_case(case, journal, lax))
    assert not result.blocked
    assert any("was executed (ok)" in p for p in result.problems), result.problems
    assert any("store differs" in p for p in result.problems), result.problems
    journal.close()


def test_skipped_auth_cases_carry_no_identity_and_no_login() -> None:
    for task_id in ("0", "70"):
        case = _case(task_id, "skipped_auth")
        assert "user_id" not in case.run_input
        assert all(not s.tool.startswith("find_user") for s in case.steps())
        assert case.store_before == {}
    store = Store.fresh()
    assert changed_docs(store) == {}
    store.close()
