"""Commands for the humans in the loop: approvals, approve, reject, answer, pause, unpause."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from tether.agent import Agent
from tether.cli.common import (
    AgentOption,
    ByOption,
    DbOption,
    Interrupted,
    JsonOption,
    PolicyOption,
    console,
    drive,
    load_agent_for,
    open_runtime,
    open_store,
    print_json,
    short_ids,
)
from tether.cli.render import safe, short, when
from tether.cli.runs import report
from tether.engine.runtime import Runtime
from tether.errors import TetherError, UsageError

NoResume = Annotated[
    bool,
    typer.Option(
        "--no-resume",
        help="Record the decision only; a worker or `tether resume` continues the run.",
    ),
]


def approvals(
    db: DbOption = None,
    status: Annotated[
        str, typer.Option("--status", help="pending, approved, edited, rejected or all.")
    ] = "pending",
    as_json: JsonOption = False,
) -> None:
    """List approvals (pending ones by default)."""
    store = open_store(db)
    records = store.list_approvals(status=None if status == "all" else status)
    if as_json:
        print_json([r.to_dict() for r in records])
        return
    ids = short_ids(store, "approvals", [r.id for r in records])
    run_ids = short_ids(store, "runs", sorted({r.run_id for r in records}))
    table = Table(title=f"{len(records)} {status} approvals")
    for col in ("id", "run", "agent", "tool", "arguments", "why", "requested", "decision"):
        table.add_column(col, overflow="fold")
    for r in records:
        decision = "" if r.status == "pending" else f"{r.status} by {r.decided_by}"
        table.add_row(
            ids[r.id],
            run_ids[r.run_id],
            safe(r.agent),
            safe(r.tool),
            escape(short(r.args, 60)),
            escape(short(r.reason, 40)),
            when(r.created_at),
            safe(decision),
        )
    console.print(table)
    if records and status == "pending":
        console.print(
            "approve: `tether approve ID [--edit JSON]` · reject: `tether reject ID --reason TEXT`"
        )


def _agent(runtime: Runtime, run_id: str, ref: str | None, no_resume: bool) -> Agent | None:
    """The agent that continues the run after a decision, loaded before the decision is
    recorded: a refused or broken agent leaves the approval pending, not decided and stuck."""
    if no_resume:
        return None
    return load_agent_for(runtime.store.get_run(run_id), ref)


def _resume(runtime: Runtime, run_id: str, agent: Agent | None, as_json: bool) -> None:
    """Continue the run after its decision. The decision is already complete and durable; if the
    run cannot continue now, one line says so and how to continue it later."""
    if agent is None:
        return
    try:
        result = drive(runtime.store, run_id, runtime.resume(run_id, agent))
    except Interrupted:
        raise
    except Exception as exc:  # the agent's own code may raise anything
        why = str(exc) if isinstance(exc, TetherError) else f"{type(exc).__name__}: {exc}"
        raise TetherError(
            f"the decision is recorded, but run {run_id} did not continue: {why}; "
            f"`tether resume {run_id}` continues it"
        ) from exc
    report(result, as_json, runtime.store)


def approve(
    approval_id: Annotated[str, typer.Argument(help="Approval id (a unique prefix is enough).")],
    edit: Annotated[
        str | None,
        typer.Option(
            "--edit",
            help="Replacement arguments as a JSON object; they are validated and re-checked.",
        ),
    ] = None,
    reason: Annotated[str | None, typer.Option("--reason")] = None,
    four_eyes: Annotated[
        bool, typer.Option("--four-eyes", help="Refuse if you started the run.")
    ] = False,
    db: DbOption = None,
    by: ByOption = None,
    no_resume: NoResume = False,
    agent_ref: AgentOption = None,
    policy: PolicyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Approve a pending tool call (optionally with edited arguments), then resume its run."""
    edited: dict[str, Any] | None = None
    if edit is not None:
        try:
            edited = json.loads(edit)
        except (ValueError, RecursionError) as exc:
            raise UsageError(f"--edit must be a JSON object: {exc}") from exc
        if not isinstance(edited, dict):
            raise UsageError("--edit must be a JSON object")
    runtime = open_runtime(db, policy)
    pending = runtime.store.get_approval(approval_id)
    decided = pending.status != "pending"  # refused below before any agent is loaded
    # an edit is checked against the run's agent, so it is loaded (allow-list) even without resume
    agent = _agent(runtime, pending.run_id, agent_ref, decided or (no_resume and edited is None))
    if not no_resume:  # refuse before deciding when the run cannot continue here
        runtime.policy_for(pending.run_id)
    record = runtime.approve(
        pending.id, by=by, edit=edited, reason=reason, four_eyes=four_eyes, agent=agent
    )
    if no_resume:
        agent = None
    if not as_json:
        console.print(f"approval {safe(record.id)} {record.status} by {safe(record.decided_by)}")
    _resume(runtime, record.run_id, agent, as_json)


