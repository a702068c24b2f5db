"""Fresh kill-switch readings, shared by the runs on one event loop.

A side-effecting call must see the agent's kill switch as it is now, not as it was: it reads the
store. With a thousand runs at once that would be a thousand queries a step; instead a call
joins any reading that started after it asked (so it is still fresh for that call) and otherwise
starts one, on a worker thread. One query then serves every run waiting at that moment.
"""

from __future__ import annotations

import asyncio
import time

from tether.journal.store import Store


class SwitchReader:
    """The kill switches of one store, read fresh, one query for all the runs that ask at once."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._reading: asyncio.Future[dict[str, tuple[bool, str]]] | None = None
        self._started = 0.0
        self.readings = 0  # queries made (for tests and benchmarks)

    async def read(self, agent: str) -> tuple[bool, str]:
        """Whether ``agent`` is paused (and why), from a reading started after this call."""
        if self.store.in_memory:  # one connection, not shared between threads
            return self.store.paused(agent)
        asked = time.monotonic()
        loop = asyncio.get_running_loop()
        while True:
            reading = self._reading
            if reading is not None and reading.get_loop() is not loop:
                reading = None  # another event loop's (asyncio.run per run): not ours to await
            if reading is not None and self._started >= asked:
                switches = await asyncio.shield(reading)
                return switches.get(agent, (False, ""))
            if reading is not None and not reading.done():
                await asyncio.wait({reading})  # it started before we asked: wait, then read anew
                continue
            self._started = time.monotonic()
            self.readings += 1
            self._reading = loop.run_in_executor(None, self.store.switches)
