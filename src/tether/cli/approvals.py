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
    short_ids,
)
from tether.cli.render import safe, short, when
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


def _resume(runtime: Runtime, run_id: str, as_json: bool) -> None:
    result = asyncio.run(runtime.resume(run_id))
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
    record = runtime.approve(approval_id, by=by, edit=edited, reason=reason, four_eyes=four_eyes)
    if not as_json:
        console.print(f"approval {safe(record.id)} {record.status} by {safe(record.decided_by)}")
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
    record = runtime.reject(approval_id, reason=reason, by=by)
    if not as_json:
        console.print(f"approval {safe(record.id)} rejected by {safe(record.decided_by)}")
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
