"""Outcomes handed from a worker thread to the event loops awaiting them.

Every ``call_soon_threadsafe`` wakes a loop and hands the interpreter's lock over, so a thread
that finishes work many runs await (a group commit, a kill-switch reading) tells each loop once,
with every outcome for it, rather than once per run.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Sequence
from typing import Any

Outcome = tuple["asyncio.Future[Any]", Any]
"""A future and what it gets: an exception is raised by it, anything else is its result."""


def tell_loops(
    waiting: Iterable[tuple[asyncio.AbstractEventLoop, asyncio.Future[Any], Any]],
) -> None:
    """From any thread: settle each ``(loop, future, outcome)``, one call for each loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[Outcome]] = {}
    for loop, future, outcome in waiting:
        by_loop.setdefault(loop, []).append((future, outcome))
    for loop, outcomes in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
            loop.call_soon_threadsafe(settle_all, outcomes)


def settle_all(outcomes: Sequence[Outcome]) -> None:
    """On the futures' loop: each future gets its outcome (one cancelled meanwhile is left)."""
    for future, outcome in outcomes:
        settle(future, outcome)


def settle(future: asyncio.Future[Any], outcome: Any) -> None:
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
