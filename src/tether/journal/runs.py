"""Runs: the row each run has (a projection of its journal), read by id or id prefix.

A run's row is written with its journal (see :meth:`~tether.journal.store.Store.create_run` and
:meth:`~tether.journal.store.Store.append`); the reads here list and find runs. Any record with
an id (a run, an approval) is found by its whole id or by a prefix that selects it alone
(:func:`by_id_or_prefix`), and shown by the shortest such prefix
(:meth:`RunRows.id_prefixes`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from tether.errors import JournalCorrupted, NotFound, UsageError
from tether.journal.base import StoreBase

MIN_ID_PREFIX = 6  # the fewest characters of an id that select a record by prefix


@dataclass(slots=True)
class RunRecord:
    """A row of the runs table: a projection of the run's journal."""

    id: str
    agent: str
    agent_version: str
    agent_ref: str | None
    status: str
    input: Any
    output: Any
    reason: str | None
    model: str | None
    steps: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    parent_run_id: str | None
    fork_step: int | None
    requested_by: str | None
    created_at: float
    updated_at: float

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


RUN_COLUMNS = (
    "id",
    "agent",
    "agent_version",
    "agent_ref",
    "status",
    "input",
    "output",
    "reason",
    "model",
    "steps",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "parent_run_id",
    "fork_step",
    "requested_by",
    "created_at",
    "updated_at",
)
"""The columns of a run's row that :class:`RunRecord` holds, in its order."""


def _common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def by_id_or_prefix(engine: sa.Engine, t: sa.Table, ident: str) -> tuple[Any, str]:
    """The row of ``t`` whose id is ``ident``, else the one row whose id starts with it.

    An exact id of any length matches; a prefix must have at least ``MIN_ID_PREFIX``
    characters and is matched literally (``%`` and ``_`` are not wildcards), so an empty or
    tiny argument can never select whichever record happens to be the only one.
    Returns ``(row, "")``, or ``(None, why)``.
    """
    if not ident.strip():
        raise UsageError(f"an id is required (at least {MIN_ID_PREFIX} characters of it)")
    with engine.connect() as conn:
        row = conn.execute(sa.select(t).where(t.c.id == ident)).first()
        if row is not None:
            return row, ""
        if len(ident) < MIN_ID_PREFIX:
            return None, f"no such id (a prefix needs at least {MIN_ID_PREFIX} characters)"
        rows = conn.execute(
            sa.select(t).where(t.c.id.startswith(ident, autoescape=True)).limit(2)
        ).all()
    if len(rows) == 1:
        return rows[0], ""
    return None, "ambiguous prefix" if rows else "no such id"


class RunRows(StoreBase):
    """The runs table's reads (and the one update of a run's row outside its journal)."""

    def update_run(self, run_id: str, **values: Any) -> None:
        for key in ("output", "input"):
            if key in values and values[key] is not None:
                values[key] = json.dumps(values[key], default=str)
        with self._tx() as conn:
            conn.execute(
                self.t["runs"].update().where(self.t["runs"].c.id == run_id).values(**values)
            )

    def _run_from_row(self, r: Any) -> RunRecord:
        data = dict(r._mapping)
        for key in ("input", "output"):
            if data[key] is not None:
                try:
                    data[key] = json.loads(data[key])
                except ValueError as exc:
                    raise JournalCorrupted(data["id"], 0, f"run row {key} is not JSON") from exc
        return RunRecord(**{c: data[c] for c in RUN_COLUMNS})

    def id_prefixes(self, table: str, ids: Sequence[str]) -> dict[str, str]:
        """For each of ``ids`` the shortest prefix (at least ``MIN_ID_PREFIX`` characters) that
        selects it alone among every id of ``table`` now; an id no prefix can single out (one
        that begins another) stays whole, and a whole id always matches exactly."""
        if not ids:
            return {}
        t = self.t[table]
        with self.engine.connect() as conn:
            every = sorted(str(r[0]) for r in conn.execute(sa.select(t.c.id)).all())
        position = {ident: i for i, ident in enumerate(every)}
        out: dict[str, str] = {}
        for ident in ids:
            i = position.get(ident)
            need = MIN_ID_PREFIX
            for j in (i - 1, i + 1) if i is not None else ():
                if 0 <= j < len(every):
                    need = max(need, _common_prefix(ident, every[j]) + 1)
            out[ident] = ident if need >= len(ident) else ident[:need]
        return out

    def count_runs(self, *, status: str | None = None, agent: str | None = None) -> int:
        """How many runs :meth:`list_runs` would list without a limit."""
        runs_t = self.t["runs"]
        q = sa.select(sa.func.count()).select_from(runs_t)
        if status:
            q = q.where(runs_t.c.status == status)
        if agent:
            q = q.where(runs_t.c.agent == agent)
        with self.engine.connect() as conn:
            return int(conn.execute(q).scalar_one())

    def get_run(self, run_id: str) -> RunRecord:
        row, why = by_id_or_prefix(self.engine, self.t["runs"], run_id)
        if row is None:
            hint = why.replace("no such id", "no such run", 1)
            raise NotFound(f"run {run_id!r}: {hint} (see `tether runs`)")
        return self._run_from_row(row)

    def list_runs(
        self,
        *,
        status: str | None = None,
        agent: str | None = None,
        limit: int = 50,
        parent: str | None = None,
    ) -> list[RunRecord]:
        runs_t = self.t["runs"]
        q = sa.select(runs_t).order_by(runs_t.c.created_at.desc()).limit(limit)
        if status:
            q = q.where(runs_t.c.status == status)
        if agent:
            q = q.where(runs_t.c.agent == agent)
        if parent:
            q = q.where(runs_t.c.parent_run_id == parent)
        with self.engine.connect() as conn:
            return [self._run_from_row(r) for r in conn.execute(q).all()]

    def run_ids(self) -> list[str]:
        runs_t = self.t["runs"]
        with self.engine.connect() as conn:
            return [
                str(r[0])
                for r in conn.execute(sa.select(runs_t.c.id).order_by(runs_t.c.created_at))
            ]
