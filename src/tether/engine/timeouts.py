"""Tool calls within a time limit, on threads a run can walk away from.

A thread cannot be stopped from outside. A sync tool that overruns its timeout keeps running on
its thread; the run stops waiting for it and discards whatever it returns later. The thread is a
daemon, so a tool that never returns does not keep the process from exiting either (threads of
``asyncio.to_thread``'s executor are joined when the event loop or the interpreter shuts down).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import queue
import threading
from collections.abc import Callable
from typing import Any

import pydantic

from tether.tools import Tool, ToolContext


class TimedOut(Exception):
    """A tool call overran its time (distinct from a ``TimeoutError`` the tool itself raised)."""


async def call_within(
    tool: Tool,
    tctx: ToolContext | None,
    args: pydantic.BaseModel,
    timeout: float | None,
) -> Any:
    """Call a tool within ``timeout`` seconds (``None``: no limit), or raise :class:`TimedOut`.

    A sync tool runs on a daemon thread of the tool pool, so the event loop (and every other run
    on it) goes on while it works; one that overruns keeps running there, unheeded. A tool
    declared ``inline`` (quick, and doing no I/O) runs on the loop itself, where no time limit
    can stop it. An async tool that overruns is cancelled.
    """
    if not tool.is_async and tool.inline:  # on the loop: nothing can stop it, so no time limit
        return tool.call(tctx, args)
    if timeout is not None and timeout <= 0:
        raise TimedOut
    work: asyncio.Future[Any] = (
        asyncio.ensure_future(tool.call(tctx, args))
        if tool.is_async
        else in_daemon_thread(tool.call, tctx, args)
    )
    if timeout is None:
        return await work
    try:
        async with asyncio.timeout(timeout) as scope:
            return await work  # cancelled with the wait when it overruns (a thread's: abandoned)
    except TimeoutError:
        if scope.expired():
            raise TimedOut from None
        raise  # the tool's own TimeoutError


def in_daemon_thread(fn: Callable[..., Any], /, *args: Any) -> asyncio.Future[Any]:
    """Run ``fn(*args)`` on a daemon thread of the tool pool; the future gets its result or
    exception.

    Cancelling the future (a timeout) abandons the call: its outcome, when it comes, is dropped,
    and its thread is busy until then (the pool starts another when every thread is busy).
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()
    context = contextvars.copy_context()

    def settle(result: Any, error: BaseException | None) -> None:
        if future.done():  # abandoned (timed out, or the run stopped)
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def work() -> None:
        try:
            result, error = context.run(fn, *args), None
        except BaseException as exc:  # handed to the awaiting run, as asyncio.to_thread does
            result, error = None, exc
        with contextlib.suppress(RuntimeError):  # a closed event loop: nobody waits any more
            loop.call_soon_threadsafe(settle, result, error)

    _POOL.submit(work)
    return future


class _DaemonPool:
    """Daemon threads for tool calls, started as needed and kept: a thread start per call
    costs more than most calls, and daemon threads never hold the process at exit (a tool that
    never returns included), which a ``ThreadPoolExecutor``'s threads would."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        """Empty, with no threads: a new pool, and the pool of a forked child (which inherits
        the parent's counts and queue but none of its threads)."""
        self._work: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0

    def submit(self, work: Callable[[], None]) -> None:
        with self._lock:
            spawn = self._idle == 0
            if not spawn:
                self._idle -= 1
        self._work.put(work)
        if spawn:
            threading.Thread(target=self._serve, name="tether-tool", daemon=True).start()

    def _serve(self) -> None:
        while True:
            self._work.get()()
            with self._lock:
                self._idle += 1


_POOL = _DaemonPool()
os.register_at_fork(after_in_child=_POOL._reset)
