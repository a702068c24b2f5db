"""Numbered schema migrations. Each is applied once, in order, and recorded.

Never edit a released migration: add a new one. Old journals keep loading because every version
of the schema is reachable from every older one.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import sqlalchemy as sa

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


MIGRATIONS: list[tuple[int, str, Migration]] = [
    (1, "runs, events, blobs, approvals, counters, controls, cache", _m001_core),
]


def migrate(engine: sa.Engine) -> int:
    """Apply pending migrations; return the schema version now in force."""
    md = sa.MetaData()
    versions = sa.Table(
        "schema_migrations",
        md,
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("applied_at", sa.Float, nullable=False),
    )
    with engine.begin() as conn:
        md.create_all(conn, checkfirst=True)
    current = 0
    for version, name, apply in MIGRATIONS:
        with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                # serialise concurrent migrators on PostgreSQL
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(7410031)"))
            done = conn.execute(
                sa.select(versions.c.version).where(versions.c.version == version)
            ).first()
            if done is None:
                apply(conn)
                conn.execute(
                    versions.insert().values(version=version, name=name, applied_at=time.time())
                )
        current = version
    return current
