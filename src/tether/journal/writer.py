"""A run's journal writer: what the engine talks to for every event it records.

    event = writer.record(data, step)  # redact the whole payload, encode it, buffer it
    await writer.flush(run_row)        # durable: a side effect's intent or result, a wait, the end
    writer.checkpoint(run_row)         # read-only work: written soon, without waiting

Redaction covers the whole payload, before anything else sees it: the engine folds the (masked)
event it gets back, so what the model sees next is what the journal holds, and an unmasked
secret never reaches the disk. Events are hashed when a flush seals them, in order, and written
by the store's :class:`~tether.journal.committer.GroupCommitter`, off the event loop and in one
transaction with other runs' writes.

Read-only work (model turns whose calls only read, denials, validation failures) may be lost in a
crash, since resume redoes it, so it is grouped: :meth:`RunWriter.checkpoint` submits it when
``FLUSH_INTERVAL`` has passed since the last write or ``FLUSH_EVENTS`` events wait, and otherwise
a timer on the event loop submits the completed steps at most ``FLUSH_INTERVAL`` later. The
journal always ends at a step boundary or at the flush point of a side effect.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tether.journal.chain import seal_events, unsealed_event
from tether.journal.events import Event, EventData
from tether.journal.jsontext import encode_payload_bytes
from tether.journal.leases import Lease
from tether.journal.store import ApprovalRecord, RunRecord, Store
from tether.journal.writes import JournalWrite

FLUSH_INTERVAL = 0.025
"""Seconds read-only work may wait in memory before it is written."""
FLUSH_EVENTS = 1024
"""Buffered events that force read-only work out regardless of time (bounds the memory held and
the size of one write)."""

Redact = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass(slots=True)
class RunWriter:
    """Records one run's events and writes them; see the module docstring."""

    store: Store
    run_id: str
    seq: int = 0  # the last event recorded
    head: str = ""  # the hash of the last event sealed
    redact: Redact | None = None
    # given a payload's JSON text, whether ``redact`` might change it (None: always redact)
    may_change: Callable[[str], bool] | None = None
    clock: Callable[[], float] = time.time
    lease: Lease | None = None  # every write checks it (None: writes unchecked)
    on_event: Callable[[Event], None] | None = None  # sees each event, sealed, as recorded
    # events not written yet; the last ``len(_raws)`` of them are not sealed (hashed) yet
    buffer: list[Event] = field(default_factory=list)
    _raws: list[bytes] = field(default_factory=list)
    # approval requests the buffered events ask for: written with them, in one transaction
    approvals: list[ApprovalRecord] = field(default_factory=list)
    _new_run: RunRecord | None = None  # the run's row, until the first write inserts it
    _settled: int = 0  # leading buffered events that end at a checkpoint (complete steps)
    _flushed_at: float = field(default_factory=time.monotonic)
    _timer: asyncio.TimerHandle | None = None
    _failed: BaseException | None = None  # a write submitted without waiting was refused
    released: bool = False  # the lease was given up with the last write (see flush)

    # -- recording ------------------------------------------------------------------------------

    def record(self, data: EventData, step: int) -> tuple[Event, EventData]:
        """Redact, encode and buffer one event; the event (not hashed yet) and its data as the
        journal holds it (masked)."""
        payload = data.to_json()
        raw = encode_payload_bytes(payload)
        text = raw.decode()
        if self.redact is not None and (self.may_change is None or self.may_change(text)):
            masked = self.redact(payload)
            if masked is not payload:
                data = type(data).from_json(masked)
                raw = encode_payload_bytes(masked)
                text = raw.decode()
        self.seq += 1
        event = unsealed_event(self.run_id, self.seq, data.type, step, self.clock(), text)
        self.buffer.append(event)
        self._raws.append(raw)
        if self.on_event is not None:
            self.seal()
            self.on_event(self.buffer[-1])
        return event, data

    def masked(self, value: dict[str, Any]) -> dict[str, Any]:
        """``value`` as the journal would hold it (the same object when nothing needs masking)."""
        if self.redact is None:
            return value
        if self.may_change is not None and not self.may_change(
            encode_payload_bytes(value).decode()
        ):
            return value
        return self.redact(value)

    def mask_text(self, text: str) -> str:
        return text if self.redact is None else str(self.redact({"t": text})["t"])

    def start(self, record: RunRecord) -> None:
        """A new run: its row is written by the first write, in the same transaction as its
        first events, so a run never exists without its start. That write comes at the run's
        first side effect, wait or end, or ``FLUSH_INTERVAL`` from now."""
        self._new_run = record
        self._settled = len(self.buffer)
        self._arm_timer()

    def seal(self) -> None:
        """Hash the buffered events not hashed yet, in order (every write seals first)."""
        raws = self._raws
        if not raws:
            return
        first = len(self.buffer) - len(raws)
        sealed = seal_events(self.buffer[first:], raws, self.head, self.store.journal_key)
        self.buffer[first:] = sealed
        raws.clear()
        self.head = sealed[-1].hash

    # -- writing --------------------------------------------------------------------------------

    @property
    def pending(self) -> bool:
        return bool(self.buffer) or self._new_run is not None

    async def flush(
        self, run_row: dict[str, Any] | None = None, *, release_lease: bool = False
    ) -> None:
        """Make everything recorded durable (and the run row's ``run_row`` columns), waiting
        without blocking the event loop. ``release_lease``: the run stops being driven here,
        and its lease is given up in the same transaction (:attr:`released` says it was)."""
        self._raise_failed()
        write = self._take(run_row)
        if write is not None:
            write.release_lease = release_lease
            await self.store.committer.commit(write)
            self.released = release_lease

    def flush_now(self, run_row: dict[str, Any] | None = None) -> None:
        """:meth:`flush`, from code that has no event loop (the CLI's decisions)."""
        self._raise_failed()
        write = self._take(run_row)
        if write is not None:
            self.store.write(write)

    def checkpoint(self, run_row: Callable[[], dict[str, Any] | None]) -> None:
        """The end of a step of read-only work: submit it if due, else leave it to the timer."""
        if (
            len(self.buffer) >= FLUSH_EVENTS
            or time.monotonic() - self._flushed_at >= FLUSH_INTERVAL
        ):
            self._submit(self._take(run_row()))
            return
        self._settled = len(self.buffer)
        self._arm_timer()

    def flush_settled(self) -> None:
        """Submit the buffered complete steps (not a step in progress); the run row is left
        alone. Used by the timer, and when the run stops on an exception, so the journal keeps
        what the run had finished and still ends at a step boundary."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        n = self._settled
        if n:
            self._submit(self._take(None, upto=n))

    # -- inside -------------------------------------------------------------------------------

    def _take(
        self, run_row: dict[str, Any] | None, *, upto: int | None = None
    ) -> JournalWrite | None:
        """The next write: the buffered events (up to ``upto``), taken out of the buffer."""
        n = len(self.buffer) if upto is None else upto
        if n == 0 and not run_row and self._new_run is None:
            return None
        self.seal()
        events = self.buffer[:n]
        del self.buffer[:n]
        approvals: list[ApprovalRecord] = []
        if upto is None:  # approval rows go with the events that request them: the rest
            approvals, self.approvals = self.approvals, []
        if self._timer is not None and upto is None:
            self._timer.cancel()
            self._timer = None
        self._settled = 0
        self._flushed_at = time.monotonic()
        new_run, self._new_run = self._new_run, None
        if new_run is not None:  # its row as it stands now, with its first events
            row = {**new_run.to_dict(), **(run_row or {}), "id": new_run.id}
            return JournalWrite(
                events, new_run=_encoded_row(row), lease=self.lease, approvals=approvals
            )
        if run_row and not events:
            run_row = {**run_row, "id": self.run_id}
        return JournalWrite(events, run_update=run_row, lease=self.lease, approvals=approvals)

    def _submit(self, write: JournalWrite | None) -> None:
        """Write without waiting; a refusal is raised by the next :meth:`flush`."""
        if write is None:
            return

        def done(error: BaseException | None) -> None:
            if error is not None and self._failed is None:
                self._failed = error

        self.store.committer.submit(write, done)

    def _raise_failed(self) -> None:
        failed, self._failed = self._failed, None
        if failed is not None:
            raise failed

    def _arm_timer(self) -> None:
        if self._timer is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop to wake us: write now
            self.flush_now()
            return
        self._timer = loop.call_later(FLUSH_INTERVAL, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        with contextlib.suppress(Exception):  # the events stay buffered; the next flush reports
            self.flush_settled()


def _encoded_row(row: dict[str, Any]) -> dict[str, Any]:
    """A new run row's values as stored: its input and output as JSON text."""
    row["input"] = encode_payload_bytes(row["input"]).decode()
    if row["output"] is not None:
        row["output"] = encode_payload_bytes(row["output"]).decode()
    return row
