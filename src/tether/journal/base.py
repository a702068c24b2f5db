"""What every part of the store shares: its engine, its tables, and short transactions.

:class:`~tether.journal.store.Store` opens the database and sets these up; each group of tables
is kept by a class the store inherits (``RunRows`` in :mod:`~tether.journal.runs`,
``ApprovalRows`` in :mod:`~tether.journal.approvals`, ``CounterRows`` in
:mod:`~tether.journal.counters`, and so on), and all of them work on the one engine. What a
part needs of the store itself, it declares (:class:`~tether.journal.controls.ControlRows`
reads the kill switch on a connection of its own, which the store keeps).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import sqlalchemy as sa

from tether.errors import JournalError


class StoreBase:
    """The state a store's parts share (set by ``Store.__init__``)."""

    engine: sa.Engine
    t: Mapping[str, sa.Table]
    """The store's tables by name, as the database holds them."""
    is_sqlite: bool
    lease_ttl: float
    """Seconds a run's lease holds without renewal (see :mod:`tether.journal.leases`)."""

    @contextmanager
    def _tx(self) -> Iterator[sa.Connection]:
        """One short transaction; a store error in it is a :class:`JournalError`."""
        try:
            with self.engine.begin() as conn:
                yield conn
        except sa.exc.OperationalError as exc:
            raise JournalError(f"store error: {exc.orig}") from exc