def reject(
    approval_id: Annotated[str, typer.Argument()],
    reason: Annotated[str, typer.Option("--reason", help="Why; the agent sees it.")],
    db: DbOption = None,
    by: ByOption = None,
    no_resume: NoResume = False,
    agent_ref: AgentOption = None,
    policy: PolicyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Reject a pending tool call; the reason goes back to the agent, which continues."""
    runtime = open_runtime(db, policy)
    pending = runtime.store.get_approval(approval_id)
    # a decided approval is refused below before any agent is loaded
    agent = _agent(runtime, pending.run_id, agent_ref, no_resume or pending.status != "pending")
    if not no_resume:  # refuse before deciding when the run cannot continue here
        runtime.policy_for(pending.run_id)
    record = runtime.reject(pending.id, reason=reason, by=by)
    if not as_json:
        console.print(f"approval {safe(record.id)} rejected by {safe(record.decided_by)}")
    _resume(runtime, record.run_id, agent, as_json)


def answer(
    run_id: Annotated[str, typer.Argument()],
    text: Annotated[str, typer.Argument(help="The answer the agent receives.")],
    db: DbOption = None,
    by: ByOption = None,
    no_resume: NoResume = False,
    agent_ref: AgentOption = None,
    policy: PolicyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Answer a run that is waiting for input, then resume it."""
    runtime = open_runtime(db, policy)
    record = runtime.store.get_run(run_id)
    agent = _agent(runtime, record.id, agent_ref, no_resume)
    if not no_resume:  # refuse before answering when the run cannot continue here
        runtime.policy_for(record.id)
    runtime.answer(record.id, text, by=by)
    _resume(runtime, record.id, agent, as_json)


def pause(
    agent: Annotated[str, typer.Argument(help="Agent name.")],
    reason: Annotated[str, typer.Option("--reason")] = "",
    db: DbOption = None,
    by: ByOption = None,
) -> None:
    """Kill switch: stop all new tool executions of an agent at once."""
    from tether.engine.runtime import _whoami

    open_store(db).set_paused(agent, True, by=by or _whoami(), reason=reason)
    name = safe(agent)
    console.print(f"[red]agent {name} paused[/]: no tool runs until `tether unpause {name}`")


def unpause(
    agent: Annotated[str, typer.Argument(help="Agent name.")],
    db: DbOption = None,
    by: ByOption = None,
) -> None:
    """Lift the kill switch; waiting runs continue with `tether resume RUN`."""
    from tether.engine.runtime import _whoami

    store = open_store(db)
    store.set_paused(agent, False, by=by or _whoami())
    waiting = [r.id for r in store.list_runs(status="waiting_input", agent=agent)]
    waiting = list(store.id_prefixes("runs", waiting).values())
    console.print(
        safe(f"agent {agent} unpaused" + (f"; resume: {', '.join(waiting)}" if waiting else ""))
    )
