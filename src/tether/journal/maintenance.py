"""The database as a whole: its own consistency check, and removing every tether table."""

from __future__ import annotations

import sqlalchemy as sa

from tether.journal.base import StoreBase


class Maintenance(StoreBase):
    """Checks and resets of the whole store."""

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
