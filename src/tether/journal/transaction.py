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
        """Every write of a group, in a fixed number of statements whatever its size.

        A driven run's write (under its lease, its run alone in the group) is batched with the
        others: one statement checks and renews the leases of the runs already stored and
        returns their anchors, one inserts the new runs (with their first leases), one adds
        them to the run ledger, one inserts every event (a COPY on PostgreSQL), one moves the
        anchors, one sets the changed run rows' columns (one per set of columns), one gives up
        the leases of the runs that stop. The rest (no lease, a run with two writes in the
        group, a retry) are applied one by one, in order. A write the batch finds refused (a
        lease lost, an anchor moved) raises: the caller writes the group again, each write in
        a savepoint, so that only the refused one fails and says why.
        """
        runs = Counter(write.run_id for write, _, _ in prepared)
        batch: list[_Prepared] = []
        rest: list[_Prepared] = []
        for p in prepared:
            alone = not retried and runs[p[0].run_id] == 1 and p[0].lease is not None
            (batch if alone else rest).append(p)
        if len(batch) < 2:  # nothing to gain: in order, one by one
            batch, rest = [], list(prepared)
        else:
            self._apply_batch(cur, batch)
        for write, rows, approvals in rest:
            self._apply(cur, write, rows, approvals, retried=retried)

    def _apply_batch(self, cur: Any, batch: Sequence[_Prepared]) -> None:
        """Driven runs' writes, several runs at once (see :meth:`_apply_group`)."""
        stored = [w for w, _, _ in batch if w.new_run is None]
        if stored:
            anchors = self._fence_many(cur, [w.lease for w in stored if w.lease is not None])
            for write in stored:
                anchor = anchors.get(write.run_id)
                if anchor is None:  # the lease was lost: taken apart, the write says so
                    raise _Conflict(write.run_id)
                if write.events:
                    self._check_continues(cur, write.events, anchor)
        self._insert_runs(cur, [w for w, _, _ in batch if w.new_run is not None])
        self._insert_events(cur, [row for _, rows, _ in batch for row in rows])
        approvals = [a for _, _, approvals in batch for a in approvals]
        if approvals:
            cur.executemany(self._sql.insert_approval, approvals)
        self._move_anchors(cur, [w for w in stored if w.events and not w.run_update])
        self._update_rows(cur, [w for w in stored if w.run_update])
        released = [w.lease for w, _, _ in batch if w.release_lease and w.lease is not None]
        if released:
            cur.executemany(self._sql.release_lease, [(x.run_id, x.token) for x in released])

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
            self._insert_runs(cur, [write])
        elif events:
            self._check_continues(cur, events, anchor)
        self._insert_events(cur, rows)
        if approvals:
            cur.executemany(self._sql.insert_approval, approvals)
        if new_run is None and (events or run_update):
            self._update_rows(cur, [write])
        if write.release_lease and write.lease is not None:  # in the same transaction
            cur.execute(self._sql.release_lease, (write.run_id, write.lease.token))

    def _insert_events(self, cur: Any, rows: Sequence[tuple[Any, ...]]) -> None:
        """Event rows (in ``EVENT_COLUMNS`` order): on PostgreSQL one COPY, which the driver
        formats in C, rather than a statement a row."""
        if not rows:
            return
        if self.is_sqlite:
            cur.executemany(self._sql.insert_events, rows)
            return
        with cur.copy(self._sql.copy_events) as copy:
            for row in rows:
                copy.write_row(row)

    def _move_anchors(self, cur: Any, writes: Sequence[JournalWrite]) -> None:
        """Move each run row's anchor to its write's last event, if the row is still where the
        write found it (else ``_Conflict``): on PostgreSQL one statement over arrays."""
        if not writes:
            return
        moves = [
            (w.run_id, w.events[-1].seq, w.events[-1].hash, w.events[0].seq - 1) for w in writes
        ]
        if self.is_sqlite:
            cur.executemany(self._sql.move_anchor, [(n, h, i, was) for i, n, h, was in moves])
        else:
            columns = [list(column) for column in zip(*moves, strict=True)]
            cur.execute(self._sql.move_anchors, columns)
        if cur.rowcount != len(writes):  # an anchor had moved: taken apart, the write says so
            raise _Conflict(writes[0].run_id)

    def _update_rows(self, cur: Any, writes: Sequence[JournalWrite]) -> None:
        """Move each run row's anchor to its write's last event (if the row is still where the
        write found it) and set the columns of its ``run_update``: one statement for the
        writes that change the same columns."""
        shapes: dict[tuple[tuple[str, ...], bool], list[JournalWrite]] = {}
        for write in writes:
            cols = tuple(sorted(c for c in (write.run_update or {}) if c != "id"))
            shapes.setdefault((cols, bool(write.events)), []).append(write)
        ph = self._ph
        for (cols, anchored), group in shapes.items():
            sets = [f"{c}={ph}" for c in cols]
            where = f"id={ph}"
            if anchored:
                sets[:0] = [f"event_count={ph}", f"head_hash={ph}"]
                where += f" AND event_count={ph}"
            if not sets:
                continue
            args = [_row_args(w, cols, anchored) for w in group]
            sql = f"UPDATE runs SET {','.join(sets)} WHERE {where}"
            if len(args) == 1:
                cur.execute(sql, args[0])
            else:
                cur.executemany(sql, args)
            if anchored and cur.rowcount != len(group):
                raise _Conflict(group[0].run_id)

    def _insert_runs(self, cur: Any, writes: Sequence[JournalWrite]) -> None:
        """New runs' rows (anchored at their first events, held by their first leases) and their
        entries in the run ledger, in the order given."""
        if not writes:
            return
        keyed = self.journal_key is not None
        expires = time.time() + self.lease_ttl
        rows = []
        for w in writes:
            new_run, lease, events = w.new_run or {}, w.lease, w.events
            head = events[-1].hash if events else GENESIS
            held = (None, None, 0) if lease is None else (lease.owner, expires, lease.token)
            rows.append([*(new_run[c] for c in _RUN_COLUMNS), head, len(events), keyed, *held])
        if len(rows) == 1:
            cur.execute(self._sql.insert_run, rows[0])
        else:
            cur.executemany(self._sql.insert_run, rows)
        if not self.is_sqlite:  # SQLite's BEGIN IMMEDIATE serialises writers already
            cur.execute(f"SELECT pg_advisory_xact_lock({_LEDGER_LOCK})")
        cur.execute(self._sql.ledger_tail)
        tail = cur.fetchone()
        position, prev = (0, GENESIS) if tail is None else (int(tail[0]), str(tail[1]))
        entries = []
        for w in writes:
            position += 1
            prev = ledger_hash(prev, position, w.run_id, self.journal_key)
            entries.append((position, w.run_id, prev))
        cur.executemany(self._sql.insert_ledger, entries)

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


def _row_args(write: JournalWrite, cols: tuple[str, ...], anchored: bool) -> list[Any]:
    """The arguments of :meth:`TransactionSteps._update_rows`'s statement for ``write``."""
    update = write.run_update or {}
    values = [
        json.dumps(update[c], default=str) if c in ("output", "input") else update[c] for c in cols
    ]
    if not anchored:
        return [*values, write.run_id]
    first, last = write.events[0], write.events[-1]
    return [last.seq, last.hash, *values, write.run_id, first.seq - 1]
