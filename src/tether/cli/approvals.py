"""Commands for the humans in the loop: approvals, approve, reject, answer, pause, unpause."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from tether.cli.common import (
    ByOption,
    DbOption,
    JsonOption,
    PolicyOption,
    console,
    open_runtime,
    open_store,
    print_json,
)
from tether.cli.render import short, when
from tether.cli.runs import report
from tether.engine.runtime import Runtime
from tether.errors import UsageError

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
    records = open_store(db).list_approvals(status=None if status == "all" else status)
    if as_json:
        print_json([r.to_dict() for r in records])
        return
    table = Table(title=f"{len(records)} {status} approvals")
    for col in ("id", "run", "agent", "tool", "arguments", "why", "requested", "decision"):
        table.add_column(col, overflow="fold")
    for r in records:
        decision = "" if r.status == "pending" else f"{r.status} by {r.decided_by}"
        table.add_row(
            r.id[:12],
            r.run_id[:12],
            r.agent,
            r.tool,
            escape(short(r.args, 60)),
            escape(short(r.reason, 40)),
            when(r.created_at),
            decision,
        )
    console.print(table)
    if records and status == "pending":
        console.print(
            "approve: `tether approve ID [--edit JSON]` · reject: `tether reject ID --reason TEXT`"
        )


def _resume(runtime: Runtime, run_id: str, as_json: bool) -> None:
    result = asyncio.run(runtime.resume(run_id))
    report(result, as_json)


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
    policy: PolicyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Approve a pending tool call (optionally with edited arguments), then resume its run."""
    edited: dict[str, Any] | None = None
    if edit is not None:
        try:
            edited = json.loads(edit)
        except ValueError as exc:
            raise UsageError(f"--edit must be a JSON object: {exc}") from exc
        if not isinstance(edited, dict):
            raise UsageError("--edit must be a JSON object")
    runtime = open_runtime(db, policy)
    if not no_resume:  # refuse before deciding when the run cannot continue here
        runtime.policy_for(runtime.store.get_approval(approval_id).run_id)
    record = runtime.approve(approval_id, by=by, edit=edited, reason=reason, four_eyes=four_eyes)
    if not as_json:
        console.print(f"approval {record.id[:12]} {record.status} by {record.decided_by}")
    if not no_resume:
        _resume(runtime, record.run_id, as_json)


def reject(
    approval_id: Annotated[str, typer.Argument()],
    reason: Annotated[str, typer.Option("--reason", help="Why; the agent sees it.")],
    db: DbOption = None,
    by: ByOption = None,
    no_resume: NoResume = False,
    policy: PolicyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Reject a pending tool call; the reason goes back to the agent, which continues."""
    runtime = open_runtime(db, policy)
    if not no_resume:  # refuse before deciding when the run cannot continue here
        runtime.policy_for(runtime.store.get_approval(approval_id).run_id)
    record = runtime.reject(approval_id, reason=reason, by=by)
    if not as_json:
        console.print(f"approval {record.id[:12]} rejected by {record.decided_by}")
    if not no_resume:
        _resume(runtime, record.run_id, as_json)


def answer(
    run_id: Annotated[str, typer.Argument()],
    text: Annotated[str, typer.Argument(help="The answer the agent receives.")],
    db: DbOption = None,
    by: ByOption = None,
    no_resume: NoResume = False,
    policy: PolicyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Answer a run that is waiting for input, then resume it."""
    runtime = open_runtime(db, policy)
    record = runtime.store.get_run(run_id)
    if not no_resume:  # refuse before answering when the run cannot continue here
        runtime.policy_for(record.id)
    runtime.answer(record.id, text, by=by)
    if not no_resume:
        _resume(runtime, record.id, as_json)


def pause(
    agent: Annotated[str, typer.Argument(help="Agent name.")],
    reason: Annotated[str, typer.Option("--reason")] = "",
    db: DbOption = None,
    by: ByOption = None,
) -> None:
    """Kill switch: stop all new tool executions of an agent at once."""
    from tether.engine.runtime import _whoami

    open_store(db).set_paused(agent, True, by=by or _whoami(), reason=reason)
    console.print(f"[red]agent {agent} paused[/]: no tool runs until `tether unpause {agent}`")


def unpause(
    agent: Annotated[str, typer.Argument(help="Agent name.")],
    db: DbOption = None,
    by: ByOption = None,
) -> None:
    """Lift the kill switch; waiting runs continue with `tether resume RUN`."""
    from tether.engine.runtime import _whoami

    store = open_store(db)
    store.set_paused(agent, False, by=by or _whoami())
    waiting = [r.id[:12] for r in store.list_runs(status="waiting_input", agent=agent)]
    console.print(
        f"agent {agent} unpaused" + (f"; resume: {', '.join(waiting)}" if waiting else "")
    )
