"""A process forked after runs ran (a worker pool, as the guardrails harness uses) runs its own
runs: the tool threads and the journal's writer thread are the parent's, not the child's, and
the child starts its own."""

from __future__ import annotations

import asyncio
import multiprocessing
from pathlib import Path

from tether import Agent, ScriptedModel, call, tool
from tether.engine import Runtime
from tether.journal import Store


@tool
def lookup(order_id: str) -> str:
    """A sync read: it runs on a thread of the tool pool."""
    return f"order {order_id} is pending"


def _run(db: str) -> str:
    store = Store(db)
    try:
        model = ScriptedModel([call("lookup", order_id="A"), "pending"])
        result = asyncio.run(
            Runtime(store, model=model).run(Agent(name="f", instructions="x", tools=[lookup]), "go")
        )
        return result.status
    finally:
        store.close()


def test_a_forked_child_runs_tools_and_writes_its_journal(tmp_path: Path) -> None:
    # the parent has run a tool (an idle pool thread) and written a journal (a writer thread)
    assert _run(str(tmp_path / "parent.db")) == "succeeded"
    context = multiprocessing.get_context("fork")
    with context.Pool(1) as pool:
        outcome = pool.apply_async(_run, (str(tmp_path / "child.db"),))
        assert outcome.get(timeout=60) == "succeeded"
    store = Store(str(tmp_path / "child.db"))
    try:
        (run,) = store.list_runs()
        assert [e.type for e in store.events(run.id)][-1] == "run_finished"
    finally:
        store.close()
