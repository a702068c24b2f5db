"""Reading a run's journal back: its events, in order, and the key its chain is checked with."""

from __future__ import annotations

import sqlalchemy as sa

from tether.errors import UsageError
from tether.journal.base import StoreBase
from tether.journal.chain import GENESIS
from tether.journal.events import Event


class EventReads(StoreBase):
    """The events table, read."""

    journal_key: bytes | None

    def events(self, run_id: str, *, after_seq: int = 0) -> list[Event]:
        """All events of a run (those after ``after_seq``), in order.

        Each event's ``prev_hash`` is the stored hash of the event before it (``GENESIS`` before
        the first): the chain is checked by recomputing every hash over it (verify_chain). Stored
        text that cannot be parsed comes back as ``unreadable`` events, which never verify.
        """
        ev = self.t["events"]
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(ev.c.seq, ev.c.type, ev.c.step, ev.c.ts, ev.c.payload_text, ev.c.hash)
                .where(ev.c.run_id == run_id, ev.c.seq >= after_seq)
                .order_by(ev.c.seq)
            ).all()
        out: list[Event] = []
        prev = GENESIS
        for seq, type_, step, ts, text, digest in rows:
            out.append(Event(run_id, int(seq), type_, int(step), float(ts), text, prev, digest))
            prev = digest
        # the event ``after_seq`` was read too, so the first event kept is linked to its hash
        return [e for e in out if e.seq > after_seq] if after_seq > 0 else out

    def chain_key(self, run_id: str) -> bytes | None:
        """The key a run's chain is checked with: this store's journal key if the run was
        journaled with one, else ``None``. A keyed run without the key cannot be checked or
        continued, which is an error naming the setting."""
        runs_t = self.t["runs"]
        with self.engine.connect() as conn:
            keyed = conn.execute(sa.select(runs_t.c.keyed).where(runs_t.c.id == run_id)).scalar()
        if not keyed:
            return None
        if self.journal_key is None:
            raise UsageError(
                f"run {run_id} was journaled with a journal key: set TETHER_JOURNAL_KEY to read it"
            )
        return self.journal_key

    def count_events(self, run_id: str) -> int:
        ev = self.t["events"]
        with self.engine.connect() as conn:
            n = conn.execute(
                sa.select(sa.func.count()).select_from(ev).where(ev.c.run_id == run_id)
            ).scalar_one()
        return int(n)
