"""Older event shapes, rewritten on read into today's (the only module that knows them).

A journal is never rewritten in place: its stored text is what its hashes cover. Instead every
reader gets events through :attr:`~tether.journal.events.Event.data`, which passes the stored
payload through :func:`upcast` first. Each rule below names the format that wrote the old shape;
the golden journals under ``tests/golden/`` hold real examples of each.
"""

from __future__ import annotations

from typing import Any

_PROPOSAL_KEYS = ("tool", "effect", "args", "decision", "rule", "reason")


def upcast(type_: str, payload: dict[str, Any]) -> dict[str, Any]:
    """``payload`` of an event of ``type_`` in today's shape (the same object if it already is)."""
    rewrite = _REWRITES.get(type_)
    return payload if rewrite is None else rewrite(payload)


def _run_started(p: dict[str, Any]) -> dict[str, Any]:
    # formats 1-2 recorded no format; format 1 kept the system prompt beside the agent
    if "format" in p and "instructions" not in p:
        return p
    out = {k: v for k, v in p.items() if k != "instructions"}
    out.setdefault("format", 2 if "instructions" not in p else 1)
    if "instructions" in p:
        out["agent"] = {**(p.get("agent") or {}), "instructions": p["instructions"]}
    return out


def _tool_finished(p: dict[str, Any]) -> dict[str, Any]:
    # formats 1-2 journaled a read the policy plainly allowed once, its proposal inside its result
    if "args" not in p:
        return p
    out = {k: v for k, v in p.items() if k not in _PROPOSAL_KEYS}
    out["proposed"] = {"call_id": p["call_id"], **{k: p[k] for k in _PROPOSAL_KEYS if k in p}}
    return out


def _input_received(p: dict[str, Any]) -> dict[str, Any]:
    # format 1 recorded only answers, without a kind
    return p if "kind" in p else {**p, "kind": "answer"}


_REWRITES = {
    "run_started": _run_started,
    "tool_finished": _tool_finished,
    "input_received": _input_received,
}
