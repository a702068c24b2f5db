"""A run in progress: its state, what it runs with, and its journal writer.

Every change of state is an event: :meth:`RunContext.emit` has the run's
:class:`~tether.journal.writer.RunWriter` redact and buffer it, and folds what the journal holds
into the state at once. When events are made durable is the loop's call: before a side effect
runs (its intent) and right after (its result), and whenever the run waits or ends
(:meth:`RunContext.flush`, awaited); read-only steps are grouped (:meth:`RunContext.checkpoint`,
not awaited). Writes go through the store's writer thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tether.agent import Agent
from tether.engine.state import RunState, RunStatus
from tether.engine.switches import SwitchReader
from tether.journal.events import Event, EventData
from tether.journal.leases import Lease
from tether.journal.store import ApprovalRecord, RunRecord, Store
from tether.journal.writer import Redact, RunWriter
from tether.models.base import Model
from tether.policy.pipeline import PolicyEngine
from tether.tools import Tool

SWITCH_MAX_AGE = 1.0
"""Seconds a read-only call may rely on a kill switch read earlier (by any run on the store)."""

ROW_EVERY = 25
"""Steps between refreshes of the run row while it runs (it is always written when it waits or
ends)."""

_UNSET: Any = object()
_T = TypeVar("_T")


@dataclass(slots=True)
class RunContext:
    """One run being driven: emits events (folding each into the state) through its writer."""

    store: Store
    agent: Agent
    model: Model
    policy: PolicyEngine
    state: RunState
    deps: Any = None
    clock: Callable[[], float] = time.time
    simulate_side_effects: bool = False
    on_event: Callable[[Event], None] | None = None
    redact: Redact | None = None
    # given a payload's JSON text, whether ``redact`` might change it (None: always redact)
    redact_check: Callable[[str], bool] | None = None
    replay: Any = None  # a ReplaySource when replaying or forking (tether.replay)
    tool_specs: list[dict[str, Any]] | None = None
    tools_by_name: dict[str, Tool] | None = None
    response_schema: Any = _UNSET  # the agent's output schema, built on first use
    run_cache: dict[str, dict[str, Any]] = field(default_factory=dict)
    switches: SwitchReader = None  # type: ignore[assignment]  # shared by the runtime's runs
    journal: RunWriter = field(init=False)
    _row_step: int = -1
    _row_seq: int = -1  # the event the run row was last brought up to

    def __post_init__(self) -> None:
        if self.switches is None:
            self.switches = SwitchReader(self.store)
        s = self.state
        self.journal = RunWriter(
            self.store,
            s.run_id,
            seq=s.last_seq,
            head=s.last_hash,
            redact=self.redact,
            may_change=self.redact_check,
            clock=self.clock,
            on_event=self.on_event,
        )
        self._row_step, self._row_seq = s.step, s.last_seq

    @property
    def lease(self) -> Lease | None:
        """This process's lease on the run: every write checks it (None: writes unchecked)."""
        return self.journal.lease

    @lease.setter
    def lease(self, lease: Lease | None) -> None:
        self.journal.lease = lease

    @property
    def approvals(self) -> list[ApprovalRecord]:
        """Approval rows the buffered events request: written with them, in one transaction."""
        return self.journal.approvals

    def emit(self, data: EventData, *, step: int | None = None) -> None:
        """Journal one event and fold it (as the journal holds it: redacted) into the state."""
        s = self.state
        event, held = self.journal.record(data, s.step if step is None else step)
        s.apply(event, held)

    def masked(self, value: dict[str, Any]) -> dict[str, Any]:
        """``value`` as the journal would hold it (see :meth:`RunWriter.masked`)."""
        return self.journal.masked(value)

    def start(self, record: RunRecord) -> None:
        """Begin a new run: its row is written with its first events (see RunWriter.start)."""
        self._row_step, self._row_seq = self.state.step, self.state.last_seq
        self.journal.start(record)

    async def flush(self, *, final: bool = False, release_lease: bool = False) -> None:
        """Make everything emitted durable, with the run row when it changed; the event loop
        is not blocked while the store writes. ``release_lease``: the driver lets the run go,
        in the same transaction."""
        await self.journal.flush(self._run_row(final), release_lease=release_lease)

    def flush_now(self, *, final: bool = False) -> None:
        """:meth:`flush` without an event loop (a human's answer or a cancellation)."""
        self.journal.flush_now(self._run_row(final))

    def checkpoint(self) -> None:
        """The end of a step of read-only work: written soon, without waiting. A run that is no
        longer running is flushed by the loop as it returns."""
        if self.state.status is RunStatus.RUNNING:
            self.journal.checkpoint(lambda: self._run_row(False))

    def flush_settled(self) -> None:
        """Submit the complete steps (the loop stopped on an exception: see RunWriter)."""
        self.journal.flush_settled()

    async def io(self, fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> _T:
        """A blocking store call, on a worker thread so the event loop goes on (a store held
        in memory, whose one connection is not shared between threads, is called here)."""
        if self.store.in_memory:
            return fn(*args, **kwargs)
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def kill_switch(self, *, fresh: bool) -> tuple[bool, str]:
        """The agent's kill switch. Side-effecting calls (``fresh``) always read the store; a
        read-only call may rely on a reading up to ``SWITCH_MAX_AGE`` old (a read cannot do
        harm), so short runs do not each pay a query."""
        if fresh:
            return await self.switches.read(self.agent.name)
        recent = self.store.recent_switch(self.agent.name, SWITCH_MAX_AGE)
        if recent is not None:  # no query, so no thread either
            return recent
        return await self.io(self.store.paused, self.agent.name, max_age=SWITCH_MAX_AGE)

    def _run_row(self, final: bool) -> dict[str, Any] | None:
        """The run row's columns, when they are due: at the end, when the run waits, on its
        first write, and every ``ROW_EVERY`` steps (not on every write)."""
        s = self.state
        if not (
            final
            or s.status is not RunStatus.RUNNING
            or (self.journal.pending and s.step - self._row_step >= ROW_EVERY)
        ):
            return None
        if not self.journal.pending and self._row_seq == s.last_seq:
            return None  # nothing happened since the run row was last written
        self._row_step, self._row_seq = s.step, s.last_seq
        return {
            "status": s.status.value,
            "steps": s.step,
            "input_tokens": s.input_tokens,
            "output_tokens": s.output_tokens,
            "cost_usd": s.cost_usd,
            "updated_at": self.clock(),
            "reason": s.reason,
            "output": s.output,
        }
