"""Journal events: append-only, typed, hash-chained.

Each event's hash covers the hash of the one before it in the same run, so editing, dropping or
reordering any stored event breaks the chain at that point (see :func:`verify_chain`).
The hash covers exactly the stored text of the payload, so verification needs no canonical form.
The store keeps only each event's own hash: the previous one is the hash of the row before.

There is one definition of the chain, :func:`_digest`: SHA-256, or HMAC-SHA-256 when a journal
key is configured (``TETHER_JOURNAL_KEY``, see :func:`journal_key`), so that whoever can write
the database but does not hold the key cannot recompute the hashes after an edit.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple

import orjson

GENESIS = "0" * 64
KEY_ENV = "TETHER_JOURNAL_KEY"


def journal_key() -> bytes | None:
    """The journal key from ``TETHER_JOURNAL_KEY`` (UTF-8), or ``None`` (an unkeyed chain).

    The key is read from the environment only and never stored: the database records whether a
    run was keyed, not the key."""
    value = os.environ.get(KEY_ENV)
    return value.encode() if value else None


class EventType(StrEnum):
    RUN_STARTED = "run_started"
    RUN_RESUMED = "run_resumed"
    MODEL_REQUEST = "model_request"  # written by older versions; requests now travel with answers
    MODEL_RESPONSE = "model_response"
    MODEL_ERROR = "model_error"
    TOOL_PROPOSED = "tool_proposed"
    VALIDATION_FAILED = "validation_failed"
    POLICY_DECISION = "policy_decision"
    APPROVAL_REQUESTED = "approval_requested"
    APPROVAL_DECIDED = "approval_decided"
    TOOL_STARTED = "tool_started"
    TOOL_FINISHED = "tool_finished"
    FEEDBACK = "feedback"
    INPUT_REQUESTED = "input_requested"
    INPUT_RECEIVED = "input_received"
    BUDGET = "budget"
    ESCALATED = "escalated"
    RUN_FINISHED = "run_finished"


class Event(NamedTuple):
    """One journal record. ``payload_json`` is the exact stored text the hash covers.

    Immutable (a named tuple: the engine makes several per step, and tuples are the cheapest
    immutable records to build).
    """

    run_id: str
    seq: int
    type: str
    step: int
    ts: float
    payload_json: str
    prev_hash: str
    hash: str

    @property
    def payload(self) -> dict[str, Any]:
        value: dict[str, Any] = decode_json(self.payload_json)
        return value

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "seq": self.seq,
            "type": self.type,
            "step": self.step,
            "ts": self.ts,
            "payload": self.payload,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


_new_event = tuple.__new__  # Event(...) without the generated __new__ in between

_encode_escaped = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True, default=str).encode
_dumps = orjson.dumps
_OPTIONS = orjson.OPT_NON_STR_KEYS
_sha256 = hashlib.sha256


def encode_payload_bytes(payload: Any) -> bytes:
    """A payload as compact UTF-8 JSON: the stored text an event's hash covers.

    orjson does the work (an order of magnitude faster than the standard library, and the engine
    encodes every event). What it refuses (integers beyond 64 bits, lone surrogates, nesting
    deeper than 254) goes through :mod:`json` with ``\\u`` escapes for everything beyond ASCII,
    so even a lone surrogate becomes storable text. Either way the text is valid JSON and
    parses to the same value; the two differ only in spelling (``1e-05`` / ``1e-5``, escapes).
    """
    try:
        return _dumps(payload, default=str, option=_OPTIONS)
    except (TypeError, ValueError):  # orjson.JSONEncodeError is a TypeError
        return _encode_escaped(payload).encode()


_LONG_NUMBER = re.compile(rb"\d{19}")


def decode_json(text: str | bytes) -> Any:
    """``json.loads``, fast (orjson), with the standard library for what orjson rejects
    (``NaN``, integers beyond 64 bits, lone surrogates written by older versions) and for text
    with numbers of 19 digits or more (orjson reads an integer below -2**63 as a float)."""
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    if _LONG_NUMBER.search(raw):
        return json.loads(raw)
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def time_text(ts: float) -> str:
    """``repr(ts)``: the text of an event's time in its hash and its stored line.

    For times from 1 to 10**15 (every Unix time in seconds) orjson writes the same text, the
    shortest that reads back as the same float, in about a fifth of the time; beyond that range
    the two spell exponents differently, so ``repr`` itself is used.
    """
    if 1.0 <= ts < 1e15:
        return _dumps(ts).decode()
    return repr(ts)


def event_hash(
    prev_hash: str,
    seq: int,
    type_: str,
    step: int,
    ts: float,
    payload_json: str,
    key: bytes | None = None,
) -> str:
    """SHA-256 (HMAC-SHA-256 with ``key``) of ``prev_hash|seq|type|step|repr(ts)|payload_json``
    as UTF-8, in hex."""
    raw = payload_json.encode("utf-8", "surrogatepass")
    return _digest(prev_hash, seq, type_, step, time_text(ts), raw, key)


def _digest(
    prev_hash: str, seq: int, type_: str, step: int, when: str, raw: bytes, key: bytes | None
) -> str:
    """The chain's one definition. ``when`` is ``time_text(ts)``."""
    message = f"{prev_hash}|{seq}|{type_}|{step}|{when}|".encode() + raw
    if key is None:
        return _sha256(message).hexdigest()
    return hmac.new(key, message, _sha256).hexdigest()


def _line(seq: int, type_: str, step: int, when: str, digest: str, text: str) -> str:
    """An event's line of stored text (see :func:`encode_batch`)."""
    return f"{seq}\t{type_}\t{step}\t{when}\t{digest}\t{text}"


def make_event(
    run_id: str,
    seq: int,
    type_: str,
    step: int,
    ts: float,
    payload: dict[str, Any],
    prev: str,
    key: bytes | None = None,
) -> Event:
    raw = encode_payload_bytes(payload)
    return encoded_event(run_id, seq, type_, step, ts, raw, raw.decode(), prev, key)


def encoded_event(
    run_id: str,
    seq: int,
    type_: str,
    step: int,
    ts: float,
    raw: bytes,
    text: str,
    prev: str,
    key: bytes | None = None,
) -> Event:
    """An event whose payload is already encoded (``raw`` is ``text`` as UTF-8)."""
    return stored_event(run_id, seq, type_, step, ts, raw, text, prev, key)[0]


def stored_event(
    run_id: str,
    seq: int,
    type_: str,
    step: int,
    ts: float,
    raw: bytes,
    text: str,
    prev: str,
    key: bytes | None = None,
) -> tuple[Event, str]:
    """:func:`encoded_event`, and the event's line of stored text (see :func:`encode_batch`).

    The engine keeps the line for the next flush: the time's text, which the hash needs too,
    is then made once per event.
    """
    if type(type_) is not str:  # an EventType: kept as the plain string a stored event has
        type_ = str(type_)
    when = time_text(ts)
    digest = _digest(prev, seq, type_, step, when, raw, key)
    event = _new_event(Event, (run_id, seq, type_, step, ts, text, prev, digest))
    return event, _line(seq, type_, step, when, digest, text)


def unsealed_event(run_id: str, seq: int, type_: str, step: int, ts: float, text: str) -> Event:
    """An event as the engine folds it before it is hashed: its hash and link are empty until
    :func:`seal_events` seals it (at the flush)."""
    if type(type_) is not str:  # an EventType: kept as the plain string a stored event has
        type_ = str(type_)
    return _new_event(Event, (run_id, seq, type_, step, ts, text, "", ""))


def seal_events(
    pending: Sequence[Event], raws: Sequence[bytes], prev: str, key: bytes | None = None
) -> tuple[list[Event], list[str]]:
    """:func:`stored_event` over a run of events: the engine's flush.

    ``pending`` are events as the engine folds them before hashing (their hash and link are
    ignored), ``raws`` the UTF-8 of their payloads; the first links to ``prev``. Returns the
    hashed events and their stored lines.
    """
    sealed: list[Event] = []
    lines: list[str] = []
    for ev, raw in zip(pending, raws, strict=True):
        event, line = stored_event(
            ev.run_id, ev.seq, ev.type, ev.step, ev.ts, raw, ev.payload_json, prev, key
        )
        sealed.append(event)
        lines.append(line)
        prev = event.hash
    return sealed, lines


UNREADABLE = "unreadable"
"""The type given to a stored event whose line cannot be parsed (its hash never verifies)."""


