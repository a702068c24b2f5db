"""Store URLs, and the SQLAlchemy engine a store opens on one.

A store is a SQLite file (write-ahead logging, the default) or a PostgreSQL database. On SQLite
every transaction of a writable store is ``BEGIN IMMEDIATE``, so concurrent processes serialise
cleanly; a read-only store opens the file with SQLite's ``mode=ro`` (or a read-only session on
PostgreSQL), so nothing can be created or written.
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa

from tether.errors import UsageError
from tether.journal.faults import SQLITE_BUSY, SQLITE_LOCKED

DEFAULT_DB = "tether.db"


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


def shown_url(url: str) -> str:
    """A store URL as it may be shown: any password replaced by ``***``."""
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


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


def open_engine(url: str, *, echo: bool, read_only: bool, busy_timeout: float) -> sa.Engine:
    """The engine of the store at ``url`` (as :func:`normalise_url` gives it).

    ``read_only``: every connection refuses writes. ``busy_timeout``: on SQLite, how long a
    statement waits for another process's lock.
    """
    kwargs: dict[str, Any] = {"echo": echo}
    engine_url = url
    is_sqlite = url.startswith("sqlite")
    if is_sqlite:
        kwargs["connect_args"] = {"timeout": busy_timeout, "check_same_thread": False}
        if url in ("sqlite://", "sqlite:///:memory:"):
            kwargs["poolclass"] = sa.pool.StaticPool
        elif read_only:
            engine_url = _read_only_sqlite_url(url)
    else:
        kwargs["pool_pre_ping"] = True  # a pooled connection the server dropped is replaced
    try:
        engine = sa.create_engine(engine_url, **kwargs)
    except (sa.exc.ArgumentError, ImportError, ValueError) as exc:
        # ValueError: a URL that does not parse (a port that is not a number, a stray [)
        raise UsageError(f"cannot open store {shown_url(url)}: {exc}") from exc
    if is_sqlite:
        _setup_sqlite(engine, busy_timeout, read_only)
    elif read_only:
        _setup_read_only_postgresql(engine)
    return engine


def _setup_sqlite(engine: sa.Engine, busy_timeout: float, read_only: bool) -> None:
    @sa.event.listens_for(engine, "connect")
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

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql(begin)


def _setup_read_only_postgresql(engine: sa.Engine) -> None:
    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
        cur.close()
        dbapi_conn.commit()
