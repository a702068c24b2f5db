"""The ``tether`` command."""

from __future__ import annotations

import sys
from collections.abc import Callable

import typer

from tether.cli import approvals, replay, runs
from tether.cli.common import err_console
from tether.cli.render import safe
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
    except JournalCorrupted as exc:
        err_console.print(f"[red]journal corrupt:[/] {safe(exc)}")
        err_console.print("check every run with `tether verify --all`; other runs are unaffected")
        sys.exit(2)
    except TetherError as exc:
        err_console.print(f"[red]error:[/] {safe(exc)}")
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted; the run is journaled: continue it with `tether resume RUN`")
        sys.exit(130)


if __name__ == "__main__":
    main()
