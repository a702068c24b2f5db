"""A run in progress: its state, its pending journal writes, and what it runs with.

Durability (group commit). Events are buffered as they are emitted and written in one transaction
per flush. The loop flushes at once before a side-effecting call runs (its intent), right after it
(its result), and whenever the run waits for a human or ends. Read-only work (model turns whose
calls only read, denials, validation failures) may be lost in a crash, since resume redoes it, so
it is grouped: at the end of such a step :meth:`RunContext.checkpoint` flushes only when
``FLUSH_INTERVAL`` has passed since the last flush or ``FLUSH_EVENTS`` events wait; otherwise a
timer on the event loop writes the completed steps at most ``FLUSH_INTERVAL`` later, so a run that
sits awaiting a slow model never holds finished work back. A crash loses at most that much
read-only work; the journal always ends at a step boundary or a flush point of a side effect.

An event is folded into the state when it is emitted and hashed (sealed) when it is flushed:
nothing reads its hash before then, and the chain is the same either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tether.agent import Agent
from tether.engine.state import RunState, RunStatus
from tether.journal.chain import seal_events, unsealed_event
from tether.journal.events import Event, EventData
from tether.journal.jsontext import encode_payload_bytes
from tether.journal.leases import Lease
from tether.journal.store import ApprovalRecord, RunRecord, Store
from tether.models.base import Model
from tether.policy.pipeline import PolicyEngine
from tether.tools import Tool

FLUSH_INTERVAL = 0.025
"""Seconds read-only work may wait in memory before it is written."""
FLUSH_EVENTS = 1024
"""Buffered events that force a flush of read-only work regardless of time (this bounds the
memory held and the size of one transaction: about half a megabyte, a few milliseconds)."""

SWITCH_MAX_AGE = 1.0
"""Seconds a read-only call may rely on a kill switch read earlier (by any run on the store)."""

_UNSET: Any = object()


@dataclass(slots=True)
class RunContext:
    """Emits events (folding each into the state at once) and flushes them in batches."""

    store: Store
    agent: Agent
    model: Model
    policy: PolicyEngine
    state: RunState
    deps: Any = None
    clock: Callable[[], float] = time.time
    # events not written yet; the last ``len(_raws)`` of them are not sealed (hashed) yet
    buffer: list[Event] = field(default_factory=list)
    _raws: list[bytes] = field(default_factory=list)  # the unsealed events' payload bytes
    simulate_side_effects: bool = False
    on_event: Callable[[Event], None] | None = None
    tool_specs: list[dict[str, Any]] | None = None
    tools_by_name: dict[str, Tool] | None = None
    response_schema: Any = _UNSET  # the agent's output schema, built on first use
    redact: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    # given a payload's JSON text, whether ``redact`` might change it (None: always redact)
    redact_check: Callable[[str], bool] | None = None
    replay: Any = None  # a ReplaySource when replaying or forking (tether.replay)
    run_cache: dict[str, dict[str, Any]] = field(default_factory=dict)
    _row_step: int = -1
    _row_seq: int = -1  # the event the run row was last brought up to
    _flushed_at: float = field(default_factory=time.monotonic)
    _settled: int = 0  # leading buffered events that end at a checkpoint (complete steps)
    _timer: asyncio.TimerHandle | None = None
    _new_run: RunRecord | None = None  # the run's row, until the first flush inserts it
    # this process's lease on the run: every write checks it (None: writes unchecked)
    lease: Lease | None = None
    # approval requests the buffered events ask for: written with them, in one transaction
    approvals: list[ApprovalRecord] = field(default_factory=list)

    def start(self, record: RunRecord) -> None:
        """Begin a new run whose ``run_started`` event is buffered: its row and that event are
        written by the first flush, in one transaction, so a run never exists without its start.

        That flush comes at the run's first side effect, wait or end, or ``FLUSH_INTERVAL``
        after now, whichever is first: a run that finishes sooner costs one transaction in all,
        and a run awaiting a slow first model call is on record within the interval.
        """
        self._new_run = record
        self._row_step = self.state.step
        self._row_seq = self.state.last_seq
        self._settled = len(self.buffer)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        self._timer = loop.call_later(FLUSH_INTERVAL, self._flush_settled)

    @property
    def run_id(self) -> str:
        return self.state.run_id

    def emit(self, data: EventData, *, step: int | None = None) -> None:
        """Journal one event: redact it, fold it into the state, buffer it for the next flush.

        Redaction comes first and covers the whole payload, so the state (and therefore what the
        model sees next) matches the journal exactly, and an unmasked secret never reaches the
        disk. The payload is encoded once; it is walked and encoded again only when its text
        shows something that might need masking.
        """
        payload = data.to_json()
        raw = encode_payload_bytes(payload)
        text = raw.decode()
        redact = self.redact
        if redact is not None:
            check = self.redact_check
            if check is None or check(text):
                masked = redact(payload)
                if masked is not payload:
                    data = type(data).from_json(masked)
                    raw = encode_payload_bytes(masked)
                    text = raw.decode()
        s = self.state
        # folded now, hashed when sealed (see seal)
        step = s.step if step is None else step
        ev = unsealed_event(s.run_id, s.last_seq + 1, data.type, step, self.clock(), text)
        s.apply(ev, data)
        self.buffer.append(ev)
        self._raws.append(raw)
        if self.on_event is not None:
            self.seal()
            self.on_event(self.buffer[-1])

    def seal(self) -> None:
        """Hash the buffered events that are not hashed yet, in order. Every flush seals first.
        An event is hashed once, in one loop with the others of its flush, where the hashing code
        stays warm: hashed one at a time between model and tool calls, each cost about twice as
        much."""
        raws = self._raws
        if not raws:
            return
        buffer = self.buffer
        first = len(buffer) - len(raws)
        sealed = seal_events(buffer[first:], raws, self.state.last_hash, self.store.journal_key)
        buffer[first:] = sealed
        raws.clear()
        self.state.last_hash = sealed[-1].hash

    def masked(self, value: dict[str, Any]) -> dict[str, Any]:
        """``value`` as the journal would hold it: masked by the redactor (the same object when
        nothing needs masking)."""
        redact = self.redact
        if redact is None:
            return value
        check = self.redact_check
        if check is not None and not check(encode_payload_bytes(value).decode()):
            return value
        return redact(value)

    def flush(self, *, final: bool = False) -> None:
        """Make buffered events durable; also refresh the run row on state changes."""
        s = self.state
        if not self.buffer and self._row_seq == s.last_seq:
            return  # nothing happened since the run row was last written
        self.seal()
        update: dict[str, Any] | None = None
        new_run = self._new_run
        if final or new_run is not None or s.status is not RunStatus.RUNNING or self._row_stale():
            update = {
                "status": s.status.value,
                "steps": s.step,
                "input_tokens": s.input_tokens,
                "output_tokens": s.output_tokens,
                "cost_usd": s.cost_usd,
                "updated_at": self.clock(),
                "reason": s.reason,
                "output": s.output,
            }
            if not self.buffer:
                update["id"] = s.run_id
            self._row_step = s.step
            self._row_seq = s.last_seq
        if new_run is not None:
            assert update is not None
            update.pop("id", None)
            self.store.create_run(
                new_run, self.buffer, update, lease=self.lease, approvals=self.approvals
            )
            self._new_run = None
        else:
            self.store.append(self.buffer, update, lease=self.lease, approvals=self.approvals)
        self.buffer.clear()
        self.approvals.clear()
        self._settled = 0
        self._flushed_at = time.monotonic()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def checkpoint(self) -> None:
        """The end of a step of read-only work: flush it if due, else leave it to the timer.

        A run that is no longer running (waiting or finished) always flushes here.
        """
        if (
            self.state.status is not RunStatus.RUNNING
            or len(self.buffer) >= FLUSH_EVENTS
            or time.monotonic() - self._flushed_at >= FLUSH_INTERVAL
        ):
            self.flush()
            return
        self._settled = len(self.buffer)
        if self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no event loop to wake us: write now
                self.flush()
                return
            self._timer = loop.call_later(FLUSH_INTERVAL, self._flush_settled)

    def flush_settled(self) -> None:
        """Write the buffered complete steps (not a step in progress); the run row is left alone.

        Used by the timer, and when the loop stops on an exception, so the journal keeps what the
        run had finished and still ends at a step boundary.
        """
        n = self._settled
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if n == 0:
            return
        self.seal()
        if self._new_run is not None:
            self.store.create_run(self._new_run, self.buffer[:n], lease=self.lease)
            self._new_run = None
        else:
            self.store.append(self.buffer[:n], lease=self.lease)
        del self.buffer[:n]
        self._settled = 0
        self._flushed_at = time.monotonic()

    def _flush_settled(self) -> None:
        self._timer = None
        with contextlib.suppress(Exception):  # the events stay buffered; the next flush reports it
            self.flush_settled()

    def kill_switch(self, *, fresh: bool) -> tuple[bool, str]:
        """The agent's kill switch. Side-effecting calls (``fresh``) always read the store; a
        read-only call may rely on a reading up to ``SWITCH_MAX_AGE`` old (a read cannot do
        harm), so short runs do not each pay a query."""
        return self.store.paused(self.agent.name, max_age=0.0 if fresh else SWITCH_MAX_AGE)

    def _row_stale(self) -> bool:
        # keep the runs table roughly current (every 25 steps) without a write per step
        return self.state.step - self._row_step >= 25
