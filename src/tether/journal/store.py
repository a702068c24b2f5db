"""The store: runs and their event journal, with approvals, counters, controls and caches.

SQLAlchemy 2 over SQLite (a WAL file, the default) or PostgreSQL (by URL; see
:mod:`tether.journal.connect`). :class:`Store` opens the database (migrating it on first use)
and keeps the journal: its write path and its reads. Appending events is the hot path: it goes
straight to the DBAPI cursor inside one short transaction: the events of one flush are rows of
``events`` (one INSERT of many rows), and the run's row, which anchors its chain (``head_hash``,
``event_count``), is updated in the same transaction. Each new run is also entered in
``run_ledger`` (see :mod:`tether.journal.ledger`).
On SQLite every write transaction is ``BEGIN IMMEDIATE`` so concurrent processes serialise cleanly.

The store's other tables are kept by the classes it inherits, one module each: run rows and id
prefixes (:mod:`~tether.journal.runs`), leases (:mod:`~tether.journal.leases`), approvals
(:mod:`~tether.journal.approvals`), counters (:mod:`~tether.journal.counters`), the kill switch
(:mod:`~tether.journal.controls`), blobs (:mod:`~tether.journal.blobs`) and the response cache
(:mod:`~tether.journal.cache_backend`). What the engine needs of them is described by the
protocols of :mod:`tether.journal.protocols`.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from typing import Any, TypeVar

import sqlalchemy as sa

from tether.errors import JournalConflict, JournalError, LeaseLost, StoreUnavailable, UsageError
from tether.journal.approvals import ApprovalRecord, ApprovalRows, args_hash
from tether.journal.approvals import approval_values as _approval_values
from tether.journal.blobs import BlobRows
from tether.journal.cache_backend import CacheRows
from tether.journal.chain import GENESIS, journal_key
from tether.journal.committer import GroupCommitter
from tether.journal.connect import normalise_url, open_engine, shown_url
from tether.journal.controls import ControlRows
from tether.journal.counters import CounterRows, Reservation
from tether.journal.events import Event
from tether.journal.faults import NO_RETRY, StoreRetry, is_transient, unique_violation
from tether.journal.jsontext import encode_payload_bytes
from tether.journal.leases import Lease, LeaseRows, default_ttl
from tether.journal.ledger import ledger_hash
from tether.journal.maintenance import Maintenance
from tether.journal.migrations import MIGRATIONS, migrate, schema_version
from tether.journal.reads import EventReads
from tether.journal.rows import event_tuples
from tether.journal.runs import MIN_ID_PREFIX, RunRecord, RunRows
from tether.journal.runs import RUN_COLUMNS as _RUN_COLUMNS
from tether.journal.writes import JournalWrite, _Conflict, _Statements, _Transient

__all__ = [
    "MIN_ID_PREFIX",
    "ApprovalRecord",
    "Reservation",
    "RunRecord",
    "Store",
    "args_hash",
    "normalise_url",
    "shown_url",
]

_T = TypeVar("_T")


_LEDGER_LOCK = 7410032  # the PostgreSQL advisory lock that serialises entries in run_ledger
_TABLES = ("runs", "events", "run_ledger", "blobs", "approvals", "counters", "controls", "cache")


class Store(
    EventReads,
    RunRows,
    LeaseRows,
    ApprovalRows,
    CounterRows,
    ControlRows,
    BlobRows,
    CacheRows,
    Maintenance,
):
    """Durable state of tether. Safe to share between threads of one process."""

    def __init__(
        self,
        url: str | None = None,
        *,
        echo: bool = False,
        read_only: bool = False,
        retry: StoreRetry | None = None,
        busy_timeout: float = 60.0,
        lease_ttl: float | None = None,
    ) -> None:
        """Open (and on first use create or migrate) the store at ``url``.

        ``read_only``: open without migrating and never write (``tether verify`` does, so it can
        check a journal on read-only media); the schema must be current. ``retry``: how the
        journal's writer retries transient store errors (see :class:`StoreRetry`).
        ``busy_timeout``: on SQLite, how long a statement waits for another process's lock
        before the error counts as transient. ``lease_ttl``: seconds a run's lease holds without
        renewal (default ``TETHER_LEASE_TTL``, else 15; see :mod:`tether.journal.leases`).
        """
        self.lease_ttl = default_ttl() if lease_ttl is None else lease_ttl
        self.url = normalise_url(url)
        self.is_sqlite = self.url.startswith("sqlite")
        # one connection, in this process alone: no other process can drive its runs
        self.in_memory = self.url in ("sqlite://", "sqlite:///:memory:")
        self.read_only = read_only
        self.retry = retry or StoreRetry()
        self._unavailable = False  # the last write gave up: the next one tries once (see _write)
        self.engine = open_engine(
            self.url, echo=echo, read_only=read_only, busy_timeout=busy_timeout
        )
        self._ph = "?" if self.is_sqlite else "%s"
        self._sql = _Statements.using(self._ph, "sqlite" if self.is_sqlite else "postgresql")
        self.journal_key = journal_key()  # read from the environment, never stored
        self._lock = threading.RLock()
        # the journal's writer thread: runs' writes off their event loops, grouped
        self.committer = GroupCommitter(self)
        self._raw: Any = None
        self._cur: Any = None  # the journal's write cursor on ``_raw`` (see _write)
        self._switches: dict[str, tuple[float, tuple[bool, str]]] = {}  # see paused()
        try:
            self.schema_version = self._check_schema() if read_only else migrate(self.engine)
            md = sa.MetaData()
            md.reflect(self.engine, only=list(_TABLES))
        except sa.exc.DBAPIError as exc:
            # unreachable server, refused login, or a file that is not (or no longer) a database
            self.engine.dispose()
            raise UsageError(f"cannot open store {shown_url(self.url)}: {exc.orig}") from exc
        except (sa.exc.InvalidRequestError, sa.exc.NoSuchTableError) as exc:
            self.engine.dispose()
            raise UsageError(
                f"cannot open store {shown_url(self.url)}: it is not a tether store ({exc})"
            ) from exc
        self.t = md.tables

    def _check_schema(self) -> int:
        """The schema version of a store opened read-only, which must be the current one."""
        latest = MIGRATIONS[-1][0]
        with self.engine.connect() as conn:
            version = schema_version(conn)
        if version is None:
            raise UsageError(f"store {shown_url(self.url)} holds no tether journal")
        if version != latest:
            raise UsageError(
                f"store {shown_url(self.url)} has schema version {version}, "
                f"this tether reads {latest}: "
                "open it writable once (any other tether command) to migrate it"
            )
        return version

    # -- connection plumbing -------------------------------------------------------------------

    def _raw_conn(self) -> Any:
        if self._raw is None:
            self._raw = self.engine.raw_connection()
        return self._raw

    def close(self) -> None:
        self.committer.close()  # what runs submitted is written first
        with self._lock:
            if self._cur is not None:
                self._cur.close()
                self._cur = None
            if self._raw is not None:
                self._raw.close()
                self._raw = None
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- runs and events -----------------------------------------------------------------------

    def create_run(
        self,
        record: RunRecord,
        events: Sequence[Event] = (),
        values: dict[str, Any] | None = None,
        *,
        lease: Lease | None = None,
        approvals: Sequence[ApprovalRecord] = (),
    ) -> None:
        """Insert a run's row together with its first events, in one transaction.

        ``values`` (column → value) override the record's, as :meth:`append`'s ``run_update``
        would, so a run that ends before its first write is written once, as it ended.
        ``lease``:
        the run's first lease (token 1), taken in the same transaction."""
        row = record.to_dict()
        if values:
            row.update(values)
        row["input"] = encode_payload_bytes(row["input"]).decode()
        if row["output"] is not None:
            row["output"] = encode_payload_bytes(row["output"]).decode()
        self.write(JournalWrite(events, new_run=row, lease=lease, approvals=approvals))

    def append(
        self,
        events: Sequence[Event],
        run_update: dict[str, Any] | None = None,
        *,
        lease: Lease | None = None,
        approvals: Sequence[ApprovalRecord] = (),
    ) -> None:
        """Write events (and optionally update the run's row) in one transaction.

        ``lease``: the writer's lease on the run; if it was taken over, nothing is written and
        :class:`~tether.errors.LeaseLost` is raised (the check renews the lease too).
        ``approvals``: approval requests the events ask for, inserted in the same transaction
        (a crash leaves both or neither)."""
        if not events and not run_update:
            return
        self.write(JournalWrite(events, run_update=run_update, lease=lease, approvals=approvals))

    def write(self, write: JournalWrite) -> None:
        """One run's write, in a transaction of its own (see :meth:`write_group`); raises why it
        was refused."""
        error = self.write_group([write])[0]
        if error is not None:
            raise error

    def write_group(self, writes: Sequence[JournalWrite]) -> list[JournalError | None]:
        """The journal's write path: many runs' writes in one short transaction, straight on
        the DBAPI connection (a group commit); for each write, ``None`` or why it was refused.

        Each write's events (all of one run, in order) become rows of ``events``, and its run
        row's anchor (``event_count``, ``head_hash``) moves to the last of them. An append must
        continue the stored journal exactly (its first event follows the anchor's count and
        links to its hash): otherwise another writer got there first, and that write is refused
        (rolled back to its savepoint) while the others commit. Its approval rows go in with it.

        A transient store error (see :func:`~tether.journal.faults.is_transient`) is retried on
        a fresh connection, with backoff, within ``self.retry``. A failed commit's outcome is
        unknown, so each retry first reads back what is stored: a write found there (the commit
        went through before the connection dropped) is not made twice. A store still failing
        after the last attempt raises :class:`StoreUnavailable` (see :meth:`_retrying`).
        """
        dialect = "sqlite" if self.is_sqlite else "postgresql"
        prepared = [
            (w, event_tuples(w.events, dialect), [_approval_values(a) for a in w.approvals])
            for w in writes
        ]

        def attempt(retried: bool) -> list[JournalError | None]:
            return self._write_group_once(prepared, retried=retried)

        def gave_up(failure: _Transient, attempts: int) -> StoreUnavailable:
            return self._gave_up(writes[0], failure, attempts, len(writes))

        return self._retrying(attempt, gave_up)

    def _retrying(
        self,
        attempt: Callable[[bool], _T],
        gave_up: Callable[[_Transient, int], StoreUnavailable],
    ) -> _T:
        """Call ``attempt(retried)`` until it does not fail transiently, waiting as
        ``self.retry`` says between calls; past the last attempt raise ``gave_up(...)``.

        Once the store has been given up on, the next call makes a single attempt (until one
        succeeds): a caller cleaning up after the error does not wait through the backoff again.
        """
        with self._lock:
            waits = (NO_RETRY if self._unavailable else self.retry).delays()
            attempts = 1
            while True:
                try:
                    result = attempt(attempts > 1)
                except _Transient as failure:
                    wait = next(waits, None)
                    if wait is None:
                        self._unavailable = True
                        raise gave_up(failure, attempts) from failure.cause
                    time.sleep(wait)
                    attempts += 1
                    continue
                self._unavailable = False
                return result

    def _gave_up(
        self, write: JournalWrite, failure: _Transient, attempts: int, group: int = 1
    ) -> StoreUnavailable:
        run_id, events = write.run_id, write.events
        what = f"events #{events[0].seq}-#{events[-1].seq} were" if events else "row was"
        after = (
            "the run was not started"
            if write.new_run is not None
            else f"the stored journal ends before them: resume the run (`tether resume {run_id}`) "
            "once the store is back"
        )
        others = f" (with {group - 1} other run(s)' writes)" if group > 1 else ""
        return StoreUnavailable(
            f"store unavailable: run {run_id}'s {what} not written{others} "
            f"({attempts} attempt(s), last error: {failure.cause}); {after}",
            attempts=attempts,
        )

    def _write_group_once(
        self,
        prepared: Sequence[tuple[JournalWrite, list[tuple[Any, ...]], list[tuple[Any, ...]]]],
        *,
        retried: bool,
        apart: bool = False,
    ) -> list[JournalError | None]:
        """One attempt of :meth:`write_group`; raises ``_Transient`` for an error worth retrying.

        ``retried``: an earlier attempt failed with its outcome unknown; a write found stored is
        not written again. The group is first written as one (the usual case: no write refused);
        if one is refused, the group is written again with each write in a savepoint
        (``apart``), so that only the refused one is rolled back.
        """
        raw: Any = None
        cur: Any = None
        errors: list[JournalError | None] = []
        try:
            raw = self._raw_conn()
            cur = self._cur
            if cur is None:  # one cursor for the journal's writes, kept with the connection
                cur = self._cur = raw.cursor()
            if self.is_sqlite:
                cur.execute("BEGIN IMMEDIATE")
            if len(prepared) == 1 or not apart:  # nothing to keep apart: no savepoints
                for write, rows, approvals in prepared:
                    self._apply(cur, write, rows, approvals, retried=retried)
                    errors.append(None)
                raw.commit() if not self.is_sqlite else cur.execute("COMMIT")
                return errors
            for i, (write, rows, approvals) in enumerate(prepared):
                cur.execute(f"SAVEPOINT w{i}")
                try:
                    self._apply(cur, write, rows, approvals, retried=retried)
                except Exception as exc:
                    if is_transient(exc, self.engine.dialect, raw.dbapi_connection):
                        raise
                    cur.execute(f"ROLLBACK TO SAVEPOINT w{i}")
                    errors.append(self._refusal(exc, write))
                else:
                    errors.append(None)
                cur.execute(f"RELEASE SAVEPOINT w{i}")
            raw.commit() if not self.is_sqlite else cur.execute("COMMIT")
            return errors
        except Exception as exc:
            dbapi_conn = None if raw is None else raw.dbapi_connection
            transient = is_transient(exc, self.engine.dialect, dbapi_conn)
            try:
                if raw is not None:
                    raw.rollback() if not self.is_sqlite else cur.execute("ROLLBACK")
            except Exception:
                self._discard_raw()
            if transient:
                self._discard_raw()
                raise _Transient(exc) from exc
            if len(prepared) == 1:
                return [self._refusal(exc, prepared[0][0])]
            if not apart:  # one write of the group was refused: again, each in a savepoint
                return self._write_group_once(prepared, retried=retried, apart=True)
            raise JournalError(f"cannot append to the journal: {exc}") from exc

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

    def _refusal(self, exc: BaseException, write: JournalWrite) -> JournalError:
        """Why a write was refused, as the error its run raises: a conflict is told by the
        database's uniqueness error and the table it names (or by ``_Conflict``)."""
        if isinstance(exc, JournalError):  # LeaseLost, a keyed/unkeyed mismatch
            return exc
        collided = unique_violation(exc, self.engine.dialect)
        error: JournalError
        if collided == "runs" and write.new_run is not None:
            error = JournalConflict(f"run {write.run_id} already exists")
        elif collided is not None or isinstance(exc, _Conflict):
            error = JournalConflict(
                f"run {write.run_id}: another process appended to this run's journal at the "
                "same time; stop one of them"
            )
        else:
            error = JournalError(f"cannot append to the journal: {exc}")
        error.__cause__ = exc
        return error

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

    def _discard_raw(self) -> None:
        """Drop the journal's connection (the next write opens a fresh one): after a transient
        error it may be dead, or in a state nothing should rely on."""
        raw, self._raw, self._cur = self._raw, None, None
        if raw is not None:
            with suppress(Exception):
                raw.invalidate()

    # -- leases (one driver per run; see tether.journal.leases) ----------------------------------

    def _fence(self, cur: Any, lease: Lease) -> tuple[Any, Any, Any]:
        """Inside a journal write: check the writer still holds ``lease`` and renew it; the row
        stays locked to the transaction's end, so no takeover slips in between. Returns the
        run row's anchor (``event_count``, ``head_hash``, ``keyed``), read in the same step."""
        ph = self._ph
        cur.execute(
            f"UPDATE runs SET lease_expires={ph} WHERE id={ph} AND lease_token={ph}"
            f" AND lease_owner={ph} RETURNING event_count, head_hash, keyed",
            (time.time() + self.lease_ttl, lease.run_id, lease.token, lease.owner),
        )
        row = cur.fetchone()
        if row is None:
            raise LeaseLost(lease.run_id)
        return tuple(row)

    def _first_lease(self, cur: Any, lease: Lease) -> None:
        """Inside the write that creates a run: its creator holds the first lease."""
        ph = self._ph
        cur.execute(
            f"UPDATE runs SET lease_owner={ph}, lease_expires={ph}, lease_token={ph} WHERE id={ph}",
            (lease.owner, time.time() + self.lease_ttl, lease.token, lease.run_id),
        )

    # -- the kill switch, read on the journal's connection ---------------------------------------

    def _read_paused(self, agent: str) -> tuple[bool, str]:
        """Read the switch on the journal's connection, retrying transient errors as writes do
        (a read has no outcome to be unsure of: it is simply made again)."""

        def gave_up(failure: _Transient, attempts: int) -> StoreUnavailable:
            return StoreUnavailable(
                f"store unavailable: cannot read agent {agent}'s kill switch "
                f"({attempts} attempt(s), last error: {failure.cause})",
                attempts=attempts,
            )

        row = self._retrying(lambda _retried: self._read_paused_once(agent), gave_up)
        if row is None or not row[0]:
            return False, ""
        return _switch_on(row[1], row[2])

    def _read_switches(self) -> dict[str, tuple[bool, str]]:
        def gave_up(failure: _Transient, attempts: int) -> StoreUnavailable:
            return StoreUnavailable(
                f"store unavailable: cannot read the kill switches "
                f"({attempts} attempt(s), last error: {failure.cause})",
                attempts=attempts,
            )

        rows = self._retrying(lambda _retried: self._read_paused_once(None), gave_up)
        return {str(agent): _switch_on(reason, by) for agent, paused, reason, by in rows if paused}

    def _read_paused_once(self, agent: str | None) -> Any:
        """One agent's switch row (``None``: every agent's, as rows with the agent first)."""
        raw: Any = None
        try:
            raw = self._raw_conn()
            cur = raw.cursor()
            try:
                if agent is None:
                    cur.execute("SELECT agent, paused, reason, changed_by FROM controls")
                    row = cur.fetchall()
                else:
                    cur.execute(
                        f"SELECT paused, reason, changed_by FROM controls WHERE agent={self._ph}",
                        (agent,),
                    )
                    row = cur.fetchone()
                if not self.is_sqlite:
                    raw.commit()
            finally:
                cur.close()
        except Exception as exc:
            dbapi_conn = None if raw is None else raw.dbapi_connection
            if is_transient(exc, self.engine.dialect, dbapi_conn):
                self._discard_raw()
                raise _Transient(exc) from exc
            raise
        return row


def _switch_on(reason: str | None, by: str | None) -> tuple[bool, str]:
    """A kill switch that is on, and why, as the engine reports it."""
    return True, f"paused by {by}: {reason or 'no reason given'}"
