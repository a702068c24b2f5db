"""Events as rows of the ``events`` table: one place that knows its columns."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from tether.journal.events import Event

EVENT_COLUMNS = ("run_id", "seq", "type", "step", "ts", "payload", "payload_text", "hash")

# text PostgreSQL's JSONB refuses (a NUL character, a lone surrogate): that payload's JSON
# column stays NULL, and its exact text is kept in ``payload_text`` as always
_NOT_JSONB = re.compile(r"\\u0000|\\ud[89a-f][0-9a-f]{2}", re.IGNORECASE)


def json_column_value(text: str, dialect: str) -> str | None:
    """The value of an event's ``payload`` column: its text, or ``None`` where the database
    cannot hold that text as JSON."""
    if dialect == "postgresql" and _NOT_JSONB.search(text):
        return None
    return text


def event_rows(events: Sequence[Event], dialect: str) -> list[dict[str, Any]]:
    """Column → value mappings of ``events`` for an INSERT."""
    return [
        {
            "run_id": e.run_id,
            "seq": e.seq,
            "type": e.type,
            "step": e.step,
            "ts": e.ts,
            "payload": json_column_value(e.payload_json, dialect),
            "payload_text": e.payload_json,
            "hash": e.hash,
        }
        for e in events
    ]


def event_tuples(events: Sequence[Event], dialect: str) -> list[tuple[Any, ...]]:
    """The same values as :func:`event_rows`, as tuples in ``EVENT_COLUMNS`` order (the
    journal's DBAPI write path)."""
    return [tuple(row.values()) for row in event_rows(events, dialect)]


def insert_events_sql(dialect: str) -> str:
    """The DBAPI statement that inserts one event (run it with many rows of
    :func:`event_tuples`). On PostgreSQL the payload's text is cast to JSONB by the server."""
    ph = "%s" if dialect == "postgresql" else "?"
    payload = f"CAST({ph} AS jsonb)" if dialect == "postgresql" else ph
    values = [ph] * len(EVENT_COLUMNS)
    values[EVENT_COLUMNS.index("payload")] = payload
    return f"INSERT INTO events ({','.join(EVENT_COLUMNS)}) VALUES ({','.join(values)})"
