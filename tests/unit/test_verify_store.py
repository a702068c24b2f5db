"""`tether verify`: the database's own integrity check, and journals it may only read."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import tests.integration.store_agent as notes
from tests.conftest import ROOT, fresh_pg_url, tether
from tether.engine import Runtime
from tether.journal import Store


def _journal(db: Path | str, runs: int = 3) -> list[str]:
    """A store holding a few finished runs, closed (so a SQLite file's log is folded in)."""
    store = Store(str(db))
    notes._STEPS[0] = 2
    try:
        return [asyncio.run(Runtime(store).run(notes.agent, f"go {i}")).run_id for i in range(runs)]
    finally:
        store.close()


def _page_of(db: Path, name: str) -> tuple[int, int]:
    """The byte offset and size of the first page of table or index ``name``."""
    with sqlite3.connect(db) as conn:
        query = "SELECT rootpage FROM sqlite_master WHERE name = ?"
        (root,) = conn.execute(query, (name,)).fetchone()
        (size,) = conn.execute("PRAGMA page_size").fetchone()
    return (root - 1) * size, size


def _rewrite_page(db: Path, name: str, edit: bytes, at: bytes | None = None) -> None:
    """Overwrite bytes inside a page, past the file's header, as a damaged disk would: at the
    first occurrence of ``at`` in the page, else at its end."""
    offset, size = _page_of(db, name)
    assert offset >= size  # never the first page, which holds the file's header
    with open(db, "r+b") as f:
        f.seek(offset)
        page = bytearray(f.read(size))
        where = page.find(at) if at is not None else size - 2 * len(edit)
        assert where >= 0
        page[where : where + len(edit)] = edit
        f.seek(offset)
        f.write(page)


def test_verify_all_names_a_corrupt_index_page_the_chains_do_not_cover(tmp_path: Path) -> None:
    db = tmp_path / "journal.db"
    _journal(db)
    assert not Path(f"{db}-wal").exists()
    assert tether(db, "verify", "--all").returncode == 0
    _rewrite_page(db, "ix_runs_agent", b"X", at=b"store-faults")  # one byte of an index entry
    out = tether(db, "verify", "--all")
    assert out.returncode == 1, out.stdout
    assert "DATABASE DAMAGED" in out.stdout and "missing from index ix_runs_agent" in out.stdout
    report = json.loads(tether(db, "verify", "--all", "--json").stdout)
    assert report["problems"] == [] and report["database_checked"] is True
    assert any("ix_runs_agent" in p for p in report["database_problems"])


def test_verify_all_names_a_malformed_page_in_one_line_per_problem(tmp_path: Path) -> None:
    db = tmp_path / "journal.db"
    _journal(db)
    _rewrite_page(db, "ix_runs_agent", b"\xff" * 30)  # garbage over the page's cells
    out = tether(db, "verify", "--all")
    assert out.returncode == 1, out.stdout
    assert "DATABASE DAMAGED" in out.stdout and "malformed" in out.stdout
    assert "Traceback" not in out.stdout + out.stderr


@pytest.fixture
def readable_dir() -> Iterator[Path]:
    """A directory other users can read (pytest's own temporary directories are private)."""
    path = Path(tempfile.mkdtemp(prefix="tether-ro-"))
    path.chmod(0o755)
    yield path
    path.chmod(0o755)
    for child in path.iterdir():
        child.chmod(0o644)
    shutil.rmtree(path)


def _files(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in directory.iterdir()}


def test_verify_reads_a_journal_on_read_only_media_and_writes_nothing(readable_dir: Path) -> None:
    db = readable_dir / "journal.db"
    runs = _journal(db)
    db.chmod(0o444)
    readable_dir.chmod(0o555)
    before = _files(readable_dir)
    # permissions do not bind root: check as a user they bind for
    as_user: list[str] = []
    if os.getuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root and no setpriv to drop to another user")
        as_user = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}",
        "HOME": str(readable_dir),
        "COLUMNS": "200",
    }
    out = subprocess.run(
        [*as_user, sys.executable, "-m", "tether.cli.app", "verify", "--all", "--db", str(db)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert f"ok: {len(runs)} run(s)" in out.stdout and "integrity check" in out.stdout
    assert _files(readable_dir) == before  # no log, no lock file, not a byte changed


def test_verify_does_not_create_a_store_that_is_not_there(tmp_path: Path) -> None:
    missing = tmp_path / "typo.db"
    out = tether(missing, "verify", "--all")
    assert out.returncode == 2
    assert "cannot open store" in out.stderr and "Traceback" not in out.stderr
    assert not missing.exists()


def test_verify_all_on_postgresql_checks_every_chain(pg_url: str) -> None:
    url = fresh_pg_url(pg_url)
    runs = _journal(url, runs=2)
    out = tether(url, "verify", "--all", "--json")  # type: ignore[arg-type]
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report == {
        "runs": len(runs),
        "problems": [],
        "database_checked": False,
        "database_problems": [],
        "keyed": False,
        "hashes_unchecked": 0,
    }
