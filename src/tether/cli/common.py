"""Shared CLI plumbing: the store option, output helpers, JSON mode."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from tether.engine.runtime import Runtime
from tether.journal.store import Store

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

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


def open_store(db: str | None) -> Store:
    return Store(db)


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


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
