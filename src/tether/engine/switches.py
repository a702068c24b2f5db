"""Fresh kill-switch readings, shared by the runs that ask at the same moment.

A side-effecting call must see the agent's kill switch as it is now, not as it was: it reads the
store. With a thousand runs at once that would be a thousand queries a step; instead the calls
that ask while a reading is under way wait together for the next one, which starts after they
asked (so it is fresh for each of them). One query serves every run waiting at that moment.

The readings are made by a thread of the reader's own, started on first use and ended when idle.
Each asking run awaits a future of its own (cancelling one run cancels nothing shared), and a
reading's answer reaches each event loop with one wake-up for all the runs waiting on it.
"""

from __future__ import annotations

import asyncio
import threading

from tether.journal.store import Store
from tether.journal.wakeups import tell_loops

Switches = dict[str, tuple[bool, str]]
_Waiter = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Switches]"]

IDLE_EXIT = 2.0
"""Seconds the reading thread waits for a request before it ends (the next one starts it)."""


class SwitchReader:
    """The kill switches of one store, read fresh, one query for all the runs that ask at once."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._asked = threading.Condition(threading.Lock())
        self._waiting: list[_Waiter] = []  # for the next reading: asked since the last began
        self._thread: threading.Thread | None = None
        self.readings = 0  # queries made (for tests and benchmarks)

    async def read(self, agent: str) -> tuple[bool, str]:
        """Whether ``agent`` is paused (and why), from a reading started after this call."""
        if self.store.in_memory:  # one connection, not shared between threads
            return self.store.paused(agent)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Switches] = loop.create_future()
        with self._asked:
            self._waiting.append((loop, future))
            if self._thread is None or not self._thread.is_alive():  # (a forked child has none)
                self._thread = threading.Thread(
                    target=self._serve, name="tether-switch-reader", daemon=True
                )
                self._thread.start()
            else:
                self._asked.notify()
        switches = await future
        return switches.get(agent, (False, ""))

    def _serve(self) -> None:
        """The reading thread: take everyone who asked, read once, tell each loop once."""
        while True:
            with self._asked:
                if not self._asked.wait_for(lambda: bool(self._waiting), timeout=IDLE_EXIT):
                    self._thread = None
                    return
                waiting, self._waiting = self._waiting, []
                self.readings += 1
            try:
                outcome: Switches | BaseException = self.store.switches()
            except BaseException as exc:  # each asking run raises it
                outcome = exc
            tell_loops((loop, future, outcome) for loop, future in waiting)
