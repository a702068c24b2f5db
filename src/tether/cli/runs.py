"""Commands about runs: run, runs, show, resume, cancel."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from tether.cli.common import (
    AgentOption,
    ByOption,
    DbOption,
    JsonOption,
    PolicyOption,
    console,
    drive,
    load_agent_for,
    load_agent_named,
    open_runtime,
    open_store,
    print_json,
    short_ids,
)
from tether.cli.render import safe, short, status_text, summarise, timeline_block, when
from tether.engine.result import RunResult
from tether.engine.runtime import Runtime, rebuild_state
from tether.errors import JournalError, UsageError
from tether.journal.events import (
    Event,
    ModelResponded,
    ValidationFailed,
    asked_at,
    decision_of,
    request_of,
)
from tether.journal.store import Store
from tether.text import visible


def _parse_input(text: str) -> Any:
    if text.startswith("@"):
        path = Path(text[1:])
        if not path.is_file():
            raise UsageError(f"input file {path} does not exist")
        text = path.read_text()
    stripped = text.strip()
    if stripped[:1] in ("{", "["):
        try:
            return json.loads(stripped)
        except ValueError as exc:
            raise UsageError(f"input looks like JSON but does not parse: {exc}") from exc
        except RecursionError as exc:
            raise UsageError("input JSON is nested too deeply to read") from exc
    return text


def _live_printer(quiet: bool) -> Any:
    if quiet:
        return None

    def on_event(ev: Event) -> None:
        try:
            line = escape(summarise(ev, 90))
        except Exception:
            line = ""
        console.print(f"  [dim]{ev.step:>3}[/] {safe(f'{ev.type:<18}')} {line}")

    return on_event


def report(result: RunResult, as_json: bool, store: Store) -> None:
    """Where a run stands, with the command that moves it on (its ids as the store selects)."""
    if as_json:
        print_json(result.to_dict())
        return
    console.print(
        f"run [bold]{safe(result.run_id)}[/] {status_text(result.status)} · "
        f"{result.steps} steps · {result.input_tokens}→{result.output_tokens} tokens"
    )
    if result.reason:
        console.print(f"  reason: {safe(result.reason)}")
    if result.output is not None:
        console.print(f"  output: {escape(short(result.output, 400))}")
    if result.status == "waiting_approval" and result.waiting_for:
        aid = result.waiting_for["approval_id"]
        aid = short_ids(store, "approvals", [aid])[aid]
        console.print(
            f"  waiting for approval [bold]{aid}[/]: "
            f"`tether approve {aid}` or `tether reject {aid} --reason ...`"
        )
    if result.status == "waiting_input" and result.waiting_for:
        console.print(f"  question: {safe(result.waiting_for.get('question'))}")
        rid = short_ids(store, "runs", [result.run_id])[result.run_id]
        console.print(f'  answer with `tether answer {rid} "..."`')


def run(
    agent_ref: Annotated[str, typer.Argument(help="The agent, as package.module:attribute.")],
    input: Annotated[str, typer.Option("--input", "-i", help="The input: text, JSON, or @file.")],
    db: DbOption = None,
    model: Annotated[
        str | None, typer.Option("--model", help="Model spec (e.g. local, openai:gpt-4o-mini).")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Do not print events.")] = False,
    policy: PolicyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Start a run of an agent and drive it until it finishes or waits for a human."""
    agent = load_agent_named(agent_ref)
    value = _parse_input(input)
    runtime = open_runtime(db, policy)
    runtime.on_event = _live_printer(quiet or as_json)
    run_id = secrets.token_hex(16)  # chosen here, so an interruption can name the run
    result = drive(
        runtime.store,
        run_id,
        runtime.run(agent, value, run_id=run_id, agent_ref=agent_ref, model=model),
    )
    report(result, as_json, runtime.store)


