"""Shared CLI plumbing: the store option, output helpers, JSON mode."""

from __future__ import annotations

import asyncio
import atexit
import json
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from tether.agent import Agent
from tether.agent_refs import recorded_ref
from tether.engine.result import RunResult
from tether.engine.runtime import Runtime, load_agent
from tether.errors import TetherError, UsageError
from tether.journal.store import RunRecord, Store

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)  # an error is one line

DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        envvar="TETHER_DB",
        help="Store: a SQLite file or a postgresql:// URL (default: tether.db).",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
ByOption = Annotated[
    str | None, typer.Option("--by", help="Who decides (default: your user name).")
]


PolicyOption = Annotated[
    Path | None,
    typer.Option("--policy", envvar="TETHER_POLICY", help="A policy file (TOML/YAML) of rules "
                 "and limits applied on top of the agent's own."),
]  # fmt: skip


AgentOption = Annotated[
    str | None,
    typer.Option(
        "--agent",
        help="The agent to continue the run with (package.module:attribute); without it, the "
        "run's recorded agent, which must be listed in TETHER_AGENTS.",
    ),
]


def load_agent_named(ref: str) -> Agent:
    """The agent at ``ref``, which the operator named; an agent whose own setup fails (an import
    error, a failing factory) is one clear error, before anything is decided or written."""
    try:
        return load_agent(ref)
    except TetherError:
        raise
    except Exception as exc:
        raise UsageError(f"agent {ref!r} failed to set up: {type(exc).__name__}: {exc}") from exc


def load_agent_for(record: RunRecord, ref: str | None) -> Agent:
    """The agent that continues ``record``: the operator's ``--agent``, else the run's recorded
    reference if the operator allows it (see :mod:`tether.agent_refs`)."""
    return load_agent_named(ref or recorded_ref(record.id, record.agent_ref))


def open_store(db: str | None) -> Store:
    """The store a command works on, closed when the command ends (what its runs submitted is
    written, and SQLite folds its write-ahead log back into the database file)."""
    store = Store(db)
    atexit.register(store.close)
    return store


def open_runtime(db: str | None, policy: Path | None = None) -> Runtime:
    """A runtime on the store, with the operator's policy file when one is given."""
    if policy is None:
        return Runtime(open_store(db))
    from tether.policy.config import load_policy

    config = load_policy(policy)
    return Runtime(open_store(db), rules=config.rules, limits=config.limits)


def short_ids(store: Store, table: str, ids: list[str]) -> dict[str, str]:
    """Each id as printed for a human: the shortest prefix that selects it alone in the store
    now (see :meth:`Store.id_prefixes`), safe to paste back into any command."""
    from tether.cli.render import safe

    return {i: safe(p) for i, p in store.id_prefixes(table, ids).items()}


class Interrupted(Exception):
    """Ctrl-C stopped a run mid-way; the journal holds every finished step."""

    def __init__(self, run_id: str, status: str | None) -> None:
        super().__init__(run_id)
        self.run_id = run_id
        self.status = status


def drive(store: Store, run_id: str, work: Coroutine[Any, Any, RunResult]) -> RunResult:
    """Run ``work`` (a run or a resume of ``run_id``) to its end or its next human step.

    Ctrl-C becomes :class:`Interrupted`, naming the run and where it stands, instead of the
    KeyboardInterrupt that the command-line framework would swallow into a bare "Aborted!".
    """
    try:
        return asyncio.run(work)
    except KeyboardInterrupt:
        # what the run had finished is still being written by the journal's writer thread
        # (which the interrupt does not reach): let it finish before reading where the run stands
        store.committer.close()
        try:
            status: str | None = store.get_run(run_id).status
        except Exception:  # not started yet, or the store is what failed
            status = None
        raise Interrupted(run_id, status) from None


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