def encode_batch(events: Sequence[Event], lines: Sequence[str] | None = None) -> str:
    """Events as the stored text of one journal batch (schema version 2's layout, which
    migration 3 reads): one line per event,
    ``seq<TAB>type<TAB>step<TAB>time<TAB>hash<TAB>payload`` (the time as :func:`time_text`
    writes it, ``repr`` of the float).

    The payload comes last and, being compact JSON, holds no raw line break; ``repr`` of the
    time reads back as the identical float, so every hash verifies after the round trip. The
    previous hash is not stored: it is the hash on the line before (or the batch before).
    ``lines``, when given, are the events' lines already made (by :func:`stored_event`).
    """
    if lines is None:
        lines = [
            _line(e.seq, e.type, e.step, time_text(e.ts), e.hash, e.payload_json) for e in events
        ]
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


PROPOSAL_KEYS = ("call_id", "tool", "effect", "args", "decision", "rule", "reason")
"""The keys of a proposal (with its plain allow) inside a ``tool_finished`` payload."""


def decision_in(type_: str, payload: dict[str, Any]) -> dict[str, Any] | None:
    """The policy decision an event records, if any: a ``policy_decision`` payload, or the
    plain allow a ``tool_proposed`` event carries (``decision``, ``rule``, ``reason`` keys),
    or that of a read journaled whole in its ``tool_finished``."""
    if type_ == EventType.POLICY_DECISION or (
        type_ in (EventType.TOOL_PROPOSED, EventType.TOOL_FINISHED) and "decision" in payload
    ):
        return payload
    return None


def proposal_in(type_: str, payload: dict[str, Any]) -> dict[str, Any] | None:
    """The proposed call an event records, if any (``call_id``, ``tool``, ``effect``, ``args``
    and, for a plain allow, ``decision``, ``rule``, ``reason``): a ``tool_proposed`` payload,
    or the proposal a read the policy plainly allowed carries in its ``tool_finished``."""
    if type_ == EventType.TOOL_PROPOSED:
        return payload
    if type_ == EventType.TOOL_FINISHED and "args" in payload:
        return {k: payload[k] for k in PROPOSAL_KEYS if k in payload}
    return None


def request_in(type_: str, payload: dict[str, Any]) -> dict[str, Any] | None:
    """What a model call was sent (``model``, ``messages``, ``tools``), if the event records it:
    a ``model_request`` (older journals), or the ``request`` of a ``model_response`` or
    ``model_error``."""
    if type_ == EventType.MODEL_REQUEST:
        return payload
    if type_ in (EventType.MODEL_RESPONSE, EventType.MODEL_ERROR):
        asked: dict[str, Any] | None = payload.get("request")
        return asked
    return None


def asked_at(ts: float, payload: dict[str, Any]) -> float:
    """When the model call an event records was sent, given the event's time and payload: a
    response's (or error's) time less the call's ``duration_ms``; a ``model_request``, which
    has no duration, was sent at its own time."""
    return ts - float(payload.get("duration_ms") or 0.0) / 1000


@dataclass(slots=True, frozen=True)
class ChainProblem:
    """The first event where a run's chain does not verify."""

    run_id: str
    seq: int
    reason: str


def verify_chain(
    run_id: str, events: Iterable[Event], key: bytes | None = None, *, hashes: bool = True
) -> ChainProblem | None:
    """Check sequence numbers, links and hashes; return the first problem or ``None``.

    ``key``: the journal key the run was hashed with (``None``: plain SHA-256). ``hashes=False``
    checks sequence numbers and links only (a keyed run checked without its key)."""
    prev = GENESIS
    expected_seq = 1
    for ev in events:
        if ev.seq != expected_seq:
            return ChainProblem(run_id, expected_seq, f"event #{expected_seq} is missing")
        if ev.prev_hash != prev:
            return ChainProblem(run_id, ev.seq, "link to the previous event does not match")
        if not ev.hash or (
            hashes
            and event_hash(ev.prev_hash, ev.seq, ev.type, ev.step, ev.ts, ev.payload_json, key)
            != ev.hash
        ):
            return ChainProblem(run_id, ev.seq, "content does not match its hash (edited?)")
        try:
            decode_json(ev.payload_json)
        except ValueError:
            return ChainProblem(run_id, ev.seq, "payload is not valid JSON")
        prev = ev.hash
        expected_seq += 1
    return None
