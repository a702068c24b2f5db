"""The SQL queries of docs/journal.md, read from the document and run on SQLite and
PostgreSQL over real runs, so they cannot drift from the schema."""

from __future__ import annotations

import asyncio
import re

import sqlalchemy as sa

from tests.conftest import ROOT
from tests.golden.agent import agent
from tether import ScriptedModel, call
from tether.engine import Runtime
from tether.journal import Store

DOC = ROOT / "docs" / "journal.md"


def doc_queries() -> dict[tuple[str, str], str]:
    """(dialect, name) → SQL, from the doc's ``sql`` blocks headed ``-- dialect: name``."""
    found: dict[tuple[str, str], str] = {}
    for block in re.findall(r"```sql\n(.*?)```", DOC.read_text(), re.S):
        head = re.match(r"-- (sqlite|postgresql): (\S+)\n", block)
        assert head is not None, block
        found[(head[1], head[2])] = block
    return found


def _runs(store: Store) -> dict[str, str]:
    made: dict[str, str] = {}
    rt = Runtime(store, model=ScriptedModel([call("lookup", order_id="A"), "pending"]))
    made["read"] = asyncio.run(rt.run(agent, "where is A?")).run_id
    rt = Runtime(store, model=ScriptedModel([call("refund", order_id="A", amount=20), "done"]))
    waiting = asyncio.run(rt.run(agent, "refund A"))
    rt.approve(store.list_approvals(run_id=waiting.run_id)[0].id, by="alice", agent=agent)
    made["approved"] = asyncio.run(rt.resume(waiting.run_id, agent)).run_id
    rt = Runtime(store, model=ScriptedModel([call("refund", order_id="B", amount=80), "no"]))
    made["denied"] = asyncio.run(rt.run(agent, "refund B")).run_id
    return made


def test_the_documented_queries_answer_on_both_databases(store: Store) -> None:
    queries = doc_queries()
    names = {"refunds-over-50", "approvals-per-approver", "slowest-tool-calls"}
    assert set(queries) == {(d, n) for d in ("sqlite", "postgresql") for n in names}
    made = _runs(store)
    dialect = "sqlite" if store.is_sqlite else "postgresql"
    with store.engine.connect() as conn:

        def ask(name: str) -> list[tuple[object, ...]]:
            return [tuple(r) for r in conn.execute(sa.text(queries[(dialect, name)])).all()]

        assert ask("refunds-over-50") == [(made["denied"],)]
        assert ask("approvals-per-approver") == [("alice", "approved", 1)]
        slowest = ask("slowest-tool-calls")
    assert {(r[0], r[2]) for r in slowest} == {
        (made["read"], "lookup"),
        (made["approved"], "refund"),
    }
    durations = [float(str(r[3])) for r in slowest]
    assert durations == sorted(durations, reverse=True)
