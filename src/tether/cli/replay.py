"""Commands that look back: replay, diff, verify."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from tether.cli.common import (
    AgentOption,
    DbOption,
    JsonOption,
    console,
    load_agent_for,
    open_store,
    print_json,
    short_ids,
)
from tether.cli.render import safe, short
from tether.errors import UsageError


def replay(
    run_id: Annotated[str, typer.Argument(help="The run to replay.")],
    from_step: Annotated[
        int | None,
        typer.Option("--from-step", help="Fork: replay steps before this one, then go live."),
    ] = None,
    model: Annotated[str | None, typer.Option("--model", help="Fork: the live model spec.")] = None,
    instructions: Annotated[
        Path | None, typer.Option("--instructions", help="Fork: a file with new instructions.")
    ] = None,
    policy: Annotated[
        Path | None,
        typer.Option(
            "--policy", help="Fork: a policy file (TOML/YAML) replacing the agent's rules."
        ),
    ] = None,
    live_reads: Annotated[
        bool,
        typer.Option("--live-reads", help="Fork: run read tools live instead of from the journal."),
    ] = False,
    db: DbOption = None,
    agent_ref: AgentOption = None,
    as_json: JsonOption = False,
) -> None:
    """Replay a run exactly from its journal, or fork it from a step with changes (what-if).

    Exact replay calls no model and no tool: it checks that today's agent code makes the same
    decisions. A fork never executes write or irreversible tools.
    """
    from tether.replay import fork_run, replay_run

    store = open_store(db)
    agent = load_agent_for(store.get_run(run_id), agent_ref)
    fork_requested = any(x is not None for x in (from_step, model, instructions, policy))
    if not fork_requested:
        report = asyncio.run(replay_run(store, run_id, agent))
        if as_json:
            print_json(report.to_dict())
        elif report.matched:
            console.print(
                f"[green]replay matched[/]: {report.steps_compared} steps, every decision the same"
            )
        else:
            d = report.divergence or {}
            console.print(
                f"[red]replay diverged at step {safe(d.get('step'))}[/]: {safe(d.get('what'))}"
            )
            console.print(f"  recorded: {escape(short(d.get('original'), 300))}")
            console.print(f"  replayed: {escape(short(d.get('replayed'), 300))}")
        if not report.matched:
            raise typer.Exit(1)
        return
    rules = limits = None
    if policy is not None:
        from tether.policy.config import load_policy

        loaded = load_policy(policy)
        rules, limits = loaded.rules, loaded.limits
    text = None
    if instructions is not None:
        if not instructions.is_file():
            raise UsageError(f"instructions file {instructions} does not exist")
        text = instructions.read_text()
    new_id = asyncio.run(
        fork_run(
            store,
            run_id,
            from_step=from_step or 1,
            model=model,
            instructions=text,
            rules=rules,
            limits=limits,
            live_reads=live_reads,
            agent=agent,
        )
    )
    record = store.get_run(new_id)
    if as_json:
        print_json(record.to_dict())
        return
    console.print(
        f"fork [bold]{safe(new_id)}[/] of {safe(record.parent_run_id)} from step "
        f"{record.fork_step}: {record.status}"
    )
    ids = short_ids(store, "runs", [record.parent_run_id or run_id, new_id])
    console.print(f"compare: `tether diff {ids[record.parent_run_id or run_id]} {ids[new_id]}`")


def diff(
    run_a: Annotated[str, typer.Argument()],
    run_b: Annotated[str, typer.Argument()],
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show where two runs (e.g. a run and its fork) make different decisions."""
    from tether.replay import diff_runs

    store = open_store(db)
    report = diff_runs(store, run_a, run_b)
    if as_json:
        print_json(report.to_dict())
        return
    if report.same:
        console.print("[green]the runs make the same decisions[/]")
        return
    console.print(f"[yellow]first divergence at step {report.first_divergent_step}[/]")
    table = Table(show_lines=True)
    table.add_column("step", justify="right")
    ids = short_ids(store, "runs", [report.run_a, report.run_b])
    table.add_column(f"A {ids[report.run_a]}", overflow="fold")
    table.add_column(f"B {ids[report.run_b]}", overflow="fold")
    for row in report.steps:
        if row["step"] < (report.first_divergent_step or 0):
            continue
        table.add_row(str(row["step"]), _items(row["a"]), _items(row["b"]))
    console.print(table)


def _items(items: list[Any]) -> str:
    return "\n".join(escape(short(" ".join(str(x) for x in item), 120)) for item in items) or "-"


