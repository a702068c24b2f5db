"""What ``tether verify`` checks beyond a run's hash chain: its anchor in the run row, the
JSON column of each event, the approvals the run's journal records, the run ledger, and the
hard limits' counters against the reservations the journals record.

Each check returns the first problem it finds (a :class:`ChainProblem` naming an event, or
``seq`` 0 for the run as a whole), so tampering is named where it starts.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa

from tether.journal.chain import GENESIS, ChainProblem, verify_chain
from tether.journal.events import (
    ApprovalDecided,
    ApprovalRequested,
    Event,
    EventType,
    LimitsReserved,
    decode_event,
)
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


def _approvals(store: Store, run_id: str, events: list[Event]) -> ChainProblem | None:
    """An approval row that differs from what the run's journal recorded of it: the request
    (``approval_requested``) and, once the run took it up, the decision (``approval_decided``).
    An approval row the journal never asked for is named too."""
    asked: dict[str, tuple[int, ApprovalRequested]] = {}
    decided: dict[str, tuple[int, ApprovalDecided]] = {}
    for e in events:
        if e.type == EventType.APPROVAL_REQUESTED:
            request = e.data
            assert isinstance(request, ApprovalRequested)
            asked.setdefault(request.approval_id, (e.seq, request))
        elif e.type == EventType.APPROVAL_DECIDED:
            decision = e.data
            assert isinstance(decision, ApprovalDecided)
            decided[decision.approval_id] = (e.seq, decision)
    for ap in store.list_approvals(status=None, run_id=run_id):
        seq = asked[ap.id][0] if ap.id in asked else 0
        if args_hash(ap.args) != ap.args_hash:
            return ChainProblem(run_id, seq, f"approval {ap.id}: its args do not match args_hash")
        if ap.id not in asked:
            return ChainProblem(run_id, 0, f"approval {ap.id} was never requested in the journal")
        request = asked[ap.id][1]
        row = (ap.call_id, ap.tool, ap.args_hash, ap.position)
        if row != (request.call_id, request.tool, request.args_hash, request.position):
            return ChainProblem(run_id, seq, f"approval {ap.id} differs from its request")
        if ap.id in decided:
            seq, d = decided[ap.id]
            row_decision = (ap.status, ap.decided_by, ap.decision_reason, _canon(ap.edited_args))
            if row_decision != (d.status.value, d.by, d.reason, _canon(d.edited_args)):
                return ChainProblem(run_id, seq, f"approval {ap.id} differs from its decision")
    return None


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def verify_ledger(store: Store) -> list[str]:
    """Problems of the run ledger: a broken chain (an entry deleted or edited), a run in the
    ledger whose row is gone, a run row the ledger does not hold, and (with the journal key) a
    run whose ``keyed`` flag does not match its entry, or an unkeyed entry after a keyed one.

    Without the key a keyed entry cannot be checked: an entry that is not a plain SHA-256 is
    taken for a keyed one, if its run row says keyed."""
    key = store.journal_key
    ledger, runs = store.t["run_ledger"], store.t["runs"]
    with store.engine.connect() as conn:
        entries = conn.execute(
            sa.select(ledger.c.position, ledger.c.run_id, ledger.c.hash).order_by(ledger.c.position)
        ).all()
        keyed_runs = {
            str(r[0]): bool(r[1]) for r in conn.execute(sa.select(runs.c.id, runs.c.keyed))
        }
    problems: list[str] = []
    prev, expected, seen_keyed = GENESIS, 1, False
    for position, run_id, digest in entries:
        if position != expected:
            problems.append(f"run ledger entry #{expected} is missing (a run was deleted?)")
            break
        if ledger_hash(prev, position, run_id) == digest:
            keyed = False
        elif key is not None and ledger_hash(prev, position, run_id, key) == digest:
            keyed = True
        elif key is None and keyed_runs.get(str(run_id)):
            keyed = True  # an HMAC that cannot be checked without the key
        else:
            problems.append(f"run ledger entry #{position} does not match its hash (edited?)")
            break
        if seen_keyed and not keyed:
            problems.append(
                f"run ledger entry #{position} is unkeyed after keyed entries (rewritten "
                "without the journal key?)"
            )
            break
        if str(run_id) in keyed_runs and keyed_runs[str(run_id)] != keyed:
            problems.append(
                f"run {run_id}: its row says {'keyed' if keyed_runs[str(run_id)] else 'unkeyed'}"
                f" but its ledger entry is {'keyed' if keyed else 'unkeyed'} (flag edited?)"
            )
            break
        seen_keyed = seen_keyed or keyed
        prev, expected = digest, expected + 1
    listed = {str(r[1]) for r in entries}
    ids = set(keyed_runs)
    problems += [f"run {r} is in the run ledger but its row is gone" for r in sorted(listed - ids)]
    problems += [f"run {r} is not in the run ledger" for r in sorted(ids - listed)]
    return problems


def verify_counters(store: Store) -> list[str]:
    """Hard-limit counters holding less than the journals reserved against them.

    Every reservation a call makes (and gives back when the call fails) is journaled as
    ``limits_reserved``. A counter may hold more than the journals say (a process that stopped
    between reserving and journaling errs on the safe side), never less: a lowered counter would
    let calls past a limit."""
    ev = store.t["events"]
    counters = store.t["counters"]
    journaled: dict[tuple[str, str, int], list[float]] = {}
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(ev.c.seq, ev.c.payload_text).where(
                ev.c.type == EventType.LIMITS_RESERVED.value
            )
        ).all()
        stored = {
            (str(r[0]), str(r[1]), int(r[2])): (int(r[3]), float(r[4]))
            for r in conn.execute(
                sa.select(
                    counters.c.name,
                    counters.c.key,
                    counters.c.window_start,
                    counters.c.count,
                    counters.c.total,
                )
            )
        }
    for seq, text in rows:
        data = decode_event(EventType.LIMITS_RESERVED.value, decode_json(text), seq=int(seq))
        assert isinstance(data, LimitsReserved)
        sign = -1 if data.released else 1
        for r in data.reservations:
            held = journaled.setdefault((r.name, r.key, r.window_start), [0, 0.0])
            held[0] += sign
            held[1] += sign * r.amount
    problems = []
    for (name, key, window), (count, total) in sorted(journaled.items()):
        have_count, have_total = stored.get((name, key, window), (0, 0.0))
        if have_count < count or have_total < total - 1e-9 * max(1.0, abs(total)):
            problems.append(
                f"limit counter {name} [{key}] @{window} holds {have_count} call(s) and "
                f"{have_total:g} but the journals reserved {int(count)} and {total:g} (lowered?)"
            )
    return problems
