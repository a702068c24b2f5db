"""The ``tether`` command."""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Callable

import sqlalchemy as sa
import typer

from tether.cli import approvals, replay, runs
from tether.cli.common import Interrupted, err_console
from tether.cli.render import first_line, safe
from tether.errors import JournalCorrupted, TetherError

app = typer.Typer(
    name="tether",
    help="Run production AI agents: durable runs, guardrails, human approvals, replay.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

COMMANDS: list[Callable[..., None]] = [
    runs.run,
    runs.runs,
    runs.show,
    runs.resume,
    runs.cancel,
    approvals.approvals,
    approvals.approve,
    approvals.reject,
    approvals.answer,
    approvals.pause,
    approvals.unpause,
    replay.replay,
    replay.diff,
    replay.verify,
    replay.export,
]
for command in COMMANDS:
    app.command()(command)


def main() -> None:
    """Entry point: errors become one clear line and exit code 2, never a traceback."""
    try:
        app()
    except Interrupted as stop:
        rid = safe(stop.run_id)
        if stop.status is None:
            err_console.print(f"interrupted: run {rid} did not start")
        else:
            err_console.print(
                f"interrupted: run {rid} is {stop.status}; every finished step is journaled: "
                f"continue it with `tether resume {rid}`"
            )
        sys.exit(130)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except JournalCorrupted as exc:
        err_console.print(f"[red]journal corrupt:[/] {safe(exc)}")
        err_console.print("check every run with `tether verify --all`; other runs are unaffected")
        sys.exit(2)
    except TetherError as exc:
        err_console.print(f"[red]error:[/] {safe(exc)}")
        sys.exit(2)
    except (sa.exc.SQLAlchemyError, sqlite3.Error) as exc:
        # a store that fails mid-command (a damaged file, a dropped connection): transactions
        # roll back, so nothing is half-written
        why = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
        err_console.print(f"[red]store error:[/] {safe(first_line(why))}")
        sys.exit(2)
    except RecursionError:
        err_console.print("[red]error:[/] data nested too deeply to read")
        sys.exit(2)


if __name__ == "__main__":
    main()
