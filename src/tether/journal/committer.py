"""Journal writes off the event loop, many runs' writes in one transaction.

Each :class:`~tether.journal.store.Store` has one committer: a thread that takes the writes runs
submit, in order, and commits whatever has queued up as one group (see
:meth:`~tether.journal.store.Store.write_group`). While a commit is under way the next group
gathers, so under load one transaction carries many runs' steps, and a run never blocks its
event loop on the database: it awaits the commit (:meth:`GroupCommitter.commit`) only where a
guarantee needs it, and submits read-only work without waiting (:meth:`GroupCommitter.submit`).

A store held in memory (one connection, not shared between threads) writes on the caller's
thread instead.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import queue
import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tether.errors import JournalError
from tether.journal.wakeups import settle, tell_loops

if TYPE_CHECKING:
    from tether.journal.store import Store
    from tether.journal.writes import JournalWrite

Done = Callable[[BaseException | None], None]


@dataclass(slots=True, frozen=True)
class Awaited:
    """A write someone awaits on an event loop: its future is settled on that loop, together
    with every other future of the group on the same loop (one wake-up of the loop a group,
    not one per write: each wake-up from this thread is a switch of the interpreter's lock)."""

    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[None]


Waiter = Done | Awaited

MAX_GROUP = 512
"""Writes committed in one transaction at most (bounds a transaction's size and time)."""
IDLE_EXIT = 2.0
"""Seconds the writer thread waits for work before it ends (the next write starts it again)."""

_STOP = object()


class GroupCommitter:
    """The store's writer thread (started on first use, a daemon)."""

    def __init__(self, store: Store, *, max_group: int = MAX_GROUP) -> None:
        self.store = store
        self.max_group = max_group
        self._queue: queue.SimpleQueue[tuple[JournalWrite, Waiter] | object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self.groups = 0  # transactions committed (for benchmarks and tests)
        self.writes = 0

    def submit(self, write: JournalWrite, done: Waiter) -> None:
        """Queue a write; ``done(error)`` is called from the writer thread once it committed
        (``None``) or was refused (an :class:`Awaited` future is settled on its loop)."""
        if self.store.in_memory:
            error = self._write_now(write)
            if isinstance(done, Awaited):
                settle(done.future, error)
            else:
                done(error)
            return
        with self._start_lock:
            self._queue.put((write, done))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="tether-journal-writer", daemon=True
                )
                self._thread.start()
                _live.add(self)

    async def commit(self, write: JournalWrite) -> None:
        """Submit a write and wait, without blocking the event loop, until it is durable;
        raises why it was refused."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self.submit(write, Awaited(loop, future))
        await future

    def close(self) -> None:
        """Commit what is queued, then stop the thread."""
        with self._start_lock:
            thread = self._thread
            if thread is not None and thread.is_alive():
                self._queue.put(_STOP)
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        with self._start_lock:
            if self._thread is thread:
                self._thread = None

    def _write_now(self, write: JournalWrite) -> BaseException | None:
        try:
            return self.store.write_group([write])[0]
        except (JournalError, Exception) as exc:
            return exc

    def _run(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=IDLE_EXIT)
            except queue.Empty:  # idle: the thread ends (and lets go of the store) until needed
                with self._start_lock:
                    if self._queue.empty():
                        self._thread = None
                        return
                continue
            if item is _STOP:
                return
            group: list[tuple[JournalWrite, Waiter]] = [item]  # type: ignore[list-item]
            while len(group) < self.max_group:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is _STOP:
                    self._queue.put(_STOP)  # after this group
                    break
                group.append(more)  # type: ignore[arg-type]
            writes = [w for w, _ in group]
            try:
                errors: list[BaseException | None] = list(self.store.write_group(writes))
            except BaseException as exc:  # the store gave up: every write of the group fails
                errors = [exc] * len(group)
            self.groups += 1
            self.writes += len(group)
            _tell([done for _, done in group], errors)


def _tell(waiters: Sequence[Waiter], errors: Sequence[BaseException | None]) -> None:
    """Each waiter's outcome: callbacks called here, awaited futures settled on their loops
    (one wake-up a loop)."""
    awaited = []
    for done, error in zip(waiters, errors, strict=True):
        if isinstance(done, Awaited):
            awaited.append((done.loop, done.future, error))
        else:
            done(error)
    tell_loops(awaited)


_live: weakref.WeakSet[GroupCommitter] = weakref.WeakSet()


def _after_fork() -> None:
    """In a forked child: no writer thread runs, and what the parent had queued is the
    parent's to write; each committer starts empty (its lock may have been held at the fork)."""
    for committer in list(_live):
        committer._queue = queue.SimpleQueue()
        committer._start_lock = threading.Lock()
        committer._thread = None


os.register_at_fork(after_in_child=_after_fork)


@atexit.register
def _close_all() -> None:
    """A process that exits commits what its runs submitted without waiting first."""
    for committer in list(_live):
        committer.close()
