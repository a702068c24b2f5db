"""The stored text of a payload: compact JSON, written and read the same way everywhere."""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

_encode_escaped = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True, default=str).encode
_dumps = orjson.dumps
_OPTIONS = orjson.OPT_NON_STR_KEYS


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
