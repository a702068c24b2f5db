"""Turning events and runs into readable lines."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from rich.markup import escape

from tether.journal.events import Event
from tether.text import visible

STATUS_STYLE = {
    "succeeded": "green",
    "failed": "red",
    "escalated": "magenta",
    "budget_exceeded": "red",
    "cancelled": "dim",
    "waiting_approval": "yellow",
    "waiting_input": "yellow",
    "running": "cyan",
    "queued": "dim",
}

TYPE_STYLE = {
    "model_request": "blue",
    "model_response": "blue",
    "tool_proposed": "cyan",
    "policy_decision": "magenta",
    "tool_finished": "green",
    "validation_failed": "red",
    "model_error": "red",
    "approval_requested": "yellow",
    "approval_decided": "yellow",
    "escalated": "magenta",
    "run_finished": "bold",
    "budget": "red",
}


def short(text: Any, width: int = 100) -> str:
    """One line of at most ``width`` characters, control and bidi characters made visible."""
    s = text if isinstance(text, str) else json.dumps(text, default=str, separators=(",", ":"))
    s = visible(s.replace("\n", " ⏎ "))
    return s if len(s) <= width else s[: width - 1] + "…"


def safe(text: Any) -> str:
    """Text a model, tool, rule or store supplied, ready for Rich: control and bidi characters
    made visible and ``[...]`` not read as markup."""
    return escape(visible(str(text)))


def first_line(exc: object) -> str:
    """An error's message on one line (drivers add context lines and hints below it)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def status_text(status: str) -> str:
    return f"[{STATUS_STYLE.get(status, 'white')}]{status}[/]"


def _asked(request: dict[str, Any] | None) -> str:
    """What a model call was sent, as recorded with its response (or error)."""
    if not request:
        return ""
    return f" · sent {request.get('messages')} messages, {request.get('tools')} tools"


def summarise(ev: Event, p: dict[str, Any], width: int = 100) -> str:
    """One line saying what an event means, control and bidi characters made visible."""
    return visible(_summarise(ev, p, width))


def _summarise(ev: Event, p: dict[str, Any], width: int) -> str:
    t = ev.type
    if t == "run_started":
        agent = p["agent"]
        return (
            f"agent {agent.get('name')} v{agent.get('version')} · model {p.get('model')} · "
            f"input {short(p['input'], width)}"
        )
    if t == "model_request":
        return f"{p['model']} · {p['messages']} messages · {p['tools']} tools"
    if t == "model_response":
        r = p["response"]
        u = r.get("usage", {})
        calls = ", ".join(
            f"{c['name']}({short(c['arguments'], 60)})" for c in r.get("tool_calls", [])
        )
        what = f"calls {calls}" if calls else f"says {short(r.get('text', ''), width)}"
        cost = f" · ${r['cost_usd']:.5f}" if r.get("cost_usd") else ""
        tokens = f"{u.get('input_tokens', 0)}→{u.get('output_tokens', 0)} tok"
        asked = _asked(p.get("request"))
        return f"{what} · {tokens}{cost} · {p.get('duration_ms', 0):.1f} ms{asked}"
    if t == "tool_proposed":
        head = f"{p['tool']} [{p['effect']}] {short(p['args'], width)}"
        if "decision" in p:  # a plain allow, journaled with the proposal
            return f"{head} · {p['decision'].upper()} by rule {p.get('rule')}: {p.get('reason')}"
        return head
    if t == "policy_decision":
        extra = " (edited args re-checked)" if p.get("recheck") else ""
        head = f"{p['decision'].upper()} {p.get('tool')} by rule {p.get('rule')}"
        return f"{head}: {p.get('reason')}{extra}"
    if t == "approval_requested":
        return f"approval {p['approval_id']} for {p['tool']} {short(p['args'], width)}"
    if t == "approval_decided":
        edit = f" edited to {short(p['edited_args'], 80)}" if p.get("edited_args") else ""
        why = f" ({p['reason']})" if p.get("reason") else ""
        return f"{p['status']} by {p.get('by')} at {when(p.get('at'))}{edit}{why}"
    if t == "tool_started":
        return f"{p.get('tool')} started" + (
            f" · key {p['idempotency_key']}" if p.get("idempotency_key") else ""
        )
    if t == "tool_finished":
        mark = "ok" if p["ok"] else "ERROR"
        shadow = " (shadow: not executed)" if p.get("shadow") else ""
        done = f"{mark}{shadow} · {p.get('duration_ms', 0):.1f} ms · {short(p['content'], width)}"
        if "args" in p:  # a read journaled whole: its proposal and plain allow come first
            head = f"{p['tool']} [{p['effect']}] {short(p['args'], 60)}"
            return f"{head} · {p['decision'].upper()} by rule {p.get('rule')} · {done}"
        return done
    if t == "validation_failed":
        return f"{p.get('tool') or 'final output'}: {short(p['error'], width)}"
    if t in ("feedback",):
        return short(p["message"], width)
    if t == "input_requested":
        return f"[{p['kind']}] {short(p['question'], width)}"
    if t == "input_received":
        return f"{p.get('by', '')}: {short(p.get('answer', ''), width)}"
    if t == "model_error":
        return short(p["error"], width) + _asked(p.get("request"))
    if t in ("escalated", "budget"):
        return short(p.get("reason"), width)
    if t == "run_finished":
        out = f" · output {short(p['output'], width)}" if p.get("output") is not None else ""
        why = f" · {p['reason']}" if p.get("reason") else ""
        return f"{p['status']}{why}{out}"
    if t == "run_resumed":
        return "resumed" + ("" if p.get("same_agent", True) else " with a CHANGED agent")
    return short(p, width)


_ANSI = {"blue": "34", "cyan": "36", "magenta": "35", "green": "32", "red": "31",
         "yellow": "33", "bold": "1"}  # fmt: skip


def timeline_block(events: list[Event], width: int = 100, *, color: bool = False) -> str:
    """The timeline as one block of text, colored with plain ANSI codes when asked.

    Written straight to the terminal rather than through Rich's renderer, so a run of 10,000
    events shows in a fraction of a second.
    """
    if not events:
        return ""
    t0 = events[0].ts
    out = []
    for ev in events:
        try:
            summary = summarise(ev, ev.payload, width)
            bad = False
        except (ValueError, KeyError, TypeError) as exc:
            summary, bad = visible(f"cannot decode: {exc}"), True
        kind = visible(f"{ev.type:<18}")
        code = _ANSI.get(TYPE_STYLE.get(ev.type, ""))
        if color and code:
            kind = f"\x1b[{code}m{kind}\x1b[0m"
        if color and bad:
            summary = f"\x1b[31m{summary}\x1b[0m"
        out.append(f"{ev.seq:>5} {ev.step:>4} {ev.ts - t0:>9.3f}s {kind} {summary}")
    return "\n".join(out) + "\n"
