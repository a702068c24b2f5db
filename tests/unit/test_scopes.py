"""``@tool(scopes=...)``: a run uses such a tool only if it was granted every scope it needs.

The grant is journaled with the run's start, so a resume (another process, after an approval)
and a replay run with the same grant. Each test runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

from typing import Any

from tether import Agent, ScriptedModel, call, tool
from tether.engine import Runtime
from tether.journal import Store
from tether.policy import Decision, Proposal, rule
from tether.replay import replay_run

DONE: list[str] = []


@tool(effect="write", scopes=("admin",))
def delete_account(user: str) -> str:
    """Delete a user's account (administrators only)."""
    DONE.append(f"deleted {user}")
    return "deleted"


@tool(effect="irreversible", scopes="billing")
def wipe_balance(user: str) -> str:
    """Set a balance to zero; waits for a human by default."""
    DONE.append(f"wiped {user}")
    return "wiped"


@rule("allow-all", tools=["delete_account"])
def allow_all(p: Proposal) -> Decision | None:
    return Decision.allow("anything goes")


AGENT = Agent(
    name="ops",
    instructions="x",
    tools=[delete_account, wipe_balance],
    policy=[allow_all],
    autonomy={"delete_account": "auto"},
)


def rt(store: Store, script: list[Any]) -> Runtime:
    return Runtime(store, model=ScriptedModel(script))


def decisions(store: Store, run_id: str) -> list[dict[str, Any]]:
    return [e.payload for e in store.events(run_id) if e.type == "policy_decision"]


async def test_a_tool_needing_a_scope_is_denied_to_a_run_without_it(store: Store) -> None:
    DONE.clear()
    result = await rt(store, [call("delete_account", user="u1"), "ok"]).run(AGENT, "go")
    assert result.ok and DONE == []
    (denied,) = decisions(store, result.run_id)
    assert denied["decision"] == "deny" and denied["rule"] == "scopes"
    assert "needs scope admin" in denied["reason"]
    # a grant of other scopes does not help
    result = await rt(store, [call("delete_account", user="u1"), "ok"]).run(
        AGENT, "go", scopes={"billing"}
    )
    assert DONE == [] and decisions(store, result.run_id)[0]["rule"] == "scopes"


async def test_a_granted_run_may_call_it_and_resume_and_replay_keep_the_grant(
    store: Store,
) -> None:
    DONE.clear()
    first = rt(store, [call("delete_account", user="u1"), call("wipe_balance", user="u1"), "ok"])
    result = await first.run(AGENT, "go", scopes=["admin", "billing"])
    assert result.status == "waiting_approval" and DONE == ["deleted u1"]
    started = store.events(result.run_id)[0].payload
    assert started["scopes"] == ["admin", "billing"]
    first.approve(store.list_approvals()[0].id, by="alice")
    # a new runtime (as in another process) resumes with the journaled grant
    resumed = await rt(store, ["ok"]).resume(result.run_id, AGENT)
    assert resumed.ok and DONE == ["deleted u1", "wiped u1"]
    report = await replay_run(store, result.run_id, agent=AGENT)
    assert report.matched, report
