"""`make demo`: the support-desk ticket agent over the sample tickets.

Every ticket runs through the full runtime: validation, policy rules, approvals, the journal.
Reads run at once; anything that writes waits for a human; hostile requests are refused. At the
end: a summary table, the pending approvals, and the commands to approve, inspect and replay.

    python -m examples.demo [--model local|scripted|SPEC] [--tickets N]

The model is the local one (llama.cpp, SmolLM2-135M) when it is installed, else a scripted
planner that follows each ticket's plan (set ``--model scripted`` to choose it).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from examples.support_desk.agent import make_ticket_agent
from examples.support_desk.store import Store as DeskStore
from examples.support_desk.tickets import TICKETS, Ticket, TicketResult
from tether import Agent, ModelRequest, ScriptedModel, ToolCall
from tether.engine import Runtime
from tether.journal import Store
from tether.journal.events import decision_of
from tether.models.scripted import ScriptItem
from tether.text import visible

HOME = Path(os.environ.get("TETHER_DEMO_DIR", ".tether"))
DB = HOME / "demo.db"
DESK_DB = HOME / "support.db"
CHOSEN = HOME / "demo-model"
MODEL_ENV = "TETHER_DEMO_MODEL"
AGENT_REF = "examples.demo:demo_agent"  # what `tether approve` / `resume` import, once allowed
LOCAL_MAX_TOKENS = 128


def _ticket_of(request: ModelRequest) -> Ticket | None:
    user = next((m.content for m in request.messages if m.role == "user"), "")
    try:
        ticket_id = json.loads(user).get("ticket_id")
    except (ValueError, AttributeError):
        return None
    return next((t for t in TICKETS if t.id == ticket_id), None)


def plan_model() -> ScriptedModel:
    """A scripted model that follows each ticket's plan, then tries its forbidden calls.

    It decides from the conversation alone, so runs resume in any process after approvals.
    """

    def decide(request: ModelRequest) -> ScriptItem:
        ticket = _ticket_of(request)
        if ticket is None:
            return json.dumps(
                {
                    "reply_draft": "I could not read this ticket.",
                    "tags": ["unreadable"],
                    "proposed_actions": [],
                    "escalation_reason": "unreadable ticket",
                }
            )
        calls = [*ticket.plan, *ticket.forbidden]
        done = sum(1 for m in request.messages if m.role == "tool")
        if done < len(calls):
            c = calls[done]
            return ToolCall(f"{ticket.id}-{done}", c.tool, dict(c.args))
        outcomes = [m.content for m in request.messages if m.role == "tool"]
        blocked = [o for o in outcomes if o.startswith(("Denied", "A human rejected", "Error"))]
        result = TicketResult(
            reply_draft=f"Hello, about '{ticket.subject}': we have looked into it"
            + (" and some requests could not be done under our policy." if blocked else "."),
            tags=list(ticket.tags) + (["hostile"] if ticket.hostile else []),
            proposed_actions=[],
            escalation_reason="request blocked by policy" if blocked and ticket.hostile else None,
        )
        return result.model_dump_json()

    return ScriptedModel(decide, name="scripted:planner")


def _model_spec(requested: str | None) -> str:
    if requested:
        return requested
    if os.environ.get(MODEL_ENV):
        return os.environ[MODEL_ENV]
    if CHOSEN.is_file():  # what the last `make demo` ran with, so approvals resume alike
        return CHOSEN.read_text().strip()
    try:
        import llama_cpp  # noqa: F401

        return "local"
    except ImportError:
        return "scripted"


def _model(spec: str) -> Any:
    if spec == "scripted":
        return plan_model()
    if spec == "local":
        # the `local` spec, with answers kept short: the grammar fits each JSON answer (a tool
        # call, or the ticket result with a brief reply draft) in LOCAL_MAX_TOKENS
        from tether.models import RetryModel
        from tether.models.local import LocalModel
        from tether.models.resolve import LOCAL_ATTEMPTS

        local = LocalModel(max_tokens=LOCAL_MAX_TOKENS)
        return RetryModel(local, max_attempts=LOCAL_ATTEMPTS, base_delay=0.2, max_delay=2.0)
    from tether.models.resolve import resolve_model

    return resolve_model(spec)


def demo_agent() -> Agent:
    """The agent as `tether approve` / `tether resume` rebuild it for demo runs.

    On the local model the prompt leaves out the written policy (the policy is enforced by the
    rules anyway, and a 135M-parameter model reads 3,000 tokens slowly) and runs are shorter.
    """
    spec = _model_spec(None)
    if spec == "scripted":
        return make_ticket_agent(desk_db_url(), model=_model(spec))
    agent = make_ticket_agent(desk_db_url(), model=_model(spec), include_policy=False)
    return dataclasses.replace(agent, limits=dataclasses.replace(agent.limits, max_steps=4))


def desk_db_url() -> str:
    return f"sqlite:///{DESK_DB.resolve()}"


def _counts(store: Store, run_id: str) -> Counter[str]:
    c: Counter[str] = Counter()
    for ev in store.events(run_id):
        decision = decision_of(ev.data)
        if decision is not None and decision.decision is not None:
            c[decision.decision.value] += 1
        elif ev.type == "validation_failed":
            c["invalid"] += 1
        elif ev.type == "approval_requested":
            c["waiting"] += 1
        elif ev.type == "escalated":
            c["escalated"] += 1
    return c


@dataclasses.dataclass
class Row:
    """One ticket's run, for the summary."""

    ticket: Ticket
    result: Any
    counts: Counter[str]
    seconds: float


