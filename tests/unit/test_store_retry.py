"""Transient store errors: how they are recognised, and how the journal's writer retries them."""

from __future__ import annotations

import sqlite3
import time
import uuid
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from tests.conftest import PG_URL, fresh_pg_url
from tests.unit.test_store import _events, _run
from tether.errors import JournalError, StoreUnavailable
from tether.journal import Store, verify_chain
from tether.journal.faults import StoreRetry, is_transient
from tether.journal.rows import event_tuples
from tether.journal.writes import JournalWrite


def _terminate(application_name: str) -> int:
    engine = sa.create_engine(PG_URL)
    try:
        with engine.begin() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = :name AND pid <> pg_backend_pid()"
                ),
                {"name": application_name},
            ).all()
    finally:
        engine.dispose()
    return len(rows)


def test_a_locked_sqlite_file_is_transient_and_other_sqlite_errors_are_not(
    tmp_path: Path,
) -> None:
    dialect = sa.create_engine("sqlite://").dialect
    db = tmp_path / "x.db"
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("CREATE TABLE t (k INTEGER PRIMARY KEY)")
    holder.execute("BEGIN IMMEDIATE")
    other = sqlite3.connect(db, isolation_level=None, timeout=0)
    with pytest.raises(sqlite3.OperationalError) as locked:
        other.execute("BEGIN IMMEDIATE")
    assert is_transient(locked.value, dialect)
    holder.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(sqlite3.IntegrityError) as duplicate:
        holder.execute("INSERT INTO t VALUES (1)")
    assert not is_transient(duplicate.value, dialect)
    with pytest.raises(sqlite3.OperationalError) as no_table:
        holder.execute("SELECT * FROM missing")
    assert not is_transient(no_table.value, dialect)
    holder.close()
    other.close()


def test_a_terminated_postgresql_connection_is_transient_and_a_bad_statement_is_not(
    pg_url: str,
) -> None:
    name = f"tether_probe_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(f"{fresh_pg_url(pg_url)}&application_name={name}")
    dialect = engine.dialect
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))
        assert _terminate(name) == 1
        with pytest.raises(sa.exc.OperationalError) as dropped:
            conn.execute(sa.text("SELECT 1"))
    assert is_transient(dropped.value, dialect)  # as SQLAlchemy raises it
    assert isinstance(dropped.value.orig, psycopg.OperationalError)
    assert is_transient(dropped.value.orig, dialect)  # as the driver raises it
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE t (k INTEGER PRIMARY KEY)"))
        conn.execute(sa.text("INSERT INTO t VALUES (1)"))
    for bad in ("INSERT INTO t VALUES (1)", "SELEC 1", "SELECT 1 / 0"):
        with engine.connect() as conn, pytest.raises(sa.exc.DBAPIError) as refused:
            conn.execute(sa.text(bad))
        assert not is_transient(refused.value, dialect), bad
    engine.dispose()


def test_the_writer_reconnects_after_its_postgresql_connection_is_terminated(
    pg_url: str,
) -> None:
    name = f"tether_writer_{uuid.uuid4().hex[:8]}"
    store = Store(f"{fresh_pg_url(pg_url)}&application_name={name}")
    events = _events("r1", 6)
    store.create_run(_run(), events[:2])
    assert store.paused("a") == (False, "")
    for i in range(2, 6):  # every write and every read of the kill switch finds its line dead
        assert _terminate(name) >= 1
        store.append(events[i : i + 1], {"steps": i + 1, "id": "r1"})
        assert _terminate(name) >= 1
        assert store.paused("a") == (False, "")
    assert store.events("r1") == events  # each event stored once, in order
    assert verify_chain("r1", store.events("r1")) is None
    assert store.get_run("r1").steps == 6
    store.close()


def test_a_retry_reads_back_what_the_failed_attempt_committed(store: Store) -> None:
    """A commit whose reply was lost may have gone through: the retry finds the events stored,
    at their place and with their exact hashes, and writes nothing; anything else stored there is
    another writer's, and refused as before."""
    events = _events("r1", 6)
    store.create_run(_run(), events[:2])
    store.append(events[2:4])
    dialect = "sqlite" if store.is_sqlite else "postgresql"

    def retry(write: JournalWrite) -> JournalError | None:
        prepared = [(write, event_tuples(write.events, dialect), [])]
        return store._write_group_once(prepared, retried=True)[0]

    assert retry(JournalWrite(events[2:4], run_update={"steps": 4, "id": "r1"})) is None
    assert store.events("r1") == events[:4]
    other = _events("r1", 4)  # the same places, other events (other times, so other hashes)
    assert other[2:4] != events[2:4]
    refused = retry(JournalWrite(other[2:4]))
    assert isinstance(refused, JournalError) and "another process appended" in str(refused)
    # a retry of a write that did not go through writes it
    assert retry(JournalWrite(events[4:])) is None
    assert store.events("r1") == events


def test_a_store_down_past_the_budget_raises_then_tries_once_until_it_is_back(
    tmp_path: Path,
) -> None:
    db = tmp_path / "x.db"
    store = Store(str(db), busy_timeout=0.05, retry=StoreRetry(attempts=4, first_delay=0.1))
    events = _events("r1", 3)
    store.create_run(_run(), events[:1])
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match=r"events #2-#2 were not written \(4 attempt") as e:
        store.append(events[1:2])
    assert e.value.attempts == 4
    assert time.monotonic() - started >= 0.1 + 0.1 + 0.2  # backed off (jitter halves at most)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match=r"\(1 attempt"):  # no second wait through it all
        store.append(events[1:2])
    assert time.monotonic() - started < 0.3
    holder.execute("ROLLBACK")
    holder.close()
    store.append(events[1:])  # back: the next write goes through and the budget is whole again
    assert store.events("r1") == events
    store.close()
