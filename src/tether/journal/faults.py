"""Which store errors are transient, which are collisions, and how long the store retries.

A transient error is one that a new attempt on a fresh connection can get past: the database
server dropped or terminated the connection, is restarting, or cannot take the connection yet;
a PostgreSQL transaction lost a serialisation race; a SQLite file stayed locked by another
process past the busy timeout. Errors are classified by type and error code (SQLAlchemy's own
disconnect detection, PostgreSQL's SQLSTATE, SQLite's result code), never by their message.
A collision (:func:`unique_violation`) is a write that met a key another write stored first.
"""

from __future__ import annotations

import random
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

SQLITE_BUSY, SQLITE_LOCKED = 5, 6  # the primary result codes of a locked SQLite database
# SQLite's extended result codes of a primary key or a unique index already holding a value
SQLITE_CONSTRAINT_PRIMARYKEY, SQLITE_CONSTRAINT_UNIQUE = 1555, 2067
PG_UNIQUE_VIOLATION = "23505"  # PostgreSQL's SQLSTATE of the same

# PostgreSQL SQLSTATEs worth another attempt besides class 08 (connection exception):
# administrator or crash shutdown, cannot connect now, too many connections,
# serialisation failure, deadlock detected
_PG_TRANSIENT = frozenset({"57P01", "57P02", "57P03", "53300", "40001", "40P01"})


def is_transient(exc: BaseException, dialect: sa.Dialect, connection: Any = None) -> bool:
    """Whether ``exc`` (raised by the DBAPI or by SQLAlchemy) is worth retrying.

    ``connection``: the DBAPI connection the error came from, when known; a connection the
    driver reports closed or broken always makes the error transient.
    """
    if isinstance(exc, sa.exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        if exc.orig is None:
            return False
        exc = exc.orig
    if isinstance(exc, sqlite3.OperationalError):
        return (exc.sqlite_errorcode & 0xFF) in (SQLITE_BUSY, SQLITE_LOCKED)
    if dialect.name != "postgresql":
        return False
    dbapi = dialect.loaded_dbapi
    if not isinstance(exc, dbapi.Error):
        return False
    if connection is not None and dialect.is_disconnect(exc, connection, None):
        return True
    if not isinstance(exc, dbapi.OperationalError):
        return False
    state = getattr(exc, "sqlstate", None)
    # no SQLSTATE: the driver lost the server (closed socket, refused connection)
    return state is None or state.startswith("08") or state in _PG_TRANSIENT


def unique_violation(exc: BaseException, dialect: sa.Dialect) -> str | None:
    """The table whose primary key or unique index ``exc`` collided with, if ``exc`` (raised by
    the DBAPI or by SQLAlchemy) is such a collision: ``None`` when it is not one, ``""`` when
    it is one but the table is not named.

    A collision is told by the exception's class and error code (SQLite's extended result
    code, PostgreSQL's SQLSTATE); the table alone is then read from PostgreSQL's diagnostics,
    or from SQLite's message, which names no table in any other way.
    """
    if isinstance(exc, sa.exc.DBAPIError):
        if exc.orig is None:
            return None
        exc = exc.orig
    if isinstance(exc, sqlite3.IntegrityError):
        if exc.sqlite_errorcode not in (SQLITE_CONSTRAINT_PRIMARYKEY, SQLITE_CONSTRAINT_UNIQUE):
            return None
        named = re.search(r":\s*(\w+)\.", str(exc))  # "UNIQUE constraint failed: runs.id"
        return named.group(1) if named else ""
    if dialect.name != "postgresql":
        return None
    dbapi = dialect.loaded_dbapi
    if not isinstance(exc, dbapi.IntegrityError):
        return None
    if getattr(exc, "sqlstate", None) != PG_UNIQUE_VIOLATION:
        return None
    diag = getattr(exc, "diag", None)
    return str(getattr(diag, "table_name", None) or "")


@dataclass(frozen=True, slots=True)
class StoreRetry:
    """A bounded retry with exponential backoff: ``attempts`` tries in all, waiting
    ``first_delay`` after the first failure, doubling up to ``max_delay`` (each wait jittered
    down by up to half, so processes that failed together do not retry together).

    The default rides out a dropped connection or a server restart of a few seconds (at most
    about 5 s of waiting in all) and then gives up, so a run never hangs on a store that is gone.
    """

    attempts: int = 8
    first_delay: float = 0.05
    max_delay: float = 2.0

    def delays(self) -> Iterator[float]:
        """The waits between attempts (``attempts - 1`` of them)."""
        delay = self.first_delay
        for _ in range(self.attempts - 1):
            yield delay * random.uniform(0.5, 1.0)
            delay = min(delay * 2, self.max_delay)


NO_RETRY = StoreRetry(attempts=1)
