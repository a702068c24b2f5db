"""Turning events and runs into readable lines."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from rich.markup import escape

from tether.errors import JournalError
from tether.journal.events import (
    ApprovalDecided,
    ApprovalRequested,
    AskedModel,
    BudgetExceeded,
    Escalated,
    Event,
    EventData,
    Feedback,
    InputReceived,
    InputRequested,
    LimitsReserved,
    ModelFailed,
    ModelRequested,
    ModelResponded,
    PolicyDecided,
    RunFinished,
    RunResumed,
    RunStarted,
    ToolFinished,
    ToolProposed,
    ToolStarted,
    ValidationFailed,
)
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


def _asked(request: AskedModel | None) -> str:
    """What a model call was sent, as recorded with its response (or error)."""
    if request is None:
        return ""
    return f" · sent {request.messages} messages, {request.tools} tools"


def summarise(ev: Event, width: int = 100) -> str:
    """One line saying what an event means, control and bidi characters made visible.

    Raises :class:`~tether.errors.JournalError` for an event whose payload cannot be read."""
    return visible(_summarise(ev.data, width))


def _proposal(p: ToolProposed, width: int) -> str:
    head = f"{p.tool} [{p.effect.value}] {short(p.args, width)}"
    if p.decision is not None:  # a plain allow, journaled with the proposal
        return f"{head} · {p.decision.value.upper()} by rule {p.rule}: {p.reason}"
    return head


def _summarise(data: EventData, width: int) -> str:
    match data:
        case RunStarted(agent=agent):
            return (
                f"agent {agent.get('name')} v{agent.get('version')} · model {data.model} · "
                f"input {short(data.input, width)}"
            )
        case ModelRequested():
            return f"{data.model} · {data.messages} messages · {data.tools} tools"
        case ModelResponded(response=r):
            calls = ", ".join(f"{c.name}({short(c.arguments, 60)})" for c in r.tool_calls)
            what = f"calls {calls}" if calls else f"says {short(r.text, width)}"
            cost = f" · ${r.cost_usd:.5f}" if r.cost_usd else ""
            tokens = f"{r.usage.input_tokens}→{r.usage.output_tokens} tok"
            return f"{what} · {tokens}{cost} · {data.duration_ms:.1f} ms{_asked(data.request)}"
        case ToolProposed():
            return _proposal(data, width)
        case PolicyDecided():
            extra = " (edited args re-checked)" if data.recheck else ""
            head = f"{data.decision.value.upper()} {data.tool} by rule {data.rule}"
            return f"{head}: {data.reason}{extra}"
        case LimitsReserved():
            what = "released" if data.released else "reserved"
            held = ", ".join(f"{r.name} {r.amount:g}" for r in data.reservations)
            return f"{what} {held}"
        case ApprovalRequested():
            return f"approval {data.approval_id} for {data.tool} {short(data.args, width)}"
        case ApprovalDecided():
            edit = f" edited to {short(data.edited_args, 80)}" if data.edited_args else ""
            why = f" ({data.reason})" if data.reason else ""
            return f"{data.status.value} by {data.by} at {when(data.at)}{edit}{why}"
        case ToolStarted():
            key = f" · key {data.idempotency_key}" if data.idempotency_key else ""
            return f"{data.tool} started{key}"
        case ToolFinished():
            mark = "ok" if data.ok else "ERROR"
            shadow = " (shadow: not executed)" if data.shadow else ""
            done = f"{mark}{shadow} · {data.duration_ms:.1f} ms · {short(data.content, width)}"
            if data.proposed is not None:  # formats 1-2: a read's proposal came first
                return f"{_proposal(data.proposed, 60)} · {done}"
            return done
        case ValidationFailed():
            return f"{data.tool or 'final output'}: {short(data.error, width)}"
        case Feedback():
            return short(data.message, width)
        case InputRequested():
            return f"[{data.kind.value}] {short(data.question, width)}"
        case InputReceived():
            return f"{data.by or ''}: {short(data.answer, width)}"
        case ModelFailed():
            return short(data.error, width) + _asked(data.request)
        case Escalated() | BudgetExceeded():
            return short(data.reason, width)
        case RunFinished():
            out = f" · output {short(data.output, width)}" if data.output is not None else ""
            why = f" · {data.reason}" if data.reason else ""
            return f"{data.status.value}{why}{out}"
        case RunResumed():
            return "resumed" + ("" if data.same_agent else " with a CHANGED agent")
    return short(data.to_json(), width)


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
            summary = summarise(ev, width)
            bad = False
        except (JournalError, ValueError) as exc:
            summary, bad = visible(f"cannot decode: {exc}"), True
        kind = visible(f"{ev.type:<18}")
        code = _ANSI.get(TYPE_STYLE.get(ev.type, ""))
        if color and code:
            kind = f"\x1b[{code}m{kind}\x1b[0m"
        if color and bad:
            summary = f"\x1b[31m{summary}\x1b[0m"
        out.append(f"{ev.seq:>5} {ev.step:>4} {ev.ts - t0:>9.3f}s {kind} {summary}")
    return "\n".join(out) + "\n"
