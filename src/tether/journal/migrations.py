"""Numbered schema migrations. Each is applied once, in order, and recorded.

Never edit a released migration: add a new one. Old journals keep loading because every version
of the schema is reachable from every older one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

Migration = Callable[[sa.Connection], None]


def _m001_core(conn: sa.Connection) -> None:
    md = sa.MetaData()
    sa.Table(
        "runs",
        md,
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("agent", sa.String(200), nullable=False, index=True),
        sa.Column("agent_version", sa.String(50), nullable=False),
        sa.Column("agent_ref", sa.String(500)),
        sa.Column("status", sa.String(32), nullable=False, index=True),
        sa.Column("input", sa.Text, nullable=False),
        sa.Column("output", sa.Text),
        sa.Column("reason", sa.Text),
        sa.Column("model", sa.String(200)),
        sa.Column("steps", sa.Integer, nullable=False, default=0),
        sa.Column("input_tokens", sa.Integer, nullable=False, default=0),
        sa.Column("output_tokens", sa.Integer, nullable=False, default=0),
        sa.Column("cost_usd", sa.Float, nullable=False, default=0.0),
        sa.Column("parent_run_id", sa.String(64)),
        sa.Column("fork_step", sa.Integer),
        sa.Column("requested_by", sa.String(200)),
        sa.Column("created_at", sa.Float, nullable=False, index=True),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    sa.Table(
        "events",
        md,
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("type", sa.String(40), nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("ts", sa.Float, nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        # the previous event's hash is not stored: it is the hash of the row before (seq - 1)
        sa.Column("hash", sa.String(64), nullable=False),
        sqlite_with_rowid=False,  # one B-tree clustered by (run_id, seq): one page per append
    )
    sa.Table(
        "blobs",
        md,
        sa.Column("hash", sa.String(64), primary_key=True),
        sa.Column("body", sa.Text, nullable=False),
    )
    sa.Table(
        "approvals",
        md,
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("run_id", sa.String(64), nullable=False, index=True),
        sa.Column("agent", sa.String(200), nullable=False),
        sa.Column("call_id", sa.String(200), nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("tool", sa.String(200), nullable=False),
        sa.Column("args", sa.Text, nullable=False),
        sa.Column("args_hash", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("rule", sa.String(200), nullable=False),
        sa.Column("status", sa.String(20), nullable=False, index=True),
        sa.Column("requested_by", sa.String(200)),
        sa.Column("decided_by", sa.String(200)),
        sa.Column("decided_at", sa.Float),
        sa.Column("edited_args", sa.Text),
        sa.Column("decision_reason", sa.Text),
        sa.Column("consumed_at", sa.Float),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.UniqueConstraint("run_id", "call_id", name="uq_approval_call"),
    )
    sa.Table(
        "counters",
        md,
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("key", sa.String(500), primary_key=True),
        sa.Column("window_start", sa.BigInteger, primary_key=True),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("total", sa.Float, nullable=False),
    )
    sa.Table(
        "controls",
        md,
        sa.Column("agent", sa.String(200), primary_key=True),
        sa.Column("paused", sa.Boolean, nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("changed_by", sa.String(200)),
        sa.Column("changed_at", sa.Float, nullable=False),
    )
    sa.Table(
        "cache",
        md,
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
    )
    md.create_all(conn)


_MOVE_CHUNK = 1000  # events per batch when moving a version-1 journal


def _m002_event_batches(conn: sa.Connection) -> None:
    """The journal as one row per flushed batch of events instead of one row per event.

    A flush writes one row (an append at the end of the table, plus one small index entry)
    where it wrote a clustered row per event at the run's place in the key order; the events,
    their hash chain and its definition are unchanged. Events already stored move over, in
    batches of up to ``_MOVE_CHUNK`` per run, and the old table is dropped.
    """
    from tether.journal.batches import encode_batch
    from tether.journal.events import Event

    md = sa.MetaData()
    batches = sa.Table(
        "event_batches",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("first_seq", sa.Integer, nullable=False),
        sa.Column("last_seq", sa.Integer, nullable=False),
        sa.Column("events", sa.Text, nullable=False),
        # two writers continuing a run from the same point collide here
        sa.UniqueConstraint("run_id", "first_seq", name="uq_event_batch_start"),
    )
    md.create_all(conn)
    old = sa.Table("events", sa.MetaData(), autoload_with=conn)
    run_ids = [r[0] for r in conn.execute(sa.select(old.c.run_id).distinct())]
    for run_id in run_ids:  # one run at a time, so memory is bounded by the longest run
        rows = conn.execute(
            sa.select(old.c.seq, old.c.type, old.c.step, old.c.ts, old.c.payload, old.c.hash)
            .where(old.c.run_id == run_id)
            .order_by(old.c.seq)
        ).all()
        for k in range(0, len(rows), _MOVE_CHUNK):
            chunk = [
                Event(run_id, int(r[0]), r[1], int(r[2]), float(r[3]), r[4], "", r[5])
                for r in rows[k : k + _MOVE_CHUNK]
            ]
            conn.execute(
                batches.insert().values(
                    run_id=run_id,
                    first_seq=chunk[0].seq,
                    last_seq=chunk[-1].seq,
                    events=encode_batch(chunk),
                )
            )
    old.drop(conn)


def _m003_events_table(conn: sa.Connection) -> None:
    """The journal as one row per event again, queryable with SQL, anchored and ledgered.

    ``events`` holds each event's exact hashed text (``payload_text``) and the same payload as
    JSON for queries (``payload``: JSONB on PostgreSQL; NULL where the database cannot hold the
    text as JSON). The run row anchors its chain (``head_hash``, ``event_count``, ``keyed``) and
    ``run_ledger`` chains the runs themselves, so a deleted run is noticed. Stored batches are
    moved over run by run (their hashes unchanged: the chain's definition is the same) and
    ``event_batches`` is dropped.
    """
    from tether.journal.batches import decode_batch
    from tether.journal.chain import GENESIS
    from tether.journal.ledger import ledger_hash
    from tether.journal.rows import event_tuples, insert_events_sql

    md = sa.MetaData()
    payload_type: sa.types.TypeEngine[Any] = (
        postgresql.JSONB() if conn.dialect.name == "postgresql" else sa.Text()
    )
    events = sa.Table(
        "events",
        md,
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("type", sa.String(40), nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("ts", sa.Float, nullable=False),
        sa.Column("payload", payload_type),
        sa.Column("payload_text", sa.Text, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sqlite_with_rowid=False,
    )
    ledger = sa.Table(
        "run_ledger",
        md,
        sa.Column("position", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("run_id", sa.String(64), nullable=False, unique=True),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    md.create_all(conn)
    sa.Index("ix_events_type", events.c.type).create(conn)
    for column in ("head_hash VARCHAR(64)", "event_count INTEGER", "keyed BOOLEAN"):
        conn.execute(sa.text(f"ALTER TABLE runs ADD COLUMN {column}"))
    batches = sa.Table("event_batches", sa.MetaData(), autoload_with=conn)
    runs = sa.Table("runs", sa.MetaData(), autoload_with=conn)
    run_ids = [
        str(r[0]) for r in conn.execute(sa.select(runs.c.id).order_by(runs.c.created_at, runs.c.id))
    ]
    prev_entry = GENESIS
    for position, run_id in enumerate(run_ids, start=1):
        rows = conn.execute(
            sa.select(batches.c.first_seq, batches.c.last_seq, batches.c.events)
            .where(batches.c.run_id == run_id)
            .order_by(batches.c.first_seq)
        ).all()
        head, count = GENESIS, 0
        for first_seq, last_seq, body in rows:
            moved = decode_batch(run_id, int(first_seq), int(last_seq), str(body), head)
            if moved:
                conn.exec_driver_sql(
                    insert_events_sql(conn.dialect.name), event_tuples(moved, conn.dialect.name)
                )
                head, count = moved[-1].hash, moved[-1].seq
        conn.execute(
            runs.update()
            .where(runs.c.id == run_id)
            .values(head_hash=head, event_count=count, keyed=False)
        )
        prev_entry = ledger_hash(prev_entry, position, run_id)
        conn.execute(ledger.insert().values(position=position, run_id=run_id, hash=prev_entry))
    batches.drop(conn)


def _m004_leases(conn: sa.Connection) -> None:
    """Each run's lease: which process drives it (``lease_owner``), until when unless renewed
    (``lease_expires``, store clock seconds), and the fencing token (``lease_token``) every
    write of the driver is checked against. Taking the lease over increases the token, so the
    previous holder's writes no longer land (see :mod:`tether.journal.leases`)."""
    for column in (
        "lease_owner VARCHAR(200)",
        "lease_expires FLOAT",
        "lease_token INTEGER NOT NULL DEFAULT 0",
    ):
        conn.execute(sa.text(f"ALTER TABLE runs ADD COLUMN {column}"))


def _m005_approval_positions(conn: sa.Connection) -> None:
    """An approval binds to its call by position: the run, the step and the call's index in that
    step's turn (``position``), no longer by the provider's call id, which providers may reuse.
    One approval per call position. SQLite cannot drop a constraint, so there the table is
    rebuilt (rows copied over, older rows with no position)."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("ALTER TABLE approvals DROP CONSTRAINT uq_approval_call"))
        conn.execute(sa.text("ALTER TABLE approvals ADD COLUMN position INTEGER"))
    else:
        old = sa.Table("approvals", sa.MetaData(), autoload_with=conn)
        names = [c.name for c in old.columns]
        for index in old.indexes:
            conn.execute(sa.text(f"DROP INDEX IF EXISTS {index.name}"))
        conn.execute(sa.text("ALTER TABLE approvals RENAME TO approvals_v4"))
        new = sa.Table(
            "approvals",
            sa.MetaData(),
            *[c._copy() for c in old.columns],
            sa.Column("position", sa.Integer),
        )
        for c in new.columns:
            c.unique = False
        new.create(conn)
        listed = ",".join(names)
        conn.execute(sa.text(f"INSERT INTO approvals ({listed}) SELECT {listed} FROM approvals_v4"))
        conn.execute(sa.text("DROP TABLE approvals_v4"))
        conn.execute(sa.text("CREATE INDEX ix_approvals_run_id ON approvals (run_id)"))
        conn.execute(sa.text("CREATE INDEX ix_approvals_status ON approvals (status)"))
    conn.execute(
        sa.text(
            "CREATE UNIQUE INDEX ux_approvals_call_position ON approvals (run_id, step, position)"
        )
    )


MIGRATIONS: list[tuple[int, str, Migration]] = [
    (1, "runs, events, blobs, approvals, counters, controls, cache", _m001_core),
    (2, "the journal in batches: one row per flush", _m002_event_batches),
    (3, "one row per event, anchored in the run row; the run ledger", _m003_events_table),
    (4, "run leases: one driver per run", _m004_leases),
    (5, "approvals bound to the call's position in its step", _m005_approval_positions),
]


_VERSIONS = sa.Table(
    "schema_migrations",
    sa.MetaData(),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("applied_at", sa.Float, nullable=False),
)
_PG_LOCK = 7410031  # the advisory lock that serialises migrators of one PostgreSQL database


def _lock(conn: sa.Connection) -> None:
    """Hold the migration lock until the transaction ends.

    Everything a migrator reads or creates (the version table included) is read or created under
    it, so processes opening a brand-new database at once take turns instead of racing to create
    the same table. On PostgreSQL that is a transaction-scoped advisory lock; on SQLite every write
    transaction of the store is ``BEGIN IMMEDIATE`` already, which holds the file's write lock.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text(f"SELECT pg_advisory_xact_lock({_PG_LOCK})"))


def migrate(engine: sa.Engine) -> int:
    """Apply pending migrations; return the schema version now in force.

    Safe to call from any number of processes at once: each step runs under the migration lock
    (see ``_lock``) and re-reads what is applied before applying anything.
    """
    with engine.begin() as conn:
        _lock(conn)
        _VERSIONS.create(conn, checkfirst=True)
        done = {int(r[0]) for r in conn.execute(sa.select(_VERSIONS.c.version))}
    for version, name, apply in MIGRATIONS:
        if version in done:
            continue
        with engine.begin() as conn:
            _lock(conn)
            applied = conn.execute(
                sa.select(_VERSIONS.c.version).where(_VERSIONS.c.version == version)
            ).first()
            if applied is None:
                apply(conn)
                conn.execute(
                    _VERSIONS.insert().values(version=version, name=name, applied_at=time.time())
                )
    return MIGRATIONS[-1][0]


def schema_version(conn: sa.Connection) -> int | None:
    """The newest migration applied to a store, without changing anything (``None``: the
    database holds no tether schema at all). Read-only openers check it instead of migrating."""
    if not sa.inspect(conn).has_table("schema_migrations"):
        return None
    value = conn.execute(sa.select(sa.func.max(_VERSIONS.c.version))).scalar()
    return 0 if value is None else int(value)
