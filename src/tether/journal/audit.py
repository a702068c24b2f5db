"""What ``tether verify`` checks beyond a run's hash chain: its anchor in the run row, the
JSON column of each event, the approvals the run's journal records, and the run ledger.

Each check returns the first problem it finds (a :class:`ChainProblem` naming an event, or
``seq`` 0 for the run as a whole), so tampering is named where it starts.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa

from tether.journal.chain import GENESIS, ChainProblem, verify_chain
from tether.journal.events import EventType
from tether.journal.jsontext import decode_json
from tether.journal.ledger import ledger_hash
from tether.journal.store import Store, args_hash


def verify_run(store: Store, run_id: str, key: bytes | None) -> tuple[ChainProblem | None, bool]:
    """The first problem of a run's journal, and whether its hashes were checked.

    A keyed run's hashes are HMACs: without ``key`` only its links, sequence numbers and anchor
    are checked (the second value is then ``False``)."""
    runs = store.t["runs"]
    with store.engine.connect() as conn:
        anchor = conn.execute(
            sa.select(runs.c.event_count, runs.c.head_hash, runs.c.keyed).where(runs.c.id == run_id)
        ).first()
    count, head, keyed = (0, GENESIS, False) if anchor is None else anchor
    count, head, keyed = int(count or 0), str(head or GENESIS), bool(keyed)
    hashes = key is not None or not keyed
    events = store.events(run_id)
    problem = verify_chain(run_id, events, key if keyed else None, hashes=hashes)
    if problem is not None:
        return problem, hashes
    if len(events) < count:
        what = f"event #{len(events) + 1} is missing (the run row counts {count} events)"
        return ChainProblem(run_id, len(events) + 1, what), hashes
    if len(events) > count:
        what = f"event #{count + 1} is beyond the {count} events the run row counts"
        return ChainProblem(run_id, count + 1, what), hashes
    if (events[-1].hash if events else GENESIS) != head:
        what = "the last event's hash does not match the run row's head hash"
        return ChainProblem(run_id, len(events), what), hashes
    return _json_column(store, run_id) or _approvals(store, run_id, events), hashes


def _json_column(store: Store, run_id: str) -> ChainProblem | None:
    """An event whose queryable ``payload`` differs from the hashed ``payload_text``."""
    ev = store.t["events"]
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(ev.c.seq, ev.c.payload, ev.c.payload_text)
            .where(ev.c.run_id == run_id)
            .order_by(ev.c.seq)
        ).all()
    for seq, value, text in rows:
        if value is None:
            continue  # text the database cannot hold as JSON: only the hashed text is kept
        parsed = decode_json(value) if isinstance(value, str) else value
        try:
            same = parsed == decode_json(text)
        except ValueError:
            same = False
        if not same:
            return ChainProblem(run_id, int(seq), "payload column differs from its hashed text")
    return None


def _approvals(store: Store, run_id: str, events: list[Any]) -> ChainProblem | None:
    """An approval row that differs from what the run's journal recorded of it: the request
    (``approval_requested``) and, once the run took it up, the decision (``approval_decided``)."""
    journaled: dict[str, dict[str, tuple[int, dict[str, Any]]]] = {}
    for e in events:
        if e.type in (EventType.APPROVAL_REQUESTED, EventType.APPROVAL_DECIDED):
            p = e.payload
            journaled.setdefault(str(p.get("approval_id")), {})[e.type] = (e.seq, p)
    for ap in store.list_approvals(status=None, run_id=run_id):
        seen = journaled.get(ap.id, {})
        asked = seen.get(EventType.APPROVAL_REQUESTED)
        if args_hash(ap.args) != ap.args_hash:
            seq = asked[0] if asked else 0
            return ChainProblem(run_id, seq, f"approval {ap.id}: its args do not match args_hash")
        if asked is not None:
            seq, p = asked
            if (ap.call_id, ap.tool, ap.args_hash) != (p["call_id"], p["tool"], p["args_hash"]):
                return ChainProblem(run_id, seq, f"approval {ap.id} differs from its request")
        decided = seen.get(EventType.APPROVAL_DECIDED)
        if decided is not None:
            seq, p = decided
            row = (ap.status, ap.decided_by, ap.decision_reason, _canon(ap.edited_args))
            if row != (p["status"], p["by"], p["reason"], _canon(p["edited_args"])):
                return ChainProblem(run_id, seq, f"approval {ap.id} differs from its decision")
    return None


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def verify_ledger(store: Store) -> list[str]:
    """Problems of the run ledger: a broken chain (an entry deleted or edited), a run in the
    ledger whose row is gone, a run row the ledger does not hold."""
    ledger, runs = store.t["run_ledger"], store.t["runs"]
    with store.engine.connect() as conn:
        entries = conn.execute(
            sa.select(ledger.c.position, ledger.c.run_id, ledger.c.hash).order_by(ledger.c.position)
        ).all()
        ids = {str(r[0]) for r in conn.execute(sa.select(runs.c.id))}
    problems: list[str] = []
    prev, expected = GENESIS, 1
    for position, run_id, digest in entries:
        if position != expected:
            problems.append(f"run ledger entry #{expected} is missing (a run was deleted?)")
            break
        if ledger_hash(prev, position, run_id) != digest:
            problems.append(f"run ledger entry #{position} does not match its hash (edited?)")
            break
        prev, expected = digest, expected + 1
    listed = {str(r[1]) for r in entries}
    problems += [f"run {r} is in the run ledger but its row is gone" for r in sorted(listed - ids)]
    problems += [f"run {r} is not in the run ledger" for r in sorted(ids - listed)]
    return problems