def resume(
    run_id: Annotated[str, typer.Argument(help="Run id (a unique prefix is enough).")],
    db: DbOption = None,
    agent_ref: AgentOption = None,
    model: Annotated[str | None, typer.Option("--model", help="Model spec override.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
    policy: PolicyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Continue a run from its journal (after a crash, an approval or an answer)."""
    runtime = open_runtime(db, policy)
    record = runtime.store.get_run(run_id)
    agent = load_agent_for(record, agent_ref)
    runtime.on_event = _live_printer(quiet or as_json)
    result = drive(runtime.store, record.id, runtime.resume(record.id, agent, model=model))
    report(result, as_json, runtime.store)


def runs(
    db: DbOption = None,
    status: Annotated[str | None, typer.Option("--status", help="Only runs in this state.")] = None,
    agent: Annotated[str | None, typer.Option("--agent", help="Only runs of this agent.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1)] = 50,
    as_json: JsonOption = False,
) -> None:
    """List runs, newest first."""
    store = open_store(db)
    records = store.list_runs(status=status, agent=agent, limit=limit)
    if as_json:
        print_json([r.to_dict() for r in records])
        return
    total = store.count_runs(status=status, agent=agent) if len(records) == limit else len(records)
    ids = short_ids(store, "runs", [r.id for r in records])
    table = Table(title=f"{len(records)} runs", show_lines=False)
    for col in ("run", "agent", "status", "steps", "tokens", "cost", "started", "reason"):
        table.add_column(col, overflow="fold")
    for r in records:
        table.add_row(
            ids[r.id],
            safe(f"{r.agent} v{r.agent_version}"),
            status_text(r.status),
            str(r.steps),
            f"{r.input_tokens}→{r.output_tokens}",
            f"${r.cost_usd:.4f}",
            when(r.created_at),
            escape(short(r.reason or "", 50)),
        )
    console.print(table)
    if total > len(records):
        console.print(f"showing {len(records)} of {total} runs; see more with --limit")


def show(
    run_id: Annotated[str, typer.Argument(help="Run id (a unique prefix is enough).")],
    db: DbOption = None,
    full: Annotated[bool, typer.Option("--full", help="Show full prompts and responses.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Show a run's timeline: every prompt, tool call, decision, approval and result."""
    store = open_store(db)
    record = store.get_run(run_id)
    events = store.events(record.id)
    if as_json:
        print_json({"run": record.to_dict(), "events": [e.to_dict() for e in events]})
        return
    console.print(
        f"[bold]run {safe(record.id)}[/] · agent {safe(record.agent)} "
        f"v{safe(record.agent_version)} · "
        f"{status_text(record.status)} · {len(events)} events"
    )
    if record.reason:
        console.print(f"reason: {safe(record.reason)}")
    width = 10_000 if full else 100
    color = console.is_terminal and not console.no_color
    console.file.write(timeline_block(events, width, color=color))
    console.file.flush()
    steps = step_summary(events)
    if steps:
        total_ms = sum(s["ms"] for s in steps)
        console.print(
            f"\n[bold]{len(steps)} steps[/] · {total_ms / 1000:.2f} s · "
            f"{sum(s['in'] for s in steps)}→{sum(s['out'] for s in steps)} tokens · "
            f"${sum(s['cost'] for s in steps):.4f}"
        )
        if len(steps) <= 60:
            table = Table(show_edge=False, pad_edge=False)
            for col in ("step", "ms", "tokens", "cost", "calls", "decisions"):
                table.add_column(col, justify="right" if col != "calls" else "left")
            for s in steps:
                table.add_row(str(s["step"]), f"{s['ms']:.0f}", f"{s['in']}→{s['out']}",
                              f"${s['cost']:.4f}", safe(", ".join(s["calls"])),
                              safe(" ".join(s["decisions"])))  # fmt: skip
            console.print(table)
    if full:
        state = rebuild_state(record.id, events, store.chain_key(record.id))
        console.print("\n[bold]conversation as the model last saw it[/]")
        for m in state.messages:
            console.print(f"[bold]{safe(m.role)}[/]: {escape(visible(m.content, newlines=True))}")
            for c in m.tool_calls:
                console.print(f"  → {safe(c.name)}({safe(c.arguments_text())}) \\[{safe(c.id)}]")


def step_summary(events: list[Event]) -> list[dict[str, Any]]:
    """Per step: wall time, tokens, cost, the calls made and the decisions taken."""
    steps: dict[int, dict[str, Any]] = {}
    for ev in events:
        if ev.step == 0:
            continue
        s = steps.setdefault(
            ev.step,
            {
                "step": ev.step,
                "start": ev.ts,
                "end": ev.ts,
                "in": 0,
                "out": 0,
                "cost": 0.0,
                "calls": [],
                "decisions": [],
            },
        )
        s["end"] = ev.ts
        try:
            data = ev.data
        except (JournalError, ValueError):  # a corrupt row: the timeline above marks it
            continue
        if request_of(data) is not None:  # the step began when the model was asked
            s["start"] = min(s["start"], asked_at(ev.ts, data))
        decided = decision_of(data)
        if isinstance(data, ModelResponded):
            r = data.response
            s["in"] += r.usage.input_tokens
            s["out"] += r.usage.output_tokens
            s["cost"] += r.cost_usd or 0.0
            s["calls"] += [c.name for c in r.tool_calls]
        elif decided is not None and decided.decision is not None:
            s["decisions"].append(decided.decision.value)
        elif isinstance(data, ValidationFailed):
            s["decisions"].append("invalid")
    for s in steps.values():
        s["ms"] = (s.pop("end") - s.pop("start")) * 1000
    return [steps[k] for k in sorted(steps)]


def cancel(
    run_id: Annotated[str, typer.Argument()],
    reason: Annotated[str, typer.Option("--reason", help="Why.")] = "cancelled by operator",
    db: DbOption = None,
    by: ByOption = None,
) -> None:
    """Cancel a run that has not finished."""
    store = open_store(db)
    record = store.get_run(run_id)
    Runtime(store).cancel(record.id, reason=reason, by=by)
    console.print(f"run {safe(record.id)} cancelled")
