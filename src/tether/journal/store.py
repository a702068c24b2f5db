"""The store: runs, the event journal, approvals, counters, controls and caches.

SQLAlchemy 2 over SQLite (a WAL file, the default) or PostgreSQL (by URL). Appending events is the
hot path: it goes straight to the DBAPI cursor inside one short transaction: the events of one
flush are rows of ``events`` (one INSERT of many rows), and the run's row, which anchors its chain
(``head_hash``, ``event_count``), is updated in the same transaction. Each new run is also entered
in ``run_ledger`` (see :mod:`tether.journal.ledger`).
On SQLite every write transaction is ``BEGIN IMMEDIATE`` so concurrent processes serialise cleanly.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as postgresql_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect

from tether.errors import (
    JournalCorrupted,
    JournalError,
    LeaseLost,
    NotFound,
    RunLeased,
    StoreUnavailable,
    UsageError,
)
from tether.journal.chain import GENESIS, journal_key
from tether.journal.events import Event
from tether.journal.faults import (
    NO_RETRY,
    SQLITE_BUSY,
    SQLITE_LOCKED,
    StoreRetry,
    is_transient,
    unique_violation,
)
from tether.journal.jsontext import encode_payload_bytes
from tether.journal.leases import Lease, default_ttl, holder_gone
from tether.journal.ledger import ledger_hash
from tether.journal.migrations import MIGRATIONS, migrate, schema_version
from tether.journal.rows import event_tuples, insert_events_sql

DEFAULT_DB = "tether.db"
_T = TypeVar("_T")


def _read_only_sqlite_url(url: str) -> str:
    """The SQLAlchemy URL that opens the SQLite file of ``url`` read-only (SQLite's ``mode=ro``).

    Nothing is created, migrated or written, so a journal on read-only media opens; a file that
    does not exist is an error instead of a new empty store. In a directory this process cannot
    write, SQLite cannot make the lock file a write-ahead-log journal is read with; when no log
    is there either, every change is in the file itself, which is then read as it stands
    (``immutable``).
    """
    path = url.removeprefix("sqlite:///")
    if "?" in path:  # the caller gave SQLite URI options already
        return url
    params = "mode=ro"
    if not os.access(Path(path).parent, os.W_OK) and not Path(f"{path}-wal").exists():
        params += "&immutable=1"
    return f"sqlite:///file:{quote(path)}?{params}&uri=true"


MIN_ID_PREFIX = 6  # the fewest characters of an id that select a record by prefix


def shown_url(url: str) -> str:
    """A store URL as it may be shown: any password replaced by ``***``."""
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


def _common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _enter_wal(cur: Any, busy_timeout: float) -> None:
    """Switch a SQLite connection to write-ahead logging.

    The switch needs the file's exclusive lock, and SQLite answers "database is locked" at once,
    without waiting, when another process holds it (several processes opening a brand-new file
    together), so the switch is tried again until ``busy_timeout`` has passed.
    """
    deadline = time.monotonic() + busy_timeout
    delay = 0.005
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            locked = (exc.sqlite_errorcode & 0xFF) in (SQLITE_BUSY, SQLITE_LOCKED)
            if not locked or time.monotonic() >= deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)


def normalise_url(url: str | None) -> str:
    """Accept a file path, ``sqlite:///...``, or ``postgresql://...``; default ``TETHER_DB``."""
    raw = url or os.environ.get("TETHER_DB") or DEFAULT_DB
    if raw.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + raw.split("://", 1)[1]
    if "://" in raw:
        return raw
    if raw == ":memory:":
        return "sqlite://"
    return f"sqlite:///{Path(raw).expanduser()}"


@dataclass(slots=True)
class RunRecord:
    """A row of the runs table: a projection of the run's journal."""

    id: str
    agent: str
    agent_version: str
    agent_ref: str | None
    status: str
    input: Any
    output: Any
    reason: str | None
    model: str | None
    steps: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    parent_run_id: str | None
    fork_step: int | None
    requested_by: str | None
    created_at: float
    updated_at: float

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


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


@dataclass(slots=True, frozen=True)
class Reservation:
    """One counter to bump by one call and ``amount``, within optional caps."""

    name: str
    key: str
    window_start: int
    amount: float
    max_count: int | None
    max_total: float | None


@dataclass(slots=True, frozen=True)
class _Statements:
    """The journal's write statements, written once for a placeholder style."""

    insert_run: str
    insert_events: str
    anchor: str
    set_anchor: str
    hash_at: str
    run_exists: str
    ledger_tail: str
    insert_ledger: str
    insert_approval: str

    @classmethod
    def using(cls, ph: str, dialect: str) -> _Statements:
        columns = (*_RUN_COLUMNS, *_ANCHOR_COLUMNS)
        lock = " FOR UPDATE" if dialect == "postgresql" else ""
        return cls(
            insert_run=f"INSERT INTO runs ({','.join(columns)})"
            f" VALUES ({','.join([ph] * len(columns))})",
            insert_events=insert_events_sql(dialect),
            anchor=f"SELECT event_count, head_hash, keyed FROM runs WHERE id={ph}{lock}",
            set_anchor=f"UPDATE runs SET event_count={ph}, head_hash={ph}"
            f" WHERE id={ph} AND event_count={ph}",
            hash_at=f"SELECT hash FROM events WHERE run_id={ph} AND seq={ph}",
            run_exists=f"SELECT 1 FROM runs WHERE id={ph}",
            ledger_tail="SELECT position, hash FROM run_ledger ORDER BY position DESC LIMIT 1",
            insert_ledger="INSERT INTO run_ledger (position, run_id, hash)"
            f" VALUES ({ph},{ph},{ph})",
            insert_approval=f"INSERT INTO approvals ({','.join(_APPROVAL_COLUMNS)})"
            f" VALUES ({','.join([ph] * len(_APPROVAL_COLUMNS))})",
        )


class _Conflict(Exception):
    """An append that does not continue the stored journal (another writer got there first)."""


class _Transient(Exception):
    """A store error that another attempt on a fresh connection may get past."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class _Refused(Exception):
    def __init__(self, index: int) -> None:
        self.index = index


def _approval_values(record: ApprovalRecord) -> tuple[Any, ...]:
    """An approval as the values of an INSERT in ``_APPROVAL_COLUMNS`` order."""
    row = record.to_dict()
    row["args"] = json.dumps(record.args, default=str)
    row["edited_args"] = None if record.edited_args is None else json.dumps(record.edited_args)
    return tuple(row[c] for c in _APPROVAL_COLUMNS)


def args_hash(args: dict[str, Any]) -> str:
    """The hash an approval is bound to: canonical JSON of the arguments."""
    text = json.dumps(args, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


_RUN_COLUMNS = (
    "id",
    "agent",
    "agent_version",
    "agent_ref",
    "status",
    "input",
    "output",
    "reason",
    "model",
    "steps",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "parent_run_id",
    "fork_step",
    "requested_by",
    "created_at",
    "updated_at",
)
_ANCHOR_COLUMNS = ("head_hash", "event_count", "keyed")
"""The run row's anchor of its chain: the last event's hash, the number of events, and whether
the chain is keyed (an HMAC: see :func:`tether.journal.events.journal_key`)."""
_LEDGER_LOCK = 7410032  # the PostgreSQL advisory lock that serialises entries in run_ledger
_APPROVAL_COLUMNS = (
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


class Store:
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
        kwargs: dict[str, Any] = {"echo": echo}
        engine_url = self.url
        if self.is_sqlite:
            kwargs["connect_args"] = {"timeout": busy_timeout, "check_same_thread": False}
            if self.url in ("sqlite://", "sqlite:///:memory:"):
                kwargs["poolclass"] = sa.pool.StaticPool
            elif read_only:
                engine_url = _read_only_sqlite_url(self.url)
        else:
            kwargs["pool_pre_ping"] = True  # a pooled connection the server dropped is replaced
        try:
            self.engine = sa.create_engine(engine_url, **kwargs)
        except (sa.exc.ArgumentError, ImportError, ValueError) as exc:
            # ValueError: a URL that does not parse (a port that is not a number, a stray [)
            raise UsageError(f"cannot open store {shown_url(self.url)}: {exc}") from exc
        if self.is_sqlite:
            self._setup_sqlite(busy_timeout)
        elif read_only:
            self._setup_read_only_postgresql()
        self._ph = "?" if self.is_sqlite else "%s"
        self._sql = _Statements.using(self._ph, "sqlite" if self.is_sqlite else "postgresql")
        self.journal_key = journal_key()  # read from the environment, never stored
        self._lock = threading.RLock()
        self._raw: Any = None
        self._cur: Any = None  # the journal's write cursor on ``_raw`` (see _write)
        self._switches: dict[str, tuple[float, tuple[bool, str]]] = {}  # see paused()
        try:
            self.schema_version = self._check_schema() if read_only else migrate(self.engine)
            md = sa.MetaData()
            md.reflect(
                self.engine,
                only=[
                    "runs",
                    "events",
                    "run_ledger",
                    "blobs",
                    "approvals",
                    "counters",
                    "controls",
                    "cache",
                ],
            )
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

    def _setup_sqlite(self, busy_timeout: float) -> None:
        read_only = self.read_only

        @sa.event.listens_for(self.engine, "connect")
        def _connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
            if read_only:  # no journal-mode change, which writes the file's header
                cur.execute("PRAGMA query_only=ON")
            else:
                _enter_wal(cur, busy_timeout)
                cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        # a read-only connection cannot take the write lock that BEGIN IMMEDIATE asks for
        begin = "BEGIN" if read_only else "BEGIN IMMEDIATE"

        @sa.event.listens_for(self.engine, "begin")
        def _begin(conn: sa.Connection) -> None:
            conn.exec_driver_sql(begin)

    def _setup_read_only_postgresql(self) -> None:
        @sa.event.listens_for(self.engine, "connect")
        def _connect(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
            cur.close()
            dbapi_conn.commit()

    @contextmanager
    def _tx(self) -> Iterator[sa.Connection]:
        try:
            with self.engine.begin() as conn:
                yield conn
        except sa.exc.OperationalError as exc:
            raise JournalError(f"store error: {exc.orig}") from exc

    def _raw_conn(self) -> Any:
        if self._raw is None:
            self._raw = self.engine.raw_connection()
        return self._raw

    def close(self) -> None:
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
        self._write(events, new_run=row, lease=lease, approvals=approvals)

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
        self._write(events, run_update=run_update, lease=lease, approvals=approvals)

    def _write(
        self,
        events: Sequence[Event],
        *,
        new_run: dict[str, Any] | None = None,
        run_update: dict[str, Any] | None = None,
        lease: Lease | None = None,
        approvals: Sequence[ApprovalRecord] = (),
    ) -> None:
        """The journal's write path: one short transaction straight on the DBAPI connection.

        The events (all of one run, in order) become rows of ``events``, and the run row's anchor
        (``event_count``, ``head_hash``) moves to the last of them. An append must continue the
        stored journal exactly (its first event follows the anchor's count and links to its
        hash): otherwise another writer got there first, and nothing is written. ``approvals``
        are inserted in the same transaction.

        A transient store error (see :func:`~tether.journal.faults.is_transient`) is retried on
        a fresh connection, with backoff, within ``self.retry``. A failed commit's outcome is
        unknown, so each retry first reads back what is stored: if this batch is there (the
        commit went through before the connection dropped) the write is done, and nothing is
        written twice. A store still failing after the last attempt raises
        :class:`StoreUnavailable` (see :meth:`_retrying`).
        """
        rows = event_tuples(events, "sqlite" if self.is_sqlite else "postgresql")
        asked = [_approval_values(a) for a in approvals]

        def attempt(retried: bool) -> None:
            self._write_once(
                events, new_run, run_update, rows, retried=retried, lease=lease, approvals=asked
            )

        def gave_up(failure: _Transient, attempts: int) -> StoreUnavailable:
            return self._gave_up(events, new_run, run_update, failure, attempts)

        self._retrying(attempt, gave_up)

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
        self,
        events: Sequence[Event],
        new_run: dict[str, Any] | None,
        run_update: dict[str, Any] | None,
        failure: _Transient,
        attempts: int,
    ) -> StoreUnavailable:
        run_id = events[0].run_id if events else (new_run or run_update or {}).get("id", "?")
        what = f"events #{events[0].seq}-#{events[-1].seq} were" if events else "row was"
        after = (
            "the run was not started"
            if new_run is not None
            else f"the stored journal ends before them: resume the run (`tether resume {run_id}`) "
            "once the store is back"
        )
        return StoreUnavailable(
            f"store unavailable: run {run_id}'s {what} not written "
            f"({attempts} attempt(s), last error: {failure.cause}); {after}",
            attempts=attempts,
        )

    def _write_once(
        self,
        events: Sequence[Event],
        new_run: dict[str, Any] | None,
        run_update: dict[str, Any] | None,
        rows: list[tuple[Any, ...]],
        *,
        retried: bool,
        lease: Lease | None = None,
        approvals: Sequence[tuple[Any, ...]] = (),
    ) -> None:
        """One attempt of :meth:`_write`; raises ``_Transient`` for an error worth retrying.

        ``retried``: an earlier attempt failed with its outcome unknown; if what it wrote is
        stored, this attempt writes nothing.
        """
        ph = self._ph
        sql = self._sql
        raw: Any = None
        cur: Any = None
        try:
            raw = self._raw_conn()
            cur = self._cur
            if cur is None:  # one cursor for the journal's writes, kept with the connection
                cur = self._cur = raw.cursor()
            if self.is_sqlite:
                cur.execute("BEGIN IMMEDIATE")
            if new_run is None and lease is not None:
                self._fence(cur, lease)
            if not (retried and self._written(cur, events, new_run)):
                if new_run is not None:
                    self._insert_run(cur, new_run, events)
                    if lease is not None:
                        self._first_lease(cur, lease)
                elif events:
                    self._check_continues(cur, events)
                if events:
                    cur.executemany(sql.insert_events, rows)
                    if new_run is None:
                        first, last = events[0], events[-1]
                        cur.execute(
                            sql.set_anchor, (last.seq, last.hash, first.run_id, first.seq - 1)
                        )
                        if cur.rowcount != 1:
                            raise _Conflict(first.run_id)
                if approvals:
                    cur.executemany(sql.insert_approval, approvals)
                if run_update:
                    cols = sorted(run_update)
                    values = [
                        json.dumps(run_update[c], default=str)
                        if c in ("output", "input")
                        else run_update[c]
                        for c in cols
                    ]
                    sets = ",".join(f"{c}={ph}" for c in cols)
                    run_id = events[0].run_id if events else run_update["id"]
                    cur.execute(f"UPDATE runs SET {sets} WHERE id={ph}", [*values, run_id])
            raw.commit() if not self.is_sqlite else cur.execute("COMMIT")
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
            if isinstance(exc, LeaseLost):
                raise
            collided = unique_violation(exc, self.engine.dialect)
            if collided == "runs" and new_run is not None:
                raise JournalError(f"run {new_run['id']} already exists") from exc
            if collided is not None or isinstance(exc, _Conflict):
                raise JournalError(
                    f"run {events[0].run_id if events else '?'}: another process appended "
                    "to this run's journal at the same time; stop one of them"
                ) from exc
            raise JournalError(f"cannot append to the journal: {exc}") from exc

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

    def _check_continues(self, cur: Any, events: Sequence[Event]) -> None:
        """Raise ``_Conflict`` unless ``events`` continue the run's stored journal, and
        ``JournalError`` if they are keyed differently from it."""
        first = events[0]
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

    def _fence(self, cur: Any, lease: Lease) -> None:
        """Inside a journal write: check the writer still holds ``lease`` and renew it; the row
        stays locked to the transaction's end, so no takeover slips in between."""
        ph = self._ph
        cur.execute(
            f"UPDATE runs SET lease_expires={ph} WHERE id={ph} AND lease_token={ph}"
            f" AND lease_owner={ph}",
            (time.time() + self.lease_ttl, lease.run_id, lease.token, lease.owner),
        )
        if cur.rowcount != 1:
            raise LeaseLost(lease.run_id)

    def _first_lease(self, cur: Any, lease: Lease) -> None:
        """Inside the write that creates a run: its creator holds the first lease."""
        ph = self._ph
        cur.execute(
            f"UPDATE runs SET lease_owner={ph}, lease_expires={ph}, lease_token={ph} WHERE id={ph}",
            (lease.owner, time.time() + self.lease_ttl, lease.token, lease.run_id),
        )

    def acquire_lease(self, run_id: str, owner: str) -> Lease:
        """Take run ``run_id``'s lease for ``owner``, with a new fencing token.

        Free, expired, already ``owner``'s, or held by a process of this host that is gone: it
        is taken (one compare-and-set on the token, so of two processes taking it at once one
        wins). Otherwise :class:`~tether.errors.RunLeased` names the holder and its expiry.
        """
        runs = self.t["runs"]
        now = time.time()
        with self._tx() as conn:
            row = conn.execute(
                sa.select(runs.c.lease_owner, runs.c.lease_expires, runs.c.lease_token).where(
                    runs.c.id == run_id
                )
            ).first()
            if row is None:
                raise NotFound(f"run {run_id!r}: no such run (see `tether runs`)")
            holder, expires, token = row[0], row[1], int(row[2])
            if (
                holder is not None
                and holder != owner
                and expires is not None
                and float(expires) >= now
                and not holder_gone(str(holder))
            ):
                raise RunLeased(run_id, str(holder), float(expires))
            taken = conn.execute(
                runs.update()
                .where(runs.c.id == run_id, runs.c.lease_token == token)
                .values(
                    lease_owner=owner, lease_expires=now + self.lease_ttl, lease_token=token + 1
                )
            )
            if taken.rowcount != 1:  # another process took it between our read and write
                raise RunLeased(run_id, "another process", now + self.lease_ttl)
        return Lease(run_id, owner, token + 1)

    def renew_lease(self, lease: Lease) -> None:
        """Push the lease's expiry a time to live ahead; :class:`~tether.errors.LeaseLost` if
        it was taken over. A run not written yet (its row comes with its first flush) has
        nothing to renew."""
        runs = self.t["runs"]
        with self._tx() as conn:
            renewed = conn.execute(
                runs.update()
                .where(
                    runs.c.id == lease.run_id,
                    runs.c.lease_token == lease.token,
                    runs.c.lease_owner == lease.owner,
                )
                .values(lease_expires=time.time() + self.lease_ttl)
            )
            if renewed.rowcount == 1:
                return
            exists = conn.execute(sa.select(runs.c.id).where(runs.c.id == lease.run_id)).first()
        if exists is not None:
            raise LeaseLost(lease.run_id)

    def release_lease(self, lease: Lease) -> None:
        """Give the lease up (the token stays, so writes made under it stay refused once another
        process takes the run); a lease already taken over is left alone."""
        runs = self.t["runs"]
        with self._tx() as conn:
            conn.execute(
                runs.update()
                .where(runs.c.id == lease.run_id, runs.c.lease_token == lease.token)
                .values(lease_owner=None, lease_expires=None)
            )

    def update_run(self, run_id: str, **values: Any) -> None:
        for key in ("output", "input"):
            if key in values and values[key] is not None:
                values[key] = json.dumps(values[key], default=str)
        with self._tx() as conn:
            conn.execute(
                self.t["runs"].update().where(self.t["runs"].c.id == run_id).values(**values)
            )

    def events(self, run_id: str, *, after_seq: int = 0) -> list[Event]:
        """All events of a run (those after ``after_seq``), in order.

        Each event's ``prev_hash`` is the stored hash of the event before it (``GENESIS`` before
        the first): the chain is checked by recomputing every hash over it (verify_chain). Stored
        text that cannot be parsed comes back as ``unreadable`` events, which never verify.
        """
        ev = self.t["events"]
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(ev.c.seq, ev.c.type, ev.c.step, ev.c.ts, ev.c.payload_text, ev.c.hash)
                .where(ev.c.run_id == run_id, ev.c.seq >= after_seq)
                .order_by(ev.c.seq)
            ).all()
        out: list[Event] = []
        prev = GENESIS
        for seq, type_, step, ts, text, digest in rows:
            out.append(Event(run_id, int(seq), type_, int(step), float(ts), text, prev, digest))
            prev = digest
        # the event ``after_seq`` was read too, so the first event kept is linked to its hash
        return [e for e in out if e.seq > after_seq] if after_seq > 0 else out

    def chain_key(self, run_id: str) -> bytes | None:
        """The key a run's chain is checked with: this store's journal key if the run was
        journaled with one, else ``None``. A keyed run without the key cannot be checked or
        continued, which is an error naming the setting."""
        runs_t = self.t["runs"]
        with self.engine.connect() as conn:
            keyed = conn.execute(sa.select(runs_t.c.keyed).where(runs_t.c.id == run_id)).scalar()
        if not keyed:
            return None
        if self.journal_key is None:
            raise UsageError(
                f"run {run_id} was journaled with a journal key: set TETHER_JOURNAL_KEY to read it"
            )
        return self.journal_key

    def count_events(self, run_id: str) -> int:
        ev = self.t["events"]
        with self.engine.connect() as conn:
            n = conn.execute(
                sa.select(sa.func.count()).select_from(ev).where(ev.c.run_id == run_id)
            ).scalar_one()
        return int(n)

    def _run_from_row(self, r: Any) -> RunRecord:
        data = dict(r._mapping)
        for key in ("input", "output"):
            if data[key] is not None:
                try:
                    data[key] = json.loads(data[key])
                except ValueError as exc:
                    raise JournalCorrupted(data["id"], 0, f"run row {key} is not JSON") from exc
        return RunRecord(**{c: data[c] for c in _RUN_COLUMNS})

    def _by_id_or_prefix(self, table: str, ident: str) -> tuple[Any, str]:
        """The row whose id is ``ident``, else the one row whose id starts with it.

        An exact id of any length matches; a prefix must have at least ``MIN_ID_PREFIX``
        characters and is matched literally (``%`` and ``_`` are not wildcards), so an empty or
        tiny argument can never select whichever record happens to be the only one.
        Returns ``(row, "")``, or ``(None, why)``.
        """
        if not ident.strip():
            raise UsageError(f"an id is required (at least {MIN_ID_PREFIX} characters of it)")
        t = self.t[table]
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(t).where(t.c.id == ident)).first()
            if row is not None:
                return row, ""
            if len(ident) < MIN_ID_PREFIX:
                return None, f"no such id (a prefix needs at least {MIN_ID_PREFIX} characters)"
            rows = conn.execute(
                sa.select(t).where(t.c.id.startswith(ident, autoescape=True)).limit(2)
            ).all()
        if len(rows) == 1:
            return rows[0], ""
        return None, "ambiguous prefix" if rows else "no such id"

    def id_prefixes(self, table: str, ids: Sequence[str]) -> dict[str, str]:
        """For each of ``ids`` the shortest prefix (at least ``MIN_ID_PREFIX`` characters) that
        selects it alone among every id of ``table`` now; an id no prefix can single out (one
        that begins another) stays whole, and a whole id always matches exactly."""
        if not ids:
            return {}
        t = self.t[table]
        with self.engine.connect() as conn:
            every = sorted(str(r[0]) for r in conn.execute(sa.select(t.c.id)).all())
        position = {ident: i for i, ident in enumerate(every)}
        out: dict[str, str] = {}
        for ident in ids:
            i = position.get(ident)
            need = MIN_ID_PREFIX
            for j in (i - 1, i + 1) if i is not None else ():
                if 0 <= j < len(every):
                    need = max(need, _common_prefix(ident, every[j]) + 1)
            out[ident] = ident if need >= len(ident) else ident[:need]
        return out

    def count_runs(self, *, status: str | None = None, agent: str | None = None) -> int:
        """How many runs :meth:`list_runs` would list without a limit."""
        runs_t = self.t["runs"]
        q = sa.select(sa.func.count()).select_from(runs_t)
        if status:
            q = q.where(runs_t.c.status == status)
        if agent:
            q = q.where(runs_t.c.agent == agent)
        with self.engine.connect() as conn:
            return int(conn.execute(q).scalar_one())

    def get_run(self, run_id: str) -> RunRecord:
        row, why = self._by_id_or_prefix("runs", run_id)
        if row is None:
            hint = why.replace("no such id", "no such run", 1)
            raise NotFound(f"run {run_id!r}: {hint} (see `tether runs`)")
        return self._run_from_row(row)

    def list_runs(
        self,
        *,
        status: str | None = None,
        agent: str | None = None,
        limit: int = 50,
        parent: str | None = None,
    ) -> list[RunRecord]:
        runs_t = self.t["runs"]
        q = sa.select(runs_t).order_by(runs_t.c.created_at.desc()).limit(limit)
        if status:
            q = q.where(runs_t.c.status == status)
        if agent:
            q = q.where(runs_t.c.agent == agent)
        if parent:
            q = q.where(runs_t.c.parent_run_id == parent)
        with self.engine.connect() as conn:
            return [self._run_from_row(r) for r in conn.execute(q).all()]

    def run_ids(self) -> list[str]:
        runs_t = self.t["runs"]
        with self.engine.connect() as conn:
            return [
                str(r[0])
                for r in conn.execute(sa.select(runs_t.c.id).order_by(runs_t.c.created_at))
            ]

    # -- blobs (content-addressed) ---------------------------------------------------------------

    def put_blob(self, body: str) -> str:
        digest = hashlib.sha256(body.encode("utf-8", "surrogatepass")).hexdigest()
        blobs = self.t["blobs"]
        with self._tx() as conn:
            exists = conn.execute(sa.select(blobs.c.hash).where(blobs.c.hash == digest)).first()
            if exists is None:
                conn.execute(blobs.insert().values(hash=digest, body=body))
        return digest

    def get_blob(self, digest: str) -> str:
        blobs = self.t["blobs"]
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(blobs.c.body).where(blobs.c.hash == digest)).first()
        if row is None:
            raise NotFound(f"blob {digest} not found")
        return str(row[0])

    # -- approvals -----------------------------------------------------------------------------

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
        return ApprovalRecord(**{c: data[c] for c in _APPROVAL_COLUMNS})

    def get_approval(self, approval_id: str) -> ApprovalRecord:
        row, why = self._by_id_or_prefix("approvals", approval_id)
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

    # -- counters (hard limits across runs) ------------------------------------------------------

    def reserve(
        self,
        name: str,
        key: str,
        window_start: int,
        *,
        amount: float,
        max_count: int | None,
        max_total: float | None,
    ) -> tuple[bool, int, float]:
        """Atomically add one call (and ``amount``) to a counter unless that breaks a limit.

        Returns ``(reserved, count, total)`` with the counter's values after the attempt. The check
        and the increment happen in one conditional UPDATE, so concurrent runs in any number of
        processes can never push a counter past its limit.
        """
        wanted = Reservation(name, key, window_start, amount, max_count, max_total)
        refused = self.reserve_many([wanted])
        count, total = self.counter(name, key, window_start)
        return refused is None, count, total

    def reserve_many(self, wanted: Sequence[Reservation]) -> int | None:
        """Reserve several counters at once, all or nothing.

        Returns ``None`` when every counter took the call, else the index of the first one that
        refused (and nothing was counted anywhere).
        """
        c = self.t["counters"]
        insert = postgresql_dialect.insert if not self.is_sqlite else sqlite_dialect.insert
        try:
            with self.engine.begin() as conn:
                for i, r in enumerate(wanted):
                    conn.execute(
                        insert(c)
                        .values(
                            name=r.name, key=r.key, window_start=r.window_start, count=0, total=0.0
                        )
                        .on_conflict_do_nothing()
                    )
                    guarded = [
                        c.c.name == r.name,
                        c.c.key == r.key,
                        c.c.window_start == r.window_start,
                    ]
                    if r.max_count is not None:
                        guarded.append(c.c.count + 1 <= r.max_count)
                    if r.max_total is not None:
                        guarded.append(c.c.total + r.amount <= r.max_total + 1e-9)
                    result = conn.execute(
                        c.update()
                        .where(*guarded)
                        .values(count=c.c.count + 1, total=c.c.total + r.amount)
                    )
                    if result.rowcount != 1:
                        raise _Refused(i)
        except _Refused as refused:
            return refused.index
        except sa.exc.OperationalError as exc:
            raise JournalError(f"store error: {exc.orig}") from exc
        return None

    def release_many(self, held: Sequence[Reservation]) -> None:
        """Give back reservations that :meth:`reserve_many` took, in one transaction: one call
        and its ``amount`` off each counter (a call that failed without effect does not count).

        Never takes a counter below zero (floating-point sums may not cancel exactly)."""
        if not held:
            return
        c = self.t["counters"]
        try:
            with self.engine.begin() as conn:
                for r in held:
                    left = c.c.total - r.amount
                    conn.execute(
                        c.update()
                        .where(
                            c.c.name == r.name,
                            c.c.key == r.key,
                            c.c.window_start == r.window_start,
                            c.c.count > 0,
                        )
                        .values(
                            count=c.c.count - 1,
                            total=sa.case((left < 0, 0.0), else_=left),
                        )
                    )
        except sa.exc.OperationalError as exc:
            raise JournalError(f"store error: {exc.orig}") from exc

    def settle(self, held: Reservation, amount: float) -> None:
        """Replace a reserved amount by the real one (the call stays counted): the total moves
        by the difference, up or down, unconditionally — what was spent was spent."""
        c = self.t["counters"]
        left = c.c.total + (amount - held.amount)
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    c.update()
                    .where(
                        c.c.name == held.name,
                        c.c.key == held.key,
                        c.c.window_start == held.window_start,
                    )
                    .values(total=sa.case((left < 0, 0.0), else_=left))
                )
        except sa.exc.OperationalError as exc:
            raise JournalError(f"store error: {exc.orig}") from exc

    def add(self, name: str, key: str, window_start: int, amount: float) -> None:
        """Add to a counter unconditionally (e.g. dollars already spent)."""
        self.reserve(name, key, window_start, amount=amount, max_count=None, max_total=None)

    def counter(self, name: str, key: str, window_start: int) -> tuple[int, float]:
        c = self.t["counters"]
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(c.c.count, c.c.total).where(
                    c.c.name == name, c.c.key == key, c.c.window_start == window_start
                )
            ).first()
        return (0, 0.0) if row is None else (int(row[0]), float(row[1]))

    # -- controls (kill switch) ------------------------------------------------------------------

    def set_paused(self, agent: str, paused: bool, *, by: str, reason: str = "") -> None:
        self._switches.pop(agent, None)
        ctl = self.t["controls"]
        with self._tx() as conn:
            conn.execute(ctl.delete().where(ctl.c.agent == agent))
            conn.execute(
                ctl.insert().values(
                    agent=agent, paused=paused, reason=reason, changed_by=by, changed_at=time.time()
                )
            )

    def paused(self, agent: str, *, max_age: float = 0.0) -> tuple[bool, str]:
        """Whether the agent's kill switch is on, and why.

        ``max_age`` > 0 accepts a reading of this store that old (seconds) instead of a query:
        the engine allows that for read-only calls, which cannot do harm. Switching in this
        process is seen at once; in another, within ``max_age``.
        """
        if max_age > 0:
            seen = self._switches.get(agent)
            if seen is not None and time.monotonic() - seen[0] <= max_age:
                return seen[1]
        value = self._read_paused(agent)
        self._switches[agent] = (time.monotonic(), value)
        return value

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
        return True, f"paused by {row[2]}: {row[1] or 'no reason given'}"

    def _read_paused_once(self, agent: str) -> Any:
        raw: Any = None
        try:
            raw = self._raw_conn()
            cur = raw.cursor()
            try:
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

    def paused_agents(self) -> list[dict[str, Any]]:
        ctl = self.t["controls"]
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(ctl).where(ctl.c.paused.is_(True))).all()
        return [dict(r._mapping) for r in rows]

    # -- response cache --------------------------------------------------------------------------

    def cache_get(self, key: str, now: float | None = None) -> str | None:
        cache = self.t["cache"]
        now = time.time() if now is None else now
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(cache.c.value).where(cache.c.key == key, cache.c.expires_at > now)
            ).first()
        return None if row is None else str(row[0])

    def cache_set(self, key: str, value: str, ttl: float, now: float | None = None) -> None:
        cache = self.t["cache"]
        now = time.time() if now is None else now
        with self._tx() as conn:
            conn.execute(cache.delete().where(cache.c.key == key))
            conn.execute(cache.insert().values(key=key, value=value, expires_at=now + ttl))

    # -- maintenance -------------------------------------------------------------------------

    def integrity_problems(self) -> list[str] | None:
        """What the database's own consistency check finds wrong (empty: nothing).

        On SQLite that is ``PRAGMA integrity_check``: every page of the file is read, so damage
        the hash chains cannot see (an index, a free page, a table's structure) is named too.
        PostgreSQL has no such check of its own to run (``None``): damage there is reported by
        the server when a damaged page is read (with data checksums on), which the chains'
        reading of every event does.
        """
        if not self.is_sqlite:
            return None
        try:
            with self.engine.connect() as conn:
                rows = conn.exec_driver_sql("PRAGMA integrity_check").all()
        except sa.exc.DBAPIError as exc:
            return [f"the integrity check could not complete: {exc.orig}"]
        found = [str(r[0]) for r in rows]
        return [] if found == ["ok"] else found

    # -- maintenance -------------------------------------------------------------------------

    def drop_all(self) -> None:
        """Remove every tether table (tests use it to reset a PostgreSQL database)."""
        with self._tx() as conn:
            for name in (
                "runs",
                "events",
                "event_batches",
                "run_ledger",
                "blobs",
                "approvals",
                "counters",
                "controls",
                "cache",
                "schema_migrations",
            ):
                conn.execute(sa.text(f"DROP TABLE IF EXISTS {name}"))
