"""The retail store in a real transactional database (SQLAlchemy 2: SQLite or PostgreSQL).

Three tables -- products, users, orders -- hold each record as a JSON document keyed by its id,
plus a few plain columns used for look-ups (user email / name / zip, order owner and status).
Writes are read-modify-write inside one transaction: rows are read ``FOR UPDATE`` on PostgreSQL,
and SQLite transactions that write start with ``BEGIN IMMEDIATE``, so two concurrent changes of
the same order cannot both succeed on a stale copy.

    store = Store.fresh()                      # in-memory SQLite copy of db.json (fast)
    store = Store.open("postgresql+psycopg://postgres@127.0.0.1:5432/test", prefix="t1_")
    with store.transaction() as tx:
        order = tx.get("orders", "#W2378156", for_update=True)
        ...
        tx.put("orders", order)
    store.dump()        # {"products": {...}, "users": {...}, "orders": {...}}

Table names get an optional ``prefix`` so several stores can share one database safely.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    func,
    select,
)
from sqlalchemy.pool import StaticPool

from examples.support_desk.data import TABLES, Database, Record, load_db

_KEYS = {"products": "product_id", "users": "user_id", "orders": "order_id"}


def _dumps(record: Mapping[str, Any]) -> str:
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False)


def _user_columns(user: Mapping[str, Any]) -> dict[str, Any]:
    name = user.get("name") or {}
    address = user.get("address") or {}
    return {
        "email": user.get("email"),
        "first_name": name.get("first_name"),
        "last_name": name.get("last_name"),
        "zip": address.get("zip"),
    }


def _order_columns(order: Mapping[str, Any]) -> dict[str, Any]:
    return {"user_id": order.get("user_id"), "status": order.get("status")}


def _row(table: str, record: Mapping[str, Any]) -> dict[str, Any]:
    """The column values of one record."""
    row: dict[str, Any] = {"id": record[_KEYS[table]], "doc": _dumps(record)}
    if table == "users":
        row.update(_user_columns(record))
    elif table == "orders":
        row.update(_order_columns(record))
    return row


@lru_cache(maxsize=1)
def _initial_rows() -> dict[str, tuple[dict[str, Any], ...]]:
    """The rows of db.json, serialised once per process (the fast fresh-copy path)."""
    db = load_db()
    return {t: tuple(_row(t, rec) for rec in db[t].values()) for t in TABLES}


@lru_cache(maxsize=1)
def initial_docs() -> dict[str, dict[str, str]]:
    """The serialised records of db.json, as :meth:`Store.dump_docs` returns them."""
    return {t: {row["id"]: row["doc"] for row in rows} for t, rows in _initial_rows().items()}


def _tables(metadata: MetaData, prefix: str) -> dict[str, Table]:
    products = Table(
        f"{prefix}products",
        metadata,
        Column("id", String(64), primary_key=True),
        Column("doc", Text, nullable=False),
    )
    users = Table(
        f"{prefix}users",
        metadata,
        Column("id", String(128), primary_key=True),
        Column("email", String(255), index=True),
        Column("first_name", String(128)),
        Column("last_name", String(128)),
        Column("zip", String(32)),
        Column("doc", Text, nullable=False),
    )
    orders = Table(
        f"{prefix}orders",
        metadata,
        Column("id", String(64), primary_key=True),
        Column("user_id", String(128), index=True),
        Column("status", String(64)),
        Column("doc", Text, nullable=False),
    )
    applied = Table(
        f"{prefix}applied_calls",
        metadata,
        Column("id", String(255), primary_key=True),
        Column("doc", Text, nullable=False),
    )
    return {"products": products, "users": users, "orders": orders, "applied_calls": applied}


class Tx:
    """One open transaction on a :class:`Store`. Get it from :meth:`Store.transaction`."""

    def __init__(self, conn: Connection, tables: dict[str, Table], lock_rows: bool) -> None:
        self._conn = conn
        self._tables = tables
        self._lock_rows = lock_rows

    def get(self, table: str, key: str, *, for_update: bool = False) -> Record | None:
        """The record ``key`` of ``table`` (a fresh dict), or ``None``.

        ``for_update`` locks the row until the transaction ends (PostgreSQL).
        """
        t = self._tables[table]
        stmt = select(t.c.doc).where(t.c.id == key)
        if for_update and self._lock_rows:
            stmt = stmt.with_for_update()
        doc = self._conn.execute(stmt).scalar_one_or_none()
        if doc is None:
            return None
        record: Record = json.loads(doc)
        return record

    def put(self, table: str, record: Mapping[str, Any]) -> None:
        """Replace (or insert) a record; its key field names the row."""
        t = self._tables[table]
        row = _row(table, record)
        updated = self._conn.execute(t.update().where(t.c.id == row["id"]).values(**row))
        if updated.rowcount == 0:
            self._conn.execute(t.insert().values(**row))

    def user_id_by_email(self, email: str) -> str | None:
        """The id of the user with exactly this email, or ``None``."""
        t = self._tables["users"]
        stmt = select(t.c.id).where(t.c.email == email).order_by(t.c.id).limit(1)
        found: str | None = self._conn.execute(stmt).scalar_one_or_none()
        return found

    def user_id_by_name_zip(self, first_name: str, last_name: str, zip_code: str) -> str | None:
        """The id of the user with this first name, last name and address zip code, or ``None``.

        Names compare case-insensitively, the zip code exactly.
        """
        t = self._tables["users"]
        stmt = (
            select(t.c.id)
            .where(func.lower(t.c.first_name) == first_name.lower())
            .where(func.lower(t.c.last_name) == last_name.lower())
            .where(t.c.zip == zip_code)
            .order_by(t.c.id)
            .limit(1)
        )
        found: str | None = self._conn.execute(stmt).scalar_one_or_none()
        return found

    def order_ids_of(self, user_id: str) -> list[str]:
        """Ids of the orders placed by ``user_id``."""
        t = self._tables["orders"]
        stmt = select(t.c.id).where(t.c.user_id == user_id).order_by(t.c.id)
        return list(self._conn.execute(stmt).scalars())

    def order_ids_with_status(self, status: str, *, limit: int = 50) -> list[str]:
        """Ids of up to ``limit`` orders in ``status``, in id order."""
        t = self._tables["orders"]
        stmt = select(t.c.id).where(t.c.status == status).order_by(t.c.id).limit(limit)
        return list(self._conn.execute(stmt).scalars())

    def recall(self, idempotency_key: str) -> Any:
        """The result stored by :meth:`remember` for this key, or ``None``."""
        t = self._tables["applied_calls"]
        doc = self._conn.execute(
            select(t.c.doc).where(t.c.id == idempotency_key)
        ).scalar_one_or_none()
        return None if doc is None else json.loads(doc)

    def remember(self, idempotency_key: str, result: Any) -> None:
        """Store the result of a write under its idempotency key (same transaction)."""
        t = self._tables["applied_calls"]
        self._conn.execute(t.insert().values(id=idempotency_key, doc=json.dumps(result)))

    def docs(self, table: str) -> dict[str, str]:
        """Every record of ``table`` as its stored JSON text, keyed by id."""
        t = self._tables[table]
        rows = self._conn.execute(select(t.c.id, t.c.doc))
        return {key: doc for key, doc in rows}

    def all(self, table: str) -> dict[str, Record]:
        """Every record of ``table``, keyed by id."""
        t = self._tables[table]
        rows = self._conn.execute(select(t.c.id, t.c.doc).order_by(t.c.id))
        return {key: json.loads(doc) for key, doc in rows}


class Store:
    """The retail store. Build with :meth:`fresh` (in-memory) or :meth:`open` (any URL).

    ``reference_compat`` (default on) makes the tools reproduce two quirks of the benchmark's
    reference tools, so that replayed tasks give exactly the expected outcome:

    * price differences of item modifications are recorded as the plain float sum
      (e.g. ``10.840000000000003``), not rounded to cents;
    * when several items of one order are modified at once, every replaced item takes the
      price and options of the *last* new item (its id is still the right one).

    Turn it off to get the behaviour a real shop wants (rounded amounts, each item its own
    variant).
    """

    def __init__(self, engine: Engine, *, prefix: str = "", reference_compat: bool = True) -> None:
        self.engine = engine
        self.prefix = prefix
        self.reference_compat = reference_compat
        self.metadata = MetaData()
        self.tables = _tables(self.metadata, prefix)
        self.is_sqlite = engine.dialect.name == "sqlite"
        # SQLite: one lock per store serialises the transactions of threads in this process
        # (an in-memory copy has a single shared connection). PostgreSQL relies on row locks.
        self._lock: AbstractContextManager[Any] = (
            threading.RLock() if self.is_sqlite else nullcontext()
        )
        self._raw: sqlite3.Connection | None = None  # the connection of an in-memory copy

    # ---------------------------------------------------------------- construction

    @classmethod
    def fresh(cls, db: Database | None = None, *, reference_compat: bool = True) -> Store:
        """A new in-memory SQLite store holding a copy of ``db`` (default: db.json).

        The default copy is made with SQLite's backup API from a template database built once
        per process, so a fresh store costs a few milliseconds.
        """
        if db is not None:
            store = cls(_sqlite_engine("sqlite://"), reference_compat=reference_compat)
            store.create()
            store.load(db)
            return store
        conn = sqlite3.connect(":memory:", check_same_thread=False)
        with _TEMPLATE_LOCK:
            _template().backup(conn)
        store = cls(_sqlite_engine("sqlite://", conn), reference_compat=reference_compat)
        store._raw = conn
        return store

    def reset(self) -> None:
        """Put back the content of db.json (fast for stores made by :meth:`fresh`)."""
        if self._raw is None:
            self.load()
            return
        with self._lock, _TEMPLATE_LOCK:
            _template().backup(self._raw)

    @classmethod
    def open(
        cls, url: str, *, prefix: str = "", reset: bool = False, reference_compat: bool = True
    ) -> Store:
        """A store at ``url`` (``sqlite:///path.db``, ``postgresql+psycopg://...``).

        Missing tables are created and loaded from db.json; existing data is kept unless
        ``reset`` is set, which drops the tables and reloads them.
        """
        engine = _sqlite_engine(url) if url.startswith("sqlite") else create_engine(url)
        store = cls(engine, prefix=prefix, reference_compat=reference_compat)
        if reset:
            store.drop()
        store.create()
        if reset or store.count("orders") == 0:
            store.load()
        return store

    def create(self) -> None:
        """Create the tables if missing."""
        self.metadata.create_all(self.engine)

    def drop(self) -> None:
        """Drop the tables (all data is lost)."""
        self.metadata.drop_all(self.engine)

    def load(self, db: Database | None = None) -> None:
        """Replace every record with those of ``db`` (default: db.json), in one transaction."""
        if db is None:
            rows = _initial_rows()
        else:
            rows = {t: tuple(_row(t, rec) for rec in db.get(t, {}).values()) for t in TABLES}
        with self._begin() as conn:
            conn.execute(self.tables["applied_calls"].delete())
            for name in TABLES:
                table = self.tables[name]
                conn.execute(table.delete())
                if rows[name]:
                    conn.execute(table.insert(), list(rows[name]))

    def close(self) -> None:
        """Release the database connections."""
        self.engine.dispose()

    # ---------------------------------------------------------------- access

    @contextmanager
    def _begin(self, write: bool = True, commit: bool = True) -> Iterator[Connection]:
        with self._lock, self.engine.connect() as conn:
            conn.info["tether_immediate"] = write
            trans = conn.begin()
            try:
                yield conn
            except BaseException:
                trans.rollback()
                raise
            if commit:
                trans.commit()
            else:
                trans.rollback()

    @contextmanager
    def transaction(self, *, write: bool = True, commit: bool = True) -> Iterator[Tx]:
        """A transaction: committed when the block ends, rolled back if it raises.

        ``write=False`` marks a read-only transaction (no SQLite write lock); ``commit=False``
        rolls back even on success (a dry run).
        """
        with self._begin(write, commit) as conn:
            yield Tx(conn, self.tables, lock_rows=not self.is_sqlite)

    def get(self, table: str, key: str) -> Record | None:
        """Read one record outside any write transaction."""
        with self.transaction(write=False) as tx:
            return tx.get(table, key)

    def count(self, table: str) -> int:
        """Number of records in ``table``."""
        t = self.tables[table]
        with self._begin(write=False) as conn:
            return int(conn.execute(select(func.count()).select_from(t)).scalar_one())

    def dump(self) -> Database:
        """Every record, shaped like db.json: ``{"products": {id: record}, "users": ..., ...}``."""
        with self.transaction(write=False) as tx:
            return {name: tx.all(name) for name in TABLES}

    def dump_docs(self) -> dict[str, dict[str, str]]:
        """Like :meth:`dump` but unparsed (JSON text per record): a cheap way to spot changes.

        Records never written since loading db.json equal :func:`initial_docs` text exactly.
        """
        with self.transaction(write=False) as tx:
            return {name: tx.docs(name) for name in TABLES}


_TEMPLATE_LOCK = threading.Lock()


@lru_cache(maxsize=1)
def _template() -> sqlite3.Connection:
    """An in-memory SQLite database holding db.json, copied by :meth:`Store.fresh`."""
    conn = sqlite3.connect(":memory:", check_same_thread=False)
    store = Store(_sqlite_engine("sqlite://", conn))
    store.create()
    store.load()
    return conn


def _sqlite_engine(url: str, conn: sqlite3.Connection | None = None) -> Engine:
    """An SQLite engine whose write transactions start with ``BEGIN IMMEDIATE``.

    ``conn``, if given, is the one connection the engine uses (an in-memory copy).
    """
    if conn is not None:
        engine = create_engine(url, poolclass=StaticPool, creator=lambda: conn)
    elif url in ("sqlite://", "sqlite:///:memory:"):
        engine = create_engine(url, poolclass=StaticPool, connect_args={"check_same_thread": False})
    else:
        engine = create_engine(url, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # let the "begin" hook below emit BEGIN itself

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        immediate = conn.info.get("tether_immediate", True)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine
