"""The batch layout of schema version 2 (events as lines of text inside batch rows).

Only migration 3, which moves those batches into the ``events`` table, and the golden journals of
that format read it.
"""

from __future__ import annotations

from collections.abc import Sequence

from tether.journal.chain import _new_event, time_text
from tether.journal.events import Event


def _line(seq: int, type_: str, step: int, when: str, digest: str, text: str) -> str:
    return f"{seq}\t{type_}\t{step}\t{when}\t{digest}\t{text}"


UNREADABLE = "unreadable"
"""The type given to a stored event whose line cannot be parsed (its hash never verifies)."""


def encode_batch(events: Sequence[Event]) -> str:
    """Events as the stored text of one journal batch (schema version 2's layout, which
    migration 3 reads): one line per event,
    ``seq<TAB>type<TAB>step<TAB>time<TAB>hash<TAB>payload`` (the time as :func:`time_text`
    writes it, ``repr`` of the float).

    The payload comes last and, being compact JSON, holds no raw line break; ``repr`` of the
    time reads back as the identical float, so every hash verifies after the round trip. The
    previous hash is not stored: it is the hash on the line before (or the batch before).
    """
    lines = [_line(e.seq, e.type, e.step, time_text(e.ts), e.hash, e.payload_json) for e in events]
    body = "\n".join(lines)
    if body.count("\n") != len(events) - 1:
        raise ValueError("an event payload contains a raw line break (not compact JSON)")
    return body


def decode_batch(run_id: str, first_seq: int, last_seq: int, body: str, prev: str) -> list[Event]:
    """The events of one stored batch, chained from ``prev`` (the hash before the batch).

    A line that cannot be parsed, or events missing from the end of the text (the batch held
    ``first_seq`` to ``last_seq``), come back as ``UNREADABLE`` events whose hash is empty, so
    :func:`verify_chain` names the first of them and the rest of the run stays readable.
    """
    out: list[Event] = []
    expected = first_seq
    for line in body.split("\n"):
        try:
            seq, type_, step, ts, digest, payload = line.split("\t", 5)
            ev = _new_event(
                Event, (run_id, int(seq), type_, int(step), float(ts), payload, prev, digest)
            )
        except ValueError:
            ev = _new_event(Event, (run_id, expected, UNREADABLE, 0, 0.0, line, prev, ""))
        out.append(ev)
        prev = ev.hash
        expected = ev.seq + 1
    if out and expected <= last_seq:
        out.append(_new_event(Event, (run_id, expected, UNREADABLE, 0, 0.0, "", prev, "")))
    return out
