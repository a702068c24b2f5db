"""Counters: hard limits shared by every run and process on one store.

A counter (a name, a key, a window's start) holds a number of calls and a total amount. A limit
reserves before the call it limits (:meth:`CounterRows.reserve_many`: a conditional UPDATE per
counter, all in one transaction, so concurrent runs in any number of processes can never push a
counter past its cap), then settles the real amount (:meth:`CounterRows.settle`) or gives the
reservation back (:meth:`CounterRows.release_many`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as postgresql_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect

from tether.journal.base import StoreBase


@dataclass(slots=True, frozen=True)
class Reservation:
    """One counter to bump by one call and ``amount``, within optional caps."""

    name: str
    key: str
    window_start: int
    amount: float
    max_count: int | None
    max_total: float | None


class _Refused(Exception):
    """A counter refused a reservation: ``index`` in the reservations asked for."""

    def __init__(self, index: int) -> None:
        self.index = index


class CounterRows(StoreBase):
    """The counters table."""

    def reserve(
        self,
        name: str,
        key: str,
        window_start: int,
        *,
        amount: float,
        max_count: int | None,
        max_total: float | None,
    ) -> tuple[bool, int, float]:
        """Atomically add one call (and ``amount``) to a counter unless that breaks a limit.

        Returns ``(reserved, count, total)`` with the counter's values after the attempt. The check
        and the increment happen in one conditional UPDATE, so concurrent runs in any number of
        processes can never push a counter past its limit.
        """
        wanted = Reservation(name, key, window_start, amount, max_count, max_total)
        refused = self.reserve_many([wanted])
        count, total = self.counter(name, key, window_start)
        return refused is None, count, total

    def reserve_many(self, wanted: Sequence[Reservation]) -> int | None:
        """Reserve several counters at once, all or nothing.

        Returns ``None`` when every counter took the call, else the index of the first one that
        refused (and nothing was counted anywhere).
        """
        c = self.t["counters"]
        insert = postgresql_dialect.insert if not self.is_sqlite else sqlite_dialect.insert
        try:
            with self._tx() as conn:
                for i, r in enumerate(wanted):
                    conn.execute(
                        insert(c)
                        .values(
                            name=r.name, key=r.key, window_start=r.window_start, count=0, total=0.0
                        )
                        .on_conflict_do_nothing()
                    )
                    guarded = _counter_of(c, r)
                    if r.max_count is not None:
                        guarded.append(c.c.count + 1 <= r.max_count)
                    if r.max_total is not None:
                        guarded.append(c.c.total + r.amount <= r.max_total + 1e-9)
                    result = conn.execute(
                        c.update()
                        .where(*guarded)
                        .values(count=c.c.count + 1, total=c.c.total + r.amount)
                    )
                    if result.rowcount != 1:
                        raise _Refused(i)
        except _Refused as refused:
            return refused.index
        return None

    def release_many(self, held: Sequence[Reservation]) -> None:
        """Give back reservations that :meth:`reserve_many` took, in one transaction: one call
        and its ``amount`` off each counter (a call that failed without effect does not count).

        Never takes a counter below zero (floating-point sums may not cancel exactly)."""
        if not held:
            return
        c = self.t["counters"]
        with self._tx() as conn:
            for r in held:
                conn.execute(
                    c.update()
                    .where(*_counter_of(c, r), c.c.count > 0)
                    .values(count=c.c.count - 1, total=_not_below_zero(c.c.total - r.amount))
                )

    def settle(self, held: Reservation, amount: float) -> None:
        """Replace a reserved amount by the real one (the call stays counted): the total moves
        by the difference, up or down, unconditionally — what was spent was spent."""
        c = self.t["counters"]
        with self._tx() as conn:
            conn.execute(
                c.update()
                .where(*_counter_of(c, held))
                .values(total=_not_below_zero(c.c.total + (amount - held.amount)))
            )

    def add(self, name: str, key: str, window_start: int, amount: float) -> None:
        """Add to a counter unconditionally (e.g. dollars already spent)."""
        self.reserve(name, key, window_start, amount=amount, max_count=None, max_total=None)

    def counter(self, name: str, key: str, window_start: int) -> tuple[int, float]:
        c = self.t["counters"]
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(c.c.count, c.c.total).where(
                    c.c.name == name, c.c.key == key, c.c.window_start == window_start
                )
            ).first()
        return (0, 0.0) if row is None else (int(row[0]), float(row[1]))


def _counter_of(c: sa.Table, r: Reservation) -> list[sa.ColumnElement[bool]]:
    """The conditions that select the counter row ``r`` reserves on."""
    return [c.c.name == r.name, c.c.key == r.key, c.c.window_start == r.window_start]


def _not_below_zero(total: sa.ColumnElement[float]) -> sa.ColumnElement[float]:
    """``total``, or 0 where it fell below (floating-point sums may not cancel exactly)."""
    return sa.case((total < 0, 0.0), else_=total)
