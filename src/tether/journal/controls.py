"""Controls: an agent's kill switch, kept in the store so every process sees it.

A paused agent starts no run and makes no side-effecting call; the engine may accept a reading
of the switch that is ``max_age`` seconds old for read-only calls (see
:meth:`ControlRows.paused`).
"""

from __future__ import annotations

import time
from abc import abstractmethod
from typing import Any

import sqlalchemy as sa

from tether.journal.base import StoreBase


class ControlRows(StoreBase):
    """The controls table."""

    _switches: dict[str, tuple[float, tuple[bool, str]]]
    """Each agent's switch as last read: when (``time.monotonic()``) and its value."""

    def set_paused(self, agent: str, paused: bool, *, by: str, reason: str = "") -> None:
        self._switches.pop(agent, None)
        ctl = self.t["controls"]
        with self._tx() as conn:
            conn.execute(ctl.delete().where(ctl.c.agent == agent))
            conn.execute(
                ctl.insert().values(
                    agent=agent, paused=paused, reason=reason, changed_by=by, changed_at=time.time()
                )
            )

    def paused(self, agent: str, *, max_age: float = 0.0) -> tuple[bool, str]:
        """Whether the agent's kill switch is on, and why.

        ``max_age`` > 0 accepts a reading of this store that old (seconds) instead of a query:
        the engine allows that for read-only calls, which cannot do harm. Switching in this
        process is seen at once; in another, within ``max_age``.
        """
        if max_age > 0:
            recent = self.recent_switch(agent, max_age)
            if recent is not None:
                return recent
        value = self._read_paused(agent)
        self._switches[agent] = (time.monotonic(), value)
        return value

    def recent_switch(self, agent: str, max_age: float) -> tuple[bool, str] | None:
        """The agent's kill switch as read at most ``max_age`` seconds ago, if it was."""
        seen = self._switches.get(agent)
        if seen is not None and time.monotonic() - seen[0] <= max_age:
            return seen[1]
        return None

    def switches(self) -> dict[str, tuple[bool, str]]:
        """Every agent whose kill switch is on, and why: one fresh reading for many runs (see
        :class:`tether.engine.switches.SwitchReader`). The per-agent readings are refreshed."""
        now = time.monotonic()
        on = self._read_switches()
        for agent in set(self._switches) | set(on):
            self._switches[agent] = (now, on.get(agent, (False, "")))
        return on

    @abstractmethod
    def _read_switches(self) -> dict[str, tuple[bool, str]]:
        """Read every switch that is on (as :meth:`_read_paused` reads one)."""

    @abstractmethod
    def _read_paused(self, agent: str) -> tuple[bool, str]:
        """Read the agent's switch from the store: the store reads it on a connection of its
        own (never waiting behind a journal write), retrying transient errors as writes do."""

    def paused_agents(self) -> list[dict[str, Any]]:
        ctl = self.t["controls"]
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(ctl).where(ctl.c.paused.is_(True))).all()
        return [dict(r._mapping) for r in rows]
