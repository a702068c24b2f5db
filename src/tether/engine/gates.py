"""The gates a proposed tool call passes before it runs, in order.

    validate → loop check → policy → approval → shadow → kill switch → human input → limits

Each gate either lets the call on (``None``) or settles what happens to it now (an
:class:`Outcome`), journaling why. Each reads the call's :class:`~tether.engine.state.CallStage`
and skips what the journal shows was done before, so a resumed run passes the same gates again
without repeating a proposal, a decision or an approval request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pydantic

from tether.engine.approvals import approval_gate
from tether.engine.context import RunContext
from tether.engine.decisions import (
    Outcome,
    await_input,
    decided,
    invalid,
    parse_arguments,
    proposal,
    propose,
    reserved,
    short_validation_error,
)
from tether.engine.state import CallProgress, CallStage, repeat_key
from tether.journal.events import (
    Escalated,
    Feedback,
    InputKind,
    InputRequested,
    LimitsReserved,
    ToolFinished,
)
from tether.policy.rules import Decision, VerdictKind
from tether.tools import AwaitInput, Effect, Tool

Gate = Callable[[RunContext, CallProgress, Tool], Awaitable[Outcome | None]]


async def pass_gates(ctx: RunContext, call: CallProgress) -> Outcome:
    """Take one call through the gates; what to do with it next."""
    tool = tool_named(ctx, call.tool or call.call.name)
    if tool is None or (call.stage is CallStage.NEW and call.validated is None):
        settled = validate(ctx, call, tool)
        if settled is not None:
            return settled
        tool = tool_named(ctx, call.tool or call.call.name)
    assert tool is not None
    for gate in GATES:
        settled = await gate(ctx, call, tool)
        if settled is not None:
            return settled
    return Outcome.RUN_READ if tool.effect is Effect.READ else Outcome.RUN


def tool_named(ctx: RunContext, name: str) -> Tool | None:
    table = ctx.tools_by_name
    if table is None:
        table = ctx.tools_by_name = {}
        for t in ctx.agent.tools:
            table.setdefault(t.name, t)
    return table.get(name)


# -- the gates -----------------------------------------------------------------------------


def validate(ctx: RunContext, call: CallProgress, tool: Tool | None) -> Outcome | None:
    """A known tool, arguments that parse and match its schema (kept for the call, in memory)."""
    if call.stage is not CallStage.NEW:  # journaled before a resume: validated again to run
        return None
    if tool is None:
        names = ", ".join(t.name for t in ctx.agent.tools) or "none"
        return invalid(ctx, call, f"unknown tool {call.call.name!r}; available tools: {names}")
    args, error = parse_arguments(call.call.arguments)
    if error is not None:
        return invalid(ctx, call, error)
    try:
        call.validated = tool.validate(args)
    except pydantic.ValidationError as exc:
        why = short_validation_error(exc)
        return invalid(ctx, call, f"invalid arguments for {tool.name}: {why}")
    # the arguments as the journal will hold them (masked), so the loop check and the policy
    # see now what they would see on resume
    call.tool, call.args = tool.name, ctx.masked(call.validated.model_dump(mode="json"))
    return None


async def loop_check(ctx: RunContext, call: CallProgress, tool: Tool) -> Outcome | None:
    """The same call, with the same arguments, too often: a warning to the model first (and a
    denial), then the run escalates."""
    if call.stage is not CallStage.NEW:
        return None
    key = tool.name + repeat_key(call.args)
    count = ctx.state.call_counts.get(key, 0) + 1
    if count <= ctx.agent.limits.max_repeats:
        return None
    propose(ctx, call, tool)
    if key in ctx.state.nudged:
        reason = (
            f"loop: {tool.name} was called {count} times with the same arguments, after a warning"
        )
        ctx.emit(Escalated(reason=reason, call_id=call.call.id))
        return Outcome.STOP
    message = (
        f"You have called {tool.name} with the same arguments {count} times. The result "
        "will not change. Use what you already know, try something different, or finish."
    )
    ctx.emit(Feedback(kind="loop", key=key, message=message))
    denial = Decision.deny("repeated identical call").by("loop-detector")
    return decided(ctx, call, tool, VerdictKind.DENY, denial)


async def policy(ctx: RunContext, call: CallProgress, tool: Tool) -> Outcome | None:
    """The policy's decision (rules, the effect's default, autonomy). A plain allow is journaled
    with the proposal; any other decision, or one whose rules read outside state, on its own."""
    if call.stage >= CallStage.DECIDED:
        return None
    asked = proposal(ctx, call, tool)
    verdict = ctx.policy.decide(ctx.agent, asked)
    observed = asked.observed
    if call.stage is CallStage.NEW:
        if verdict.kind is VerdictKind.ALLOW and not observed:
            d = verdict.decision
            propose(ctx, call, tool, decision=VerdictKind.ALLOW, rule=d.rule, reason=d.reason)
            return None
        propose(ctx, call, tool)
    return decided(ctx, call, tool, verdict.kind, verdict.decision, observed=observed)


async def shadow(ctx: RunContext, call: CallProgress, tool: Tool) -> Outcome | None:
    """Shadow mode: the call is recorded for review, never executed."""
    if call.decision is not VerdictKind.SHADOW or call.stage >= CallStage.STARTED:
        return None
    content = "Recorded for human review (shadow mode); the action was not executed."
    ctx.emit(ToolFinished(call_id=call.call.id, ok=True, shadow=True, content=content))
    return Outcome.DONE


async def kill_switch(ctx: RunContext, call: CallProgress, tool: Tool) -> Outcome | None:
    """The agent's kill switch: a paused agent's run waits until it is unpaused."""
    if call.stage >= CallStage.STARTED:
        return None
    paused, why = await ctx.kill_switch(fresh=tool.effect.has_side_effect)
    if not paused:
        return None
    question = f"agent {ctx.agent.name} is {why}; unpause it, then resume the run"
    ctx.emit(InputRequested(kind=InputKind.PAUSED, question=question))
    return Outcome.WAIT


async def human_input(ctx: RunContext, call: CallProgress, tool: Tool) -> Outcome | None:
    """A tool declared to await input: the run waits for a human's answer to its question."""
    if not tool.awaits_input or call.stage >= CallStage.STARTED:
        return None
    try:
        question = str(tool.fn(**(call.args or {})))
    except AwaitInput as asked:
        question = asked.question
    await_input(ctx, call, question)
    return Outcome.WAIT


async def limits(ctx: RunContext, call: CallProgress, tool: Tool) -> Outcome | None:
    """Hard limits across runs: the call reserves its share of each matching limit's counter
    (given back if it fails), or is refused."""
    if call.stage >= CallStage.STARTED or not ctx.policy.has_limits(ctx.agent):
        return None
    asked = proposal(ctx, call, tool)
    refused, call.reserved = await ctx.io(ctx.policy.reserve_limits, ctx.agent, asked)
    if call.reserved:
        ctx.emit(LimitsReserved(call_id=call.call.id, reservations=reserved(call.reserved)))
    if refused is None:
        return None
    return decided(ctx, call, tool, VerdictKind(refused.kind.value), refused)


GATES: tuple[Gate, ...] = (
    loop_check,
    policy,
    approval_gate,
    shadow,
    kill_switch,
    human_input,
    limits,
)
"""The gates after validation, in order."""
