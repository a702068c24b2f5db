"""Statuses of runs and approvals: shared by the engine, the journal, the CLI and the server."""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    WAITING_APPROVAL = "waiting_approval"
    WAITING_INPUT = "waiting_input"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ESCALATED = "escalated"
    BUDGET_EXCEEDED = "budget_exceeded"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL

    @property
    def waiting(self) -> bool:
        return self in (RunStatus.WAITING_APPROVAL, RunStatus.WAITING_INPUT)


_TERMINAL = frozenset(
    {
        RunStatus.SUCCEEDED,
        RunStatus.FAILED,
        RunStatus.ESCALATED,
        RunStatus.BUDGET_EXCEEDED,
        RunStatus.CANCELLED,
    }
)


class ApprovalStatus(StrEnum):
    """Where an approval request stands: pending until a human approves, edits or rejects it."""

    PENDING = "pending"
    APPROVED = "approved"
    EDITED = "edited"
    REJECTED = "rejected"