def _fit(line: str, width: int = 79) -> str:
    """``line`` cut to ``width`` characters (the full text is one `tether approvals` away)."""
    return line if len(line) <= width else line[: width - 1] + "…"


def _totals(rows: list[Row]) -> Counter[str]:
    totals: Counter[str] = Counter()
    for row in rows:
        totals.update(row.counts)
        totals["steps"] += row.result.steps
        totals["tokens"] += row.result.input_tokens + row.result.output_tokens
    totals["escalated"] = totals["escalate"] + totals["escalated"]
    return totals


def summary(rows: list[Row], elapsed: float, run_ids: dict[str, str]) -> Table:
    """One line per ticket, narrow enough for an 80-column terminal; `tether show RUN` has the rest.

    ``calls`` counts the policy's verdicts on the run's tool calls: allowed / denied / waiting for a
    human (``!`` marks a hostile ticket). ``run_ids``: the shortest prefix that selects each run.
    """
    table = Table(
        title=f"{len(rows)} tickets in {elapsed:.1f} s", box=box.SIMPLE_HEAD, pad_edge=False
    )
    for col, justify in (
        ("ticket", "left"),
        ("status", "left"),
        ("steps", "right"),
        ("tokens", "right"),
        ("secs", "right"),
        ("calls a/d/w", "right"),
        ("run", "left"),
    ):
        table.add_column(col, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for row in rows:
        c = row.counts
        table.add_row(
            row.ticket.id + (" !" if row.ticket.hostile else ""),
            str(row.result.status),
            str(row.result.steps),
            str(row.result.input_tokens + row.result.output_tokens),
            f"{row.seconds:.1f}",
            f"{c['allow']}/{c['deny']}/{c['waiting']}",
            run_ids.get(row.result.run_id, row.result.run_id),
        )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", help="local, scripted, or a model spec (openai:..., ...)")
    parser.add_argument("--tickets", type=int, default=len(TICKETS))
    args = parser.parse_args()
    console = Console()
    CHOSEN.unlink(missing_ok=True)
    spec = _model_spec(args.model)
    os.environ[MODEL_ENV] = spec
    HOME.mkdir(parents=True, exist_ok=True)
    CHOSEN.write_text(spec)
    for path in (DB, DESK_DB):
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
    DeskStore.open(desk_db_url(), reset=True).close()
    console.print(
        f"[bold]tether demo[/]: the support-desk agent on {args.tickets} tickets, "
        f"model [cyan]{spec}[/]"
    )
    if spec == "scripted":
        console.print("(a scripted planner: no model installed or chosen)")
    started = time.perf_counter()
    runtime = Runtime(Store(str(DB)))
    agent = demo_agent()
    rows: list[Row] = []
    tickets = TICKETS[: args.tickets]
    for n, ticket in enumerate(tickets, 1):
        began = time.perf_counter()
        result = asyncio.run(
            runtime.run(agent, ticket.as_input(), agent_ref=AGENT_REF)
        )
        counts = _counts(runtime.store, result.run_id)
        row = Row(ticket, result, counts, time.perf_counter() - began)
        rows.append(row)
        console.print(
            f"[{n:>2}/{len(tickets)}] {ticket.id} {result.status!s:<16} "
            f"{result.steps} steps {row.seconds:5.1f} s  {ticket.subject[:28]}",
            highlight=False,
        )
    elapsed = time.perf_counter() - started
    run_ids = runtime.store.id_prefixes("runs", [row.result.run_id for row in rows])
    console.print(summary(rows, elapsed, run_ids))
    totals = _totals(rows)
    console.print(
        f"totals: {totals['steps']} steps · {totals['tokens']} tokens · tool calls allowed "
        f"{totals['allow']} · denied {totals['deny']} · invalid {totals['invalid']}\n"
        f"        waiting for approval {totals['waiting']} · escalations {totals['escalated']}",
        highlight=False,
    )
    pending = runtime.store.list_approvals()
    console.print(
        f"\n[bold]{len(pending)} actions wait for a human[/] (nothing that writes ran without one):"
    )
    approval_ids = runtime.store.id_prefixes("approvals", [a.id for a in pending[:8]])
    for a in pending[:8]:
        line = _fit(f"  {approval_ids[a.id]}  {a.tool}({visible(json.dumps(a.args))})")
        console.print(escape(line), highlight=False)
    db = f"--db {DB}"
    console.print("\n[bold]next[/] (continuing a run imports only agents you allow)")
    console.print(f"  export TETHER_AGENTS={AGENT_REF}")
    console.print(f"  tether approvals {db}")
    if pending:
        aid = runtime.store.id_prefixes("approvals", [pending[0].id])[pending[0].id]
        console.print(f"  tether approve {aid} {db}        # or --edit '{{...}}'")
        console.print(f"  tether reject {aid} --reason 'not today' {db}")
    if rows:
        rid = runtime.store.id_prefixes("runs", [rows[0].result.run_id])[rows[0].result.run_id]
        console.print(f"  tether show {rid} {db}     # a run in detail")
        console.print(f"  tether replay {rid} {db}")
    console.print(f"  tether runs {db}")
    if spec == "local":
        console.print(
            "(the local model server stays up for these; it exits after 10 idle minutes)"
        )


if __name__ == "__main__":
    main()
