"""Shared CLI plumbing: the store option, output helpers, JSON mode."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.console import Console

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


def open_store(db: str | None) -> Store:
    return Store(db)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
