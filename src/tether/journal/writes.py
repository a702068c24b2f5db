"""One journal write, and the SQL the store's write path runs for it.

:class:`JournalWrite` is one run's part of a journal transaction (see
:meth:`tether.journal.store.Store.write_group`); the statements are written once per store, for
its placeholder style.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tether.journal.approvals import APPROVAL_COLUMNS, ApprovalRecord
from tether.journal.events import Event
from tether.journal.leases import Lease
from tether.journal.rows import EVENT_COLUMNS, insert_events_sql
from tether.journal.runs import RUN_COLUMNS


@dataclass(slots=True)
class JournalWrite:
    """One run's part of a journal transaction: its new events, in order; its new row
    (``new_run``) or changes to its row (``run_update``, with ``"id"`` when there are no events);
    the approval rows its events request; the writer's lease, checked and renewed."""

    events: Sequence[Event] = ()
    new_run: dict[str, Any] | None = None
    run_update: dict[str, Any] | None = None
    lease: Lease | None = None
    approvals: Sequence[ApprovalRecord] = ()
    release_lease: bool = False  # the run stops being driven: its lease is given up with this

    @property
    def run_id(self) -> str:
        if self.events:
            return self.events[0].run_id
        return str((self.new_run or self.run_update or {}).get("id", "?"))


@dataclass(slots=True, frozen=True)
class _Statements:
    """The journal's write statements, written once for a placeholder style."""

    insert_run: str  # the row with its anchor and its first lease (or none)
    insert_events: str
    copy_events: str  # PostgreSQL's: a group's events in one COPY
    anchor: str
    hash_at: str
    run_exists: str
    ledger_tail: str
    insert_ledger: str
    insert_approval: str
    move_anchor: str
    release_lease: str
    fence_many: str  # PostgreSQL's: many runs' leases checked and renewed, anchors returned
    move_anchors: str  # PostgreSQL's: many runs' anchors moved in one statement

    @classmethod
    def using(cls, ph: str, dialect: str) -> _Statements:
        columns = (*RUN_COLUMNS, *ANCHOR_COLUMNS, *LEASE_COLUMNS)
        lock = " FOR UPDATE" if dialect == "postgresql" else ""
        return cls(
            insert_run=f"INSERT INTO runs ({','.join(columns)})"
            f" VALUES ({','.join([ph] * len(columns))})",
            insert_events=insert_events_sql(dialect),
            copy_events=f"COPY events ({','.join(EVENT_COLUMNS)}) FROM STDIN",
            anchor=f"SELECT event_count, head_hash, keyed FROM runs WHERE id={ph}{lock}",
            hash_at=f"SELECT hash FROM events WHERE run_id={ph} AND seq={ph}",
            run_exists=f"SELECT 1 FROM runs WHERE id={ph}",
            ledger_tail="SELECT position, hash FROM run_ledger ORDER BY position DESC LIMIT 1",
            insert_ledger="INSERT INTO run_ledger (position, run_id, hash)"
            f" VALUES ({ph},{ph},{ph})",
            insert_approval=f"INSERT INTO approvals ({','.join(APPROVAL_COLUMNS)})"
            f" VALUES ({','.join([ph] * len(APPROVAL_COLUMNS))})",
            move_anchor=f"UPDATE runs SET event_count={ph}, head_hash={ph}"
            f" WHERE id={ph} AND event_count={ph}",
            release_lease=f"UPDATE runs SET lease_owner=NULL, lease_expires=NULL"
            f" WHERE id={ph} AND lease_token={ph}",
            fence_many="UPDATE runs SET lease_expires=%s"
            " FROM unnest(%s::text[], %s::bigint[], %s::text[]) AS v(id, token, owner)"
            " WHERE runs.id = v.id AND runs.lease_token = v.token AND runs.lease_owner = v.owner"
            " RETURNING runs.id, runs.event_count, runs.head_hash, runs.keyed",
            move_anchors="UPDATE runs SET event_count = v.count, head_hash = v.head"
            " FROM unnest(%s::text[], %s::bigint[], %s::text[], %s::bigint[])"
            " AS v(id, count, head, was) WHERE runs.id = v.id AND runs.event_count = v.was",
        )


class _Conflict(Exception):
    """An append that does not continue the stored journal (another writer got there first)."""


class _Transient(Exception):
    """A store error that another attempt on a fresh connection may get past."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


ANCHOR_COLUMNS = ("head_hash", "event_count", "keyed")
"""The run row's anchor of its chain: the last event's hash, the number of events, and whether
the chain is keyed (an HMAC: see :func:`tether.journal.events.journal_key`)."""

LEASE_COLUMNS = ("lease_owner", "lease_expires", "lease_token")
"""Who drives the run, until when, and the fencing token (see :mod:`tether.journal.leases`)."""
