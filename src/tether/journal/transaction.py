"""What one journal transaction runs for each write of a group (see ``Store.write_group``).

:meth:`TransactionSteps._apply_group` takes a group's writes: the usual one (a running run's
next events under its lease) is batched with the others like it, a statement for all their
leases, one for all their events, one for all their anchors; a new run, a change to a run's row
or a retried write is applied on its own (:meth:`TransactionSteps._apply`). Every step runs on
the DBAPI cursor the store's write path holds, inside its transaction.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from tether.errors import JournalError, LeaseLost
from tether.journal.base import StoreBase
from tether.journal.chain import GENESIS
from tether.journal.events import Event
from tether.journal.leases import Lease
from tether.journal.ledger import ledger_hash
from tether.journal.runs import RUN_COLUMNS as _RUN_COLUMNS
from tether.journal.writes import JournalWrite, _Conflict, _Statements

_Prepared = tuple[JournalWrite, list[tuple[Any, ...]], list[tuple[Any, ...]]]
"""A write with its event rows and approval rows, as the write path inserts them."""

_LEDGER_LOCK = 7410032  # the PostgreSQL advisory lock that serialises entries in run_ledger


class TransactionSteps(StoreBase):
    """The statements of a journal write, for the store's placeholder style (``_ph``)."""

    _ph: str
    _sql: _Statements
    journal_key: bytes | None

    def _apply_group(self, cur: Any, prepared: Sequence[_Prepared], *, retried: bool) -> None:
        """Every write of a group, in as few statements as it allows.

        The usual write (a running run's next events, under its lease, its run alone in the
        group) is batched with the others like it: one statement checks and renews all their
        leases and returns their anchors, one inserts all their events, one moves all their
        anchors. The rest (a new run, a change to a run row, a run with two writes in the
        group, a retry) are applied one by one, in order. A write the batch finds refused (a
        lease lost, an anchor moved) raises: the caller writes the group again, each write in
        a savepoint, so that only the refused one fails and says why.
        """
        runs = Counter(write.run_id for write, _, _ in prepared)
        batch: list[_Prepared] = []
        rest: list[_Prepared] = []
        for p in prepared:
            alone = not retried and runs[p[0].run_id] == 1 and _batchable(p[0])
            (batch if alone else rest).append(p)
        if len(batch) < 2:  # nothing to gain: in order, one by one
            batch, rest = [], list(prepared)
        else:
            self._apply_batch(cur, batch)
        for write, rows, approvals in rest:
            self._apply(cur, write, rows, approvals, retried=retried)

    def _apply_batch(self, cur: Any, batch: Sequence[_Prepared]) -> None:
        """Running runs' next events, several runs at once (see :meth:`_apply_group`)."""
        anchors = self._fence_many(cur, [w.lease for w, _, _ in batch if w.lease is not None])
        for write, _, _ in batch:
            anchor = anchors.get(write.run_id)
            if anchor is None:  # the lease was lost: taken apart, the write says so
                raise _Conflict(write.run_id)
            self._check_continues(cur, write.events, anchor)
        cur.executemany(self._sql.insert_events, [row for _, rows, _ in batch for row in rows])
        approvals = [a for _, _, approvals in batch for a in approvals]
        if approvals:
            cur.executemany(self._sql.insert_approval, approvals)
        cur.executemany(
            self._sql.move_anchor,
            [
                (w.events[-1].seq, w.events[-1].hash, w.run_id, w.events[0].seq - 1)
                for w, _, _ in batch
            ],
        )
        if cur.rowcount != len(batch):  # an anchor had moved: taken apart, the write says so
            raise _Conflict(batch[0][0].run_id)

    def _apply(
        self,
        cur: Any,
        write: JournalWrite,
        rows: list[tuple[Any, ...]],
        approvals: list[tuple[Any, ...]],
        *,
        retried: bool,
    ) -> None:
        """One run's write, inside the group's transaction."""
        events, new_run, run_update = write.events, write.new_run, write.run_update
        anchor = None
        if new_run is None and write.lease is not None:
            anchor = self._fence(cur, write.lease)  # the run row's anchor comes back with it
        if retried and self._written(cur, events, new_run):
            return
        if new_run is not None:
            self._insert_run(cur, new_run, events)
            if write.lease is not None:
                self._first_lease(cur, write.lease)
        elif events:
            self._check_continues(cur, events, anchor)
        if events:
            cur.executemany(self._sql.insert_events, rows)
        if approvals:
            cur.executemany(self._sql.insert_approval, approvals)
        if new_run is None and (events or run_update):
            self._update_row(cur, write)
        if write.release_lease and write.lease is not None:  # in the same transaction
            cur.execute(self._sql.release_lease, (write.run_id, write.lease.token))

    def _update_row(self, cur: Any, write: JournalWrite) -> None:
        """Move the run row's anchor to the write's last event (if the row is still where the
        write found it) and set the columns of ``run_update``, in one statement."""
        ph, events = self._ph, write.events
        cols = sorted(c for c in (write.run_update or {}) if c != "id")
        values = [
            json.dumps(write.run_update[c], default=str)  # type: ignore[index]
            if c in ("output", "input")
            else write.run_update[c]  # type: ignore[index]
            for c in cols
        ]
        sets = [f"{c}={ph}" for c in cols]
        where = f"id={ph}"
        args = [*values, write.run_id]
        if events:
            first, last = events[0], events[-1]
            sets[:0] = [f"event_count={ph}", f"head_hash={ph}"]
            args[:0] = [last.seq, last.hash]
            where += f" AND event_count={ph}"
            args.append(first.seq - 1)
        cur.execute(f"UPDATE runs SET {','.join(sets)} WHERE {where}", args)
        if events and cur.rowcount != 1:
            raise _Conflict(write.run_id)

    def _insert_run(self, cur: Any, new_run: dict[str, Any], events: Sequence[Event]) -> None:
        """The run's row (anchored at its first events) and its entry in the run ledger."""
        head = events[-1].hash if events else GENESIS
        anchor = [head, len(events), self.journal_key is not None]
        cur.execute(self._sql.insert_run, [*(new_run[c] for c in _RUN_COLUMNS), *anchor])
        if not self.is_sqlite:  # SQLite's BEGIN IMMEDIATE serialises writers already
            cur.execute(f"SELECT pg_advisory_xact_lock({_LEDGER_LOCK})")
        cur.execute(self._sql.ledger_tail)
        tail = cur.fetchone()
        position, prev = (1, GENESIS) if tail is None else (int(tail[0]) + 1, str(tail[1]))
        digest = ledger_hash(prev, position, new_run["id"], self.journal_key)
        cur.execute(self._sql.insert_ledger, (position, new_run["id"], digest))

    def _check_continues(
        self, cur: Any, events: Sequence[Event], anchor: tuple[Any, Any, Any] | None = None
    ) -> None:
        """Raise ``_Conflict`` unless ``events`` continue the run's stored journal, and
        ``JournalError`` if they are keyed differently from it. ``anchor``: the run row's, if
        already read (and locked) in this transaction."""
        first = events[0]
        row = anchor
        if row is None:
            cur.execute(self._sql.anchor, (first.run_id,))
            row = cur.fetchone()
        count, head, keyed = (0, GENESIS, False) if row is None else row
        if int(count or 0) != first.seq - 1 or (head or GENESIS) != first.prev_hash:
            raise _Conflict(first.run_id)
        if bool(keyed) != (self.journal_key is not None):
            state = "with" if keyed else "without"
            raise JournalError(
                f"run {first.run_id} was journaled {state} a journal key: set "
                f"TETHER_JOURNAL_KEY as it was to continue it"
            )

    def _written(
        self,
        cur: Any,
        events: Sequence[Event],
        new_run: dict[str, Any] | None,
    ) -> bool:
        """Whether an earlier attempt of this write was committed (read in its transaction).

        The events are known by their run, last sequence number and hash: the same hash at that
        place means the earlier commit went through. A new run without events is known by its
        row. An update of the run's row alone is simply made again.
        """
        if events:
            cur.execute(self._sql.hash_at, (events[-1].run_id, events[-1].seq))
            row = cur.fetchone()
            return row is not None and str(row[0]) == events[-1].hash
        if new_run is not None:
            cur.execute(self._sql.run_exists, (new_run["id"],))
            return cur.fetchone() is not None
        return False

    # -- leases (one driver per run; see tether.journal.leases) ----------------------------------

    def _fence(self, cur: Any, lease: Lease) -> tuple[Any, Any, Any]:
        """One write's :meth:`_fence_many`: its run's anchor, or :class:`LeaseLost`."""
        anchor = self._fence_many(cur, [lease]).get(lease.run_id)
        if anchor is None:
            raise LeaseLost(lease.run_id)
        return anchor

    def _fence_many(self, cur: Any, leases: Sequence[Lease]) -> dict[str, tuple[Any, Any, Any]]:
        """Inside a journal write: check the writers still hold ``leases`` and renew them; the
        rows stay locked to the transaction's end, so no takeover slips in between. Returns
        each run's anchor (``event_count``, ``head_hash``, ``keyed``) read in the same
        statement; a run whose lease was lost is missing."""
        expires = time.time() + self.lease_ttl
        if self.is_sqlite:  # no arrays: the leases as rows of values
            ph = self._ph
            ids = ",".join([ph] * len(leases))
            tuples = ",".join([f"({ph},{ph},{ph})"] * len(leases))
            cur.execute(
                f"UPDATE runs SET lease_expires={ph} WHERE id IN ({ids})"
                f" AND (id, lease_token, lease_owner) IN (VALUES {tuples})"
                " RETURNING id, event_count, head_hash, keyed",
                [
                    expires,
                    *(lease.run_id for lease in leases),
                    *(v for lease in leases for v in (lease.run_id, lease.token, lease.owner)),
                ],
            )
        else:  # arrays: one statement text whatever the number of leases (prepared once)
            cur.execute(
                self._sql.fence_many,
                (
                    expires,
                    [lease.run_id for lease in leases],
                    [lease.token for lease in leases],
                    [lease.owner for lease in leases],
                ),
            )
        return {str(row[0]): (row[1], row[2], row[3]) for row in cur.fetchall()}

    def _first_lease(self, cur: Any, lease: Lease) -> None:
        """Inside the write that creates a run: its creator holds the first lease."""
        ph = self._ph
        cur.execute(
            f"UPDATE runs SET lease_owner={ph}, lease_expires={ph}, lease_token={ph} WHERE id={ph}",
            (lease.owner, time.time() + self.lease_ttl, lease.token, lease.run_id),
        )


def _batchable(write: JournalWrite) -> bool:
    """A running run's next events under its lease, nothing else: what a group batches."""
    return (
        bool(write.events)
        and write.lease is not None
        and write.new_run is None
        and not write.run_update
        and not write.release_lease
    )