def export(
    run_id: Annotated[str, typer.Argument(help="The run to export.")],
    endpoint: Annotated[
        str | None,
        typer.Option(
            "--endpoint", envvar="OTEL_EXPORTER_OTLP_ENDPOINT", help="OTLP/HTTP collector URL."
        ),
    ] = None,
    content: Annotated[
        bool,
        typer.Option(
            "--content", help="Include prompts, responses and tool arguments/results (redacted)."
        ),
    ] = False,
    db: DbOption = None,
) -> None:
    """Export a run as OpenTelemetry GenAI spans over OTLP/HTTP."""
    from tether.telemetry.otel import export_run, otlp_tracer_provider

    if not endpoint:
        raise UsageError("no collector: pass --endpoint or set OTEL_EXPORTER_OTLP_ENDPOINT")
    store = open_store(db)
    record = store.get_run(run_id)
    provider = otlp_tracer_provider(endpoint)
    spans = export_run(store, record.id, tracer_provider=provider, capture_content=content or None)
    provider.force_flush()
    provider.shutdown()
    console.print(f"exported {spans} spans of run {safe(record.id)} to {safe(endpoint)}")


def verify(
    run_id: Annotated[str | None, typer.Argument(help="A run, or --all.")] = None,
    all_runs: Annotated[
        bool, typer.Option("--all", help="Verify every run and the database file itself.")
    ] = False,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Check hash chains: any edited, dropped or reordered event is named.

    Each run's chain is checked against its anchor in the run row (head hash, event count), its
    approvals against the journal, and with ``--all`` the run ledger too (a deleted run) and the
    hard limits' counters against the reservations journaled (a lowered counter). With
    ``TETHER_JOURNAL_KEY`` set, keyed runs' HMACs are checked; without it their links only.
    The store is opened read-only (nothing is migrated or written, so a journal on read-only
    media can be checked). ``--all`` also runs the database's own integrity check (SQLite), which
    finds damage no chain covers, such as a corrupt index page.
    """
    import sqlalchemy as sa

    from tether.journal.store import Store

    if (run_id is None) == (not all_runs):
        raise UsageError("give a run id or --all (not both)")
    from tether.journal.audit import verify_counters, verify_ledger, verify_run

    store = Store(db, read_only=True)
    integrity = store.integrity_problems() if all_runs else None
    damage = list(integrity or [])
    problems: list[dict[str, Any]] = []
    unkeyed_checks = 0  # keyed runs whose HMACs could not be checked (no key given)
    try:
        ids = store.run_ids() if all_runs else [store.get_run(run_id or "").id]
    except sa.exc.DBAPIError as exc:
        damage.append(f"the runs cannot be listed: {exc.orig}")
        ids = []
    for rid in ids:
        try:
            problem, hashed = verify_run(store, rid, store.journal_key)
            unkeyed_checks += not hashed
        except sa.exc.DBAPIError as exc:
            problems.append({"run_id": rid, "seq": None, "reason": f"unreadable: {exc.orig}"})
            continue
        if problem is not None:
            problems.append({"run_id": rid, "seq": problem.seq, "reason": problem.reason})
    if all_runs:
        found = verify_ledger(store) + verify_counters(store)
        problems += [{"run_id": None, "seq": None, "reason": r} for r in found]
    if as_json:
        print_json(
            {
                "runs": len(ids),
                "problems": problems,
                "database_checked": integrity is not None,
                "database_problems": damage,
                "keyed": store.journal_key is not None,
                "hashes_unchecked": unkeyed_checks,
            }
        )
    else:
        for p in problems:
            where = "" if not p["seq"] else f" event #{p['seq']}"
            who = "" if p["run_id"] is None else f" run {safe(p['run_id'])}{where}:"
            console.print(f"[red]TAMPERED[/]{who} {safe(p['reason'])}")
        for line in damage:
            console.print(f"[red]DATABASE DAMAGED[/] {safe(line)}")
        if not problems and not damage:
            checked = "" if integrity is None else "; the database passes its integrity check"
            console.print(f"[green]ok[/]: {len(ids)} run(s), every hash chain verifies{checked}")
            if store.journal_key is None:
                console.print("the chains were checked unkeyed (TETHER_JOURNAL_KEY is not set)")
            if unkeyed_checks:
                console.print(
                    f"{unkeyed_checks} keyed run(s): links checked, HMACs not (no key given)"
                )
    if problems or damage:
        raise typer.Exit(1)
