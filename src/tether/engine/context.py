"""A run in progress: its state, its pending journal writes, and what it runs with."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tether.agent import Agent
from tether.engine.state import RunState, RunStatus
from tether.journal.events import Event, make_event
from tether.journal.store import Store
from tether.models.base import Model
from tether.policy.pipeline import PolicyEngine


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
    buffer: list[Event] = field(default_factory=list)
    simulate_side_effects: bool = False
    on_event: Callable[[Event], None] | None = None
    tool_specs: list[dict[str, Any]] | None = None
    redact: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    replay: Any = None  # a ReplaySource when replaying or forking (tether.replay)
    run_cache: dict[str, dict[str, Any]] = field(default_factory=dict)
    _row_step: int = -1
    _switch: tuple[bool, str] = (False, "")
    _switch_checked: float = -1e9

    @property
    def run_id(self) -> str:
        return self.state.run_id

    def emit(self, type_: str, payload: dict[str, Any], *, step: int | None = None) -> Event:
        """Journal one event: redact it, fold it into the state, buffer it for the next flush.

        Redaction comes first, so the state (and therefore what the model sees next) matches
        the journal exactly, and an unmasked secret never reaches the disk.
        """
        if self.redact is not None:
            payload = self.redact(payload)
        s = self.state
        ev = make_event(
            s.run_id,
            s.last_seq + 1,
            type_,
            s.step if step is None else step,
            self.clock(),
            payload,
            s.last_hash,
        )
        s.apply(ev, payload)
        self.buffer.append(ev)
        if self.on_event is not None:
            self.on_event(ev)
        return ev

    def flush(self, *, final: bool = False) -> None:
        """Make buffered events durable; also refresh the run row on state changes."""
        s = self.state
        update: dict[str, Any] | None = None
        if final or s.status is not RunStatus.RUNNING or self._row_stale():
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
        self.store.append(self.buffer, update)
        self.buffer.clear()

    def kill_switch(self, *, fresh: bool) -> tuple[bool, str]:
        """The agent's kill switch. Side-effecting calls always read it from the store; reads
        may use a value up to a second old (a read cannot do harm)."""
        now = time.monotonic()
        if fresh or now - self._switch_checked > 1.0:
            self._switch = self.store.paused(self.agent.name)
            self._switch_checked = now
        return self._switch

    def _row_stale(self) -> bool:
        # keep the runs table roughly current (every 25 steps) without a write per step
        return self.state.step - self._row_step >= 25
