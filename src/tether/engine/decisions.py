"""What the gates journal, and the outcome they give a call (see :mod:`tether.engine.gates`)."""

from __future__ import annotations

import json
from enum import Enum
from typing import Any

import pydantic

from tether.engine.context import RunContext
from tether.engine.state import CallProgress
from tether.journal.events import (
    Escalated,
    InputKind,
    InputRequested,
    PolicyDecided,
    Reserved,
    ToolProposed,
    ValidationFailed,
)
from tether.journal.store import Reservation
from tether.policy.rules import Decision, Proposal, VerdictKind
from tether.tools import Tool


class Outcome(Enum):
    """What happens to a call once it passed (or was stopped by) the gates."""

    RUN = "run"  # run it now, alone (a side effect: intent journaled first)
    RUN_READ = "read"  # run it with the reads around it
    DONE = "done"  # settled without running (invalid, denied, rejected, shadow, limited)
    WAIT = "wait"  # the run waits for a human
    STOP = "stop"  # the run ends (escalated, in doubt, out of time)


def proposal(ctx: RunContext, call: CallProgress, tool: Tool) -> Proposal:
    """What the policy decides on: the call as journaled, with what the run knows."""
    recorded = None if ctx.replay is None else ctx.replay.observations(call.call.id)
    return ctx.state.proposal(
        tool, call.args or {}, agent=ctx.agent.name, deps=ctx.deps, recorded=recorded
    )


def await_input(ctx: RunContext, call: CallProgress, question: str) -> None:
    """The run waits for a human; the answer will stand for this call's result."""
    ctx.emit(InputRequested(kind=InputKind.ASK, question=question, call_id=call.call.id))


def reserved(held: tuple[Reservation, ...]) -> tuple[Reserved, ...]:
    return tuple(Reserved(r.name, r.key, r.window_start, r.amount) for r in held)


def propose(
    ctx: RunContext,
    call: CallProgress,
    tool: Tool,
    *,
    decision: VerdictKind | None = None,
    rule: str | None = None,
    reason: str | None = None,
) -> None:
    """Journal the proposal (redacted as a whole: the policy and a resume then see the same)."""
    ctx.emit(
        ToolProposed(
            call_id=call.call.id,
            tool=tool.name,
            effect=tool.effect,
            args=call.args or {},
            decision=decision,
            rule=rule,
            reason=reason,
        )
    )


def decided(
    ctx: RunContext,
    call: CallProgress,
    tool: Tool,
    kind: VerdictKind,
    d: Decision,
    *,
    observed: dict[str, Any] | None = None,
    edited: dict[str, Any] | None = None,
) -> Outcome | None:
    """Journal a decision of its own; DONE (denied) or STOP (escalated) when it settles the call.

    ``edited``: arguments a human edited, checked again."""
    ctx.emit(
        PolicyDecided(
            call_id=call.call.id,
            tool=tool.name,
            decision=kind,
            reason=d.reason,
            rule=d.rule,
            observed=observed or None,
            args=edited,
            recheck=edited is not None,
        )
    )
    if kind is VerdictKind.DENY:
        return Outcome.DONE
    if kind is VerdictKind.ESCALATE:
        ctx.emit(Escalated(reason=f"{d.rule}: {d.reason}", call_id=call.call.id))
        return Outcome.STOP
    return None


def invalid(ctx: RunContext, call: CallProgress, error: str) -> Outcome:
    ctx.emit(ValidationFailed(call_id=call.call.id, tool=call.call.name, error=error))
    return Outcome.DONE


def parse_arguments(raw: str | dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    if isinstance(raw, dict):
        return raw, None
    text = raw.strip() or "{}"
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return {}, f"arguments are not valid JSON ({exc.msg} at position {exc.pos})"
    except RecursionError:  # the model's text decides the depth: an answer, not a crash
        return {}, "arguments are nested too deeply"
    if not isinstance(value, dict):
        return {}, f"arguments must be a JSON object, got {type(value).__name__}"
    return value, None


def short_validation_error(exc: pydantic.ValidationError) -> str:
    """The first few problems of a validation error, on one line (what the model is told)."""
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(x) for x in err["loc"]) or "(root)"
        parts.append(f"{loc}: {err['msg']}")
    more = f" (+{exc.error_count() - 5} more)" if exc.error_count() > 5 else ""
    return "; ".join(parts) + more
