"""What :meth:`Runtime.run <tether.engine.runtime.Runtime.run>` and ``resume`` return."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from tether.engine.state import RunState
from tether.journal.events import ApprovalRequested, InputRequested
from tether.status import RunStatus


@dataclass(slots=True)
class RunResult:
    """Where a run stands after :meth:`Runtime.run` or :meth:`Runtime.resume` returns."""

    run_id: str
    status: str
    output: Any = None
    reason: str | None = None
    steps: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    waiting_for: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.status == RunStatus.SUCCEEDED.value

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def result_of(state: RunState) -> RunResult:
    """Where a run stands, from its state."""
    return RunResult(
        run_id=state.run_id,
        status=state.status.value,
        output=state.output,
        reason=state.reason,
        steps=state.step,
        input_tokens=state.input_tokens,
        output_tokens=state.output_tokens,
        cost_usd=state.cost_usd,
        waiting_for=_waiting_for(state),
    )


def _waiting_for(state: RunState) -> dict[str, Any] | None:
    """What a waiting run waits for, as :class:`RunResult` reports it."""
    match state.waiting_for:
        case ApprovalRequested(approval_id=approval_id, call_id=call_id):
            return {"approval_id": approval_id, "call_id": call_id}
        case InputRequested(kind=kind, question=question, call_id=call_id):
            return {"question": question, "kind": kind.value, "call_id": call_id}
    return None
