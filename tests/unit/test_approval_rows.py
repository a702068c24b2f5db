"""Approval rows are written in the same transaction as the events that request them, and bind
to the call's position in its step, not to the provider's call id. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa

from tests.golden.agent import agent
from tether import ScriptedModel, call
from tether.engine import Runtime
from tether.errors import JournalError
from tether.journal import Store
from tether.journal.audit import verify_run
from tether.journal.store import normalise_url
from tether.messages import ModelResponse, ToolCall


def _fail_approval_events(url: str) -> None:
    """A database trigger that fails any insert of an ``approval_requested`` event: the write
    stops between the approval row and its event, as a crash there would."""
    engine = sa.create_engine(normalise_url(url))
    with engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            conn.execute(
                sa.text(
                    "CREATE TRIGGER no_approval_events BEFORE INSERT ON events "
                    "WHEN NEW.type = 'approval_requested' "
                    "BEGIN SELECT RAISE(ABORT, 'the write stops here'); END"
                )
            )
        else:
            conn.execute(
                sa.text(
                    "CREATE FUNCTION no_approval_events() RETURNS trigger AS $$ BEGIN "
                    "IF NEW.type = 'approval_requested' THEN "
                    "RAISE EXCEPTION 'the write stops here'; END IF; RETURN NEW; END "
                    "$$ LANGUAGE plpgsql"
                )
            )
            conn.execute(
                sa.text(
                    "CREATE TRIGGER no_approval_events BEFORE INSERT ON events "
                    "FOR EACH ROW EXECUTE FUNCTION no_approval_events()"
                )
            )
    engine.dispose()


def test_an_approval_request_that_fails_to_be_written_leaves_neither_row_nor_event(
    store_url: str,
) -> None:
    store = Store(store_url)
    try:
        store.events("warm-up")  # the schema exists before the trigger goes in
        _fail_approval_events(store_url)
        rt = Runtime(store, model=ScriptedModel([call("refund", order_id="A", amount=20), "done"]))
        with pytest.raises(JournalError, match="the write stops here"):
            asyncio.run(rt.run(agent, "refund A"))
        assert store.list_approvals(status=None) == []
        # whatever was written of the run (its start may have gone with the request, and been
        # refused with it) holds no request, and verifies
        for run_id in store.run_ids():
            types = [e.type for e in store.events(run_id)]
            assert "approval_requested" not in types and "policy_decision" not in types
            assert verify_run(store, run_id, store.journal_key)[0] is None
    finally:
        store.close()


def _reusing(call_id: str) -> list[object]:
    """A provider that gives every tool call the same id, across steps."""

    def same_id(name: str, **args: object) -> ModelResponse:
        return ModelResponse(tool_calls=[ToolCall(call_id, name, dict(args))])

    return [
        same_id("refund", order_id="A", amount=20),
        same_id("refund", order_id="B", amount=30),
        "done",
    ]


def test_a_reused_call_id_gets_an_approval_of_its_own(store_url: str) -> None:
    store = Store(store_url)
    try:
        rt = Runtime(store, model=ScriptedModel(_reusing("call_1")))
        first = asyncio.run(rt.run(agent, "refund A and B"))
        assert first.status == "waiting_approval"
        (a1,) = store.list_approvals(run_id=first.run_id)
        assert (a1.step, a1.position, a1.args) == (1, 0, {"order_id": "A", "amount": 20.0})
        rt.approve(a1.id, by="alice", agent=agent)
        second = asyncio.run(rt.resume(first.run_id, agent))
        # the second refund, with the same provider call id, waits for its own approval
        assert second.status == "waiting_approval"
        (a2,) = store.list_approvals(run_id=first.run_id)
        assert a2.id != a1.id and (a2.step, a2.position) == (2, 0)
        assert a2.args == {"order_id": "B", "amount": 30.0}
        assert store.approval_for_call(first.run_id, 2, 0) == a2
        assert store.approval_for_call(first.run_id, 1, 0) == store.get_approval(a1.id)
        rt.approve(a2.id, by="alice", agent=agent)
        done = asyncio.run(rt.resume(first.run_id, agent))
        assert done.ok
        finished = [e.payload["content"] for e in store.events(first.run_id)
                    if e.type == "tool_finished"]  # fmt: skip
        assert finished == ["refunded 20.0", "refunded 30.0"]
        assert verify_run(store, first.run_id, store.journal_key)[0] is None
    finally:
        store.close()


def test_an_edited_position_is_named_by_verify(store_url: str) -> None:
    store = Store(store_url)
    try:
        rt = Runtime(store, model=ScriptedModel([call("refund", order_id="A", amount=20), "done"]))
        waiting = asyncio.run(rt.run(agent, "refund A"))
        (approval,) = store.list_approvals(run_id=waiting.run_id)
        engine = sa.create_engine(normalise_url(store_url))
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE approvals SET position = 3"))
        engine.dispose()
        problem, _ = verify_run(store, waiting.run_id, store.journal_key)
        assert problem is not None and f"approval {approval.id} differs" in problem.reason
    finally:
        store.close()
