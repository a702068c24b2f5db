"""Shared fixtures: stores on SQLite and on the real PostgreSQL server."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tether.journal.store import Store

PG_URL = os.environ.get("TETHER_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
ROOT = Path(__file__).resolve().parents[1]


def tether(
    db: Path | str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real `tether` CLI in a child process against the store ``db`` (a SQLite file or
    a PostgreSQL URL); ``env`` adds to the child's environment."""
    env = {
        **os.environ,
        "TETHER_DB": str(db),
        "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}",  # these sources, installed or not
        "COLUMNS": "200",
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "tether.cli.app", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def stored_event_types(db: Path, run_id: str) -> dict[int, str]:
    """Each stored event's type by sequence number, read with plain SQL from the events table."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT seq, type FROM events WHERE run_id = ?", (run_id,)).fetchall()
    return {int(seq): str(type_) for seq, type_ in rows}


def edit_stored_payload(db: Path, run_id: str, seq: int, edit: Callable[[str], str]) -> bool:
    """Rewrite one stored event's payload (its hashed text and its JSON column) with plain SQL,
    as tampering or a damaged disk would (the hash stays as it was). Returns whether the
    payload changed."""
    with sqlite3.connect(db) as conn:
        (text,) = conn.execute(
            "SELECT payload_text FROM events WHERE run_id = ? AND seq = ?", (run_id, seq)
        ).fetchone()
        edited = edit(text)
        conn.execute(
            "UPDATE events SET payload_text = ?, payload = ? WHERE run_id = ? AND seq = ?",
            (edited, edited, run_id, seq),
        )
    return bool(edited != text)


def pg_available() -> bool:
    try:
        engine = sa.create_engine(PG_URL)
        with engine.connect():
            pass
        engine.dispose()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL schema for this test session (CI starts the server)."""
    if not pg_available():
        pytest.fail(f"PostgreSQL is not reachable at {PG_URL}; start it (see .ci/run)")
    schema = f"tether_test_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(PG_URL)
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
    engine.dispose()


_created_schemas: list[str] = []


def fresh_pg_url(base: str) -> str:
    """A URL for a brand-new schema (for tests that need an empty store)."""
    schema = f"tether_t_{uuid.uuid4().hex[:10]}"
    _created_schemas.append(schema)
    engine = sa.create_engine(PG_URL)
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    engine.dispose()
    return f"{PG_URL}?options=-csearch_path%3D{schema}"


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test runs against a SQLite file and against PostgreSQL."""
    if request.param == "sqlite":
        return str(tmp_path / "tether.db")
    return fresh_pg_url(request.getfixturevalue("pg_url"))


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = Store(store_url)
    yield s
    s.close()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    s = Store(str(tmp_path / "tether.db"))
    yield s
    s.close()


@pytest.fixture(scope="session", autouse=True)
def _drop_test_schemas() -> Iterator[None]:
    yield
    if not _created_schemas:
        return
    engine = sa.create_engine(PG_URL)
    with engine.begin() as conn:
        for name in _created_schemas:
            conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {name} CASCADE"))
    engine.dispose()


@pytest.fixture(scope="session", autouse=True)
def _model_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Local model servers of this session live in a directory of their own, and end with it.

    Child processes inherit the variable, so the CLI runs of a test share the session's servers.
    """
    home = tmp_path_factory.mktemp("model_servers")
    previous = os.environ.get("TETHER_MODEL_DIR")
    os.environ["TETHER_MODEL_DIR"] = str(home)
    yield home
    from tether.models.local import stop_all

    stop_all(home)
    if previous is None:
        os.environ.pop("TETHER_MODEL_DIR", None)
    else:
        os.environ["TETHER_MODEL_DIR"] = previous
