"""The hash chain of a run's events: one definition, used to seal and to verify.

Each event's hash covers the hash of the one before it in the same run, so editing, dropping or
reordering any stored event breaks the chain at that point (see :func:`verify_chain`). The hash
covers exactly the stored text of the payload, so verification needs no canonical form. The store
keeps only each event's own hash: the previous one is the hash of the row before.

There is one definition of the chain, :func:`_digest`: SHA-256, or HMAC-SHA-256 when a journal
key is configured (``TETHER_JOURNAL_KEY``, see :func:`journal_key`), so that whoever can write
the database but does not hold the key cannot recompute the hashes after an edit.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from tether.journal.events import Event
from tether.journal.jsontext import decode_json, encode_payload_bytes

GENESIS = "0" * 64
KEY_ENV = "TETHER_JOURNAL_KEY"


def journal_key() -> bytes | None:
    """The journal key from ``TETHER_JOURNAL_KEY`` (UTF-8), or ``None`` (an unkeyed chain).

    The key is read from the environment only and never stored: the database records whether a
    run was keyed, not the key."""
    value = os.environ.get(KEY_ENV)
    return value.encode() if value else None


_new_event = tuple.__new__  # Event(...) without the generated __new__ in between

_dumps = orjson.dumps
_sha256 = hashlib.sha256


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
    """A hashed event of ``payload`` (encoded as the journal stores it), linked to ``prev``."""
    raw = encode_payload_bytes(payload)
    return stored_event(run_id, seq, type_, step, ts, raw, raw.decode(), prev, key)


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
) -> Event:
    """A hashed event whose payload is already encoded (``raw`` is ``text`` as UTF-8)."""
    if type(type_) is not str:  # an EventType: kept as the plain string a stored event has
        type_ = str(type_)
    digest = _digest(prev, seq, type_, step, time_text(ts), raw, key)
    return _new_event(Event, (run_id, seq, type_, step, ts, text, prev, digest))


def unsealed_event(run_id: str, seq: int, type_: str, step: int, ts: float, text: str) -> Event:
    """An event as the engine folds it before it is hashed: its hash and link are empty until
    :func:`seal_events` seals it (at the flush)."""
    if type(type_) is not str:  # an EventType: kept as the plain string a stored event has
        type_ = str(type_)
    return _new_event(Event, (run_id, seq, type_, step, ts, text, "", ""))


def seal_events(
    pending: Sequence[Event], raws: Sequence[bytes], prev: str, key: bytes | None = None
) -> list[Event]:
    """:func:`stored_event` over a run of events: the engine's flush.

    ``pending`` are events as the engine folds them before hashing (their hash and link are
    ignored), ``raws`` the UTF-8 of their payloads; the first links to ``prev``.
    """
    sealed: list[Event] = []
    for ev, raw in zip(pending, raws, strict=True):
        event = stored_event(
            ev.run_id, ev.seq, ev.type, ev.step, ev.ts, raw, ev.payload_json, prev, key
        )
        sealed.append(event)
        prev = event.hash
    return sealed


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
