"""Every τ²-bench retail task's ground truth, played by the oracle through the full runtime.

Each task runs on a fresh support-desk store and a fresh in-memory journal; confirm-writes
approvals are granted by the test approver. A task matches when the final store equals the
expected changes and every call fails or succeeds as in the reference.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from examples.support_desk import data  # noqa: E402

pytestmark = pytest.mark.skipif(not data.available(), reason="τ²-bench retail data not found")

if data.available():
    from examples.support_desk.oracle import (
        OracleModel,
        ScriptStep,
        run_all,
        run_task,
        steps_done,
        task_by_id,
        task_input,
    )

    from tether.messages import Message, ModelRequest, ToolCall


async def test_all_114_tasks_match_through_the_runtime() -> None:
    results = await run_all()
    failures = {r.task_id: r.problems[:5] for r in results if not r.ok}
    assert not failures, failures
    assert sum(r.ok for r in results) == len(results) == 114
    # writes wait for the approver; the two calls the reference rejects on policy grounds are
    # blocked by the rules before they reach the tools
    assert sum(r.approvals for r in results) > 100
    blocked = sorted(a for r in results for a in r.blocked_as_expected)
    assert blocked == ["106_0", "64_6"]


async def test_a_task_on_a_durable_store_and_journal(tmp_path: Path) -> None:
    from tether.journal import Store as Journal

    journal = Journal(f"sqlite:///{tmp_path / 'runs.db'}")
    result = await run_task("0", f"sqlite:///{tmp_path / 'shop.db'}", journal=journal)
    assert result.ok, result.problems
    assert journal.get_run(result.run_id).agent_ref == "examples.support_desk.oracle:oracle_agent"
    journal.close()


def test_login_tasks_carry_no_identity_and_others_do() -> None:
    assert "user_id" not in task_input(task_by_id("0"))  # logs in by name and zip
    assert task_input(task_by_id("70"))["user_id"]  # no login step in the script


async def test_the_oracle_reproposes_after_an_error_that_is_not_a_result() -> None:
    steps = [ScriptStep("get_order_details", {"order_id": "#W1"}),
             ScriptStep("get_user_details", {"user_id": "u1"})]  # fmt: skip
    oracle = OracleModel(steps)
    first = ToolCall("x1", "get_order_details", {"order_id": "#W1"})
    wrong = ToolCall("x2", "get_order_details", {"order_id": "#W2"})
    messages = [
        Message("system", "s"),
        Message("user", "u"),
        Message("assistant", tool_calls=[wrong]),
        Message("tool", "Order not found", tool_call_id="x2"),  # not the step's call
        Message("assistant", tool_calls=[first]),
        Message("tool", "Denied by policy (rule): no", tool_call_id="x1"),  # no real result
    ]
    assert steps_done(messages, steps) == 0
    messages += [Message("assistant", tool_calls=[first]),
                 Message("tool", "Error: Order not found", tool_call_id="x1")]  # fmt: skip
    assert steps_done(messages, steps) == 1  # an error result is a result
    assert oracle.calls == 0


async def test_rewind_repeats_the_last_answer_unless_the_conversation_moved_on() -> None:
    steps = [ScriptStep("get_order_details", {"order_id": "#W1"}),
             ScriptStep("get_user_details", {"user_id": "u1"})]  # fmt: skip
    oracle = OracleModel(steps)
    start = ModelRequest([Message("system", "s"), Message("user", "u")])
    first = await oracle.request(start)
    oracle.rewind()
    again = await oracle.request(start)
    assert again.tool_calls[0].to_dict() == first.tool_calls[0].to_dict()
    oracle.rewind()  # but this time the call got its result: the next step comes
    call = first.tool_calls[0]
    moved = ModelRequest([*start.messages, Message("assistant", tool_calls=[call]),
                          Message("tool", "{}", tool_call_id=call.id)])  # fmt: skip
    nxt = await oracle.request(moved)
    assert nxt.tool_calls[0].name == "get_user_details"
    assert oracle.rewinds == 2 and oracle.calls == 3


async def test_a_fresh_oracle_resumes_a_run_waiting_for_approval() -> None:
    """The oracle keeps no state a resume needs: another instance finishes the run."""
    from examples.support_desk.oracle import ORACLE_AGENT_REF, oracle_agent
    from examples.support_desk.oracle_direct import compare_store
    from examples.support_desk.store import Store

    from tether.engine import Runtime
    from tether.journal import Store as Journal

    journal, store = Journal(":memory:"), Store.fresh()
    agent = oracle_agent(store)
    task = task_by_id("0")
    runtime = Runtime(journal, model=OracleModel.for_task("0"))
    first = await runtime.run(agent, task_input(task), agent_ref=ORACLE_AGENT_REF)
    assert first.status == "waiting_approval" and first.waiting_for
    done = first
    # task 0 logs the customer in by a look-up (no authenticated sender): each access to the
    # account waits for a human, and every approval is resumed by a fresh oracle
    for _ in range(10):
        if done.status != "waiting_approval" or not done.waiting_for:
            break
        runtime.approve(done.waiting_for["approval_id"], by="test-approver")
        later = Runtime(journal, model=OracleModel.for_task("0"))  # e.g. another process
        done = await later.resume(first.run_id, agent)
    assert done.status == "succeeded", done.reason
    assert compare_store(store, data.load_expected()["0"]["changed"]) == []
    journal.close()
    store.close()
