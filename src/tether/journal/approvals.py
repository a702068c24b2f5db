"""Approval rows: a human decision bound to one tool call and the hash of its exact arguments.

A run that needs a decision requests it in the transaction of the events that ask for it (see
:meth:`~tether.journal.store.Store.append`'s ``approvals``); the human's decision is a
compare-and-set on the row (:meth:`ApprovalRows.decide_approval`), and the run uses a decision
once (:meth:`ApprovalRows.consume_approval`).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from tether.errors import NotFound, UsageError
from tether.journal.base import StoreBase
from tether.journal.runs import by_id_or_prefix


@dataclass(slots=True)
class ApprovalRecord:
    """A human decision bound to one tool call and the hash of its exact arguments."""

    id: str
    run_id: str
    agent: str
    call_id: str
    step: int
    tool: str
    args: dict[str, Any]
    args_hash: str
    reason: str
    rule: str
    status: str
    requested_by: str | None
    decided_by: str | None
    decided_at: float | None
    edited_args: dict[str, Any] | None
    decision_reason: str | None
    consumed_at: float | None
    created_at: float
    position: int | None = None  # the call's index in its step's turn (None: older rows)

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


APPROVAL_COLUMNS = (
    "id",
    "run_id",
    "agent",
    "call_id",
    "step",
    "tool",
    "args",
    "args_hash",
    "reason",
    "rule",
    "status",
    "requested_by",
    "decided_by",
    "decided_at",
    "edited_args",
    "decision_reason",
    "consumed_at",
    "created_at",
    "position",
)


def approval_values(record: ApprovalRecord) -> tuple[Any, ...]:
    """An approval as the values of an INSERT in ``APPROVAL_COLUMNS`` order."""
    row = record.to_dict()
    row["args"] = json.dumps(record.args, default=str)
    row["edited_args"] = None if record.edited_args is None else json.dumps(record.edited_args)
    return tuple(row[c] for c in APPROVAL_COLUMNS)


def args_hash(args: dict[str, Any]) -> str:
    """The hash an approval is bound to: canonical JSON of the arguments."""
    text = json.dumps(args, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class ApprovalRows(StoreBase):
    """The approvals table."""

    def create_approval(self, record: ApprovalRecord) -> ApprovalRecord:
        """Insert a pending approval; if the call already has one, return that one."""
        row = record.to_dict()
        row["args"] = json.dumps(record.args, default=str)
        row["edited_args"] = None
        ap = self.t["approvals"]
        with self._tx() as conn:
            existing = conn.execute(
                sa.select(ap).where(ap.c.run_id == record.run_id, ap.c.call_id == record.call_id)
            ).first()
            if existing is None:
                conn.execute(ap.insert().values(**row))
                return record
        return self._approval_from_row(existing)

    def _approval_from_row(self, r: Any) -> ApprovalRecord:
        data = dict(r._mapping)
        data["args"] = json.loads(data["args"])
        data["edited_args"] = (
            None if data["edited_args"] is None else json.loads(data["edited_args"])
        )
        return ApprovalRecord(**{c: data[c] for c in APPROVAL_COLUMNS})

    def get_approval(self, approval_id: str) -> ApprovalRecord:
        row, why = by_id_or_prefix(self.engine, self.t["approvals"], approval_id)
        if row is None:
            hint = why.replace("no such id", "not found", 1)
            raise NotFound(f"approval {approval_id!r}: {hint} (see `tether approvals`)")
        return self._approval_from_row(row)

    def approval_for_call(self, run_id: str, step: int, position: int) -> ApprovalRecord | None:
        """The approval of the call at ``position`` in the turn of ``step`` of a run."""
        ap = self.t["approvals"]
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(ap).where(
                    ap.c.run_id == run_id, ap.c.step == step, ap.c.position == position
                )
            ).first()
        return None if row is None else self._approval_from_row(row)

    def list_approvals(
        self, *, status: str | None = "pending", run_id: str | None = None, agent: str | None = None
    ) -> list[ApprovalRecord]:
        ap = self.t["approvals"]
        q = sa.select(ap).order_by(ap.c.created_at)
        if status:
            q = q.where(ap.c.status == status)
        if run_id:
            q = q.where(ap.c.run_id == run_id)
        if agent:
            q = q.where(ap.c.agent == agent)
        with self.engine.connect() as conn:
            return [self._approval_from_row(r) for r in conn.execute(q).all()]

    def decide_approval(
        self,
        approval_id: str,
        *,
        status: str,
        decided_by: str,
        reason: str | None = None,
        edited_args: dict[str, Any] | None = None,
    ) -> ApprovalRecord:
        """Record a human decision; refuses one that is already decided (compare-and-set)."""
        if status not in ("approved", "edited", "rejected"):
            raise UsageError(f"bad approval status {status!r}")
        current = self.get_approval(approval_id)
        ap = self.t["approvals"]
        with self._tx() as conn:
            result = conn.execute(
                ap.update()
                .where(ap.c.id == current.id, ap.c.status == "pending")
                .values(
                    status=status,
                    decided_by=decided_by,
                    decided_at=time.time(),
                    decision_reason=reason,
                    edited_args=None if edited_args is None else json.dumps(edited_args),
                )
            )
            if result.rowcount != 1:
                raise UsageError(
                    f"approval {current.id} was already decided ({current.status} by "
                    f"{current.decided_by}); a decision is taken once"
                )
        return self.get_approval(current.id)

    def consume_approval(self, approval_id: str) -> bool:
        """Mark a decided approval as used; ``False`` if it was consumed already."""
        ap = self.t["approvals"]
        with self._tx() as conn:
            result = conn.execute(
                ap.update()
                .where(ap.c.id == approval_id, ap.c.consumed_at.is_(None), ap.c.status != "pending")
                .values(consumed_at=time.time())
            )
            return bool(result.rowcount == 1)
