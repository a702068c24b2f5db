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

import threading
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from typing import Any, TypeVar

import sqlalchemy as sa

from tether.errors import JournalConflict, JournalError, StoreUnavailable, UsageError
from tether.journal.approvals import ApprovalRecord, ApprovalRows, args_hash
from tether.journal.approvals import approval_values as _approval_values
from tether.journal.blobs import BlobRows
from tether.journal.cache_backend import CacheRows
from tether.journal.chain import journal_key
from tether.journal.committer import GroupCommitter
from tether.journal.connect import normalise_url, open_engine, shown_url
from tether.journal.controls import ControlRows
from tether.journal.counters import CounterRows, Reservation
from tether.journal.events import Event
from tether.journal.faults import NO_RETRY, StoreRetry, is_transient, unique_violation
from tether.journal.jsontext import encode_payload_bytes
from tether.journal.leases import Lease, LeaseRows, default_ttl
from tether.journal.maintenance import Maintenance
from tether.journal.migrations import MIGRATIONS, migrate, schema_version
from tether.journal.reads import EventReads
from tether.journal.rows import event_tuples
from tether.journal.runs import MIN_ID_PREFIX, RunRecord, RunRows
from tether.journal.transaction import TransactionSteps, _Prepared
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


_TABLES = ("runs", "events", "run_ledger", "blobs", "approvals", "counters", "controls", "cache")


class Store(
    TransactionSteps,
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
        # kill-switch readings have a connection of their own, so that a reading (which a side
        # effect waits for) never waits behind a group commit holding the journal's
        self._reader_raw: Any = None
        self._reader_lock = threading.RLock()
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

    def _reader_conn(self) -> Any:
        """The connection kill-switch readings use (a store in memory has one connection)."""
        if self.in_memory:
            return self._raw_conn()
        if self._reader_raw is None:
            self._reader_raw = self.engine.raw_connection()
        return self._reader_raw

    def close(self) -> None:
        self.committer.close()  # what runs submitted is written first
        with self._reader_lock:
            if self._reader_raw is not None:
                with suppress(Exception):
                    self._reader_raw.close()
                self._reader_raw = None
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
        lock: Any = None,
    ) -> _T:
        """Call ``attempt(retried)`` until it does not fail transiently, waiting as
        ``self.retry`` says between calls; past the last attempt raise ``gave_up(...)``.

        Once the store has been given up on, the next call makes a single attempt (until one
        succeeds): a caller cleaning up after the error does not wait through the backoff again.
        """
        with self._lock if lock is None else lock:
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
        prepared: Sequence[_Prepared],
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
                self._apply_group(cur, prepared, retried=retried)
                raw.commit() if not self.is_sqlite else cur.execute("COMMIT")
                return [None] * len(prepared)
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

    def _discard_raw(self) -> None:
        """Drop the journal's connection (the next write opens a fresh one): after a transient
        error it may be dead, or in a state nothing should rely on."""
        raw, self._raw, self._cur = self._raw, None, None
        if raw is not None:
            with suppress(Exception):
                raw.invalidate()

    # -- the kill switch, read on a connection of its own ------------------------------------------

    def _read_paused(self, agent: str) -> tuple[bool, str]:
        """Read the switch on the readings' own connection, retrying transient errors as writes do
        (a read has no outcome to be unsure of: it is simply made again)."""

        row = self._read_switch_rows(agent, f"agent {agent}'s kill switch")
        if row is None or not row[0]:
            return False, ""
        return _switch_on(row[1], row[2])

    def _read_switches(self) -> dict[str, tuple[bool, str]]:
        rows = self._read_switch_rows(None, "the kill switches")
        return {str(agent): _switch_on(reason, by) for agent, paused, reason, by in rows if paused}

    def _read_switch_rows(self, agent: str | None, what: str) -> Any:
        """:meth:`_read_paused_once`, retried; ``what`` names the reading in the error."""

        def gave_up(failure: _Transient, attempts: int) -> StoreUnavailable:
            return StoreUnavailable(
                f"store unavailable: cannot read {what} "
                f"({attempts} attempt(s), last error: {failure.cause})",
                attempts=attempts,
            )

        lock = self._lock if self.in_memory else self._reader_lock  # the connection's
        return self._retrying(lambda _retried: self._read_paused_once(agent), gave_up, lock)

    def _read_paused_once(self, agent: str | None) -> Any:
        """One agent's switch row (``None``: every agent's, as rows with the agent first)."""
        raw: Any = None
        try:
            raw = self._reader_conn()
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
                self._discard_reader()
                raise _Transient(exc) from exc
            raise
        return row

    def _discard_reader(self) -> None:
        if self.in_memory:
            self._discard_raw()
            return
        raw, self._reader_raw = self._reader_raw, None
        if raw is not None:
            with suppress(Exception):
                raw.invalidate()


def _switch_on(reason: str | None, by: str | None) -> tuple[bool, str]:
    """A kill switch that is on, and why, as the engine reports it."""
    return True, f"paused by {by}: {reason or 'no reason given'}"
