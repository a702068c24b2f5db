"""Running calls that passed the gates: a side effect alone, its intent durable before it runs
and its result before the run goes on; reads together, concurrently.

A result comes from the tool, or is served by a replay or fork, or by the read cache. A tool that
overruns its time is an error the model sees for a read; for a side effect its outcome is in
doubt: an idempotent tool waits to be called again with the same idempotency key, any other
escalates to a human.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from typing import Any

from tether.engine.context import RunContext
from tether.engine.decisions import Outcome, await_input, reserved
from tether.engine.gates import tool_named
from tether.engine.output import finish
from tether.engine.state import CallProgress, CallStage
from tether.engine.timeouts import TimedOut, call_within
from tether.journal.events import (
    Escalated,
    InputKind,
    InputRequested,
    LimitsReserved,
    ResultForm,
    ToolFinished,
    ToolStarted,
)
from tether.status import RunStatus
from tether.tools import AwaitInput, Effect, Tool, ToolContext, ToolError, result_to_text


def elapsed_ms(started: float) -> float:
    """Milliseconds since ``started`` (a perf_counter reading), to the microsecond."""
    return round((time.perf_counter() - started) * 1e6) / 1000


async def run_side_effect(ctx: RunContext, call: CallProgress) -> Outcome:
    """Run one side-effecting call: intent durable first, then the call, then its result."""
    tool = tool_named(ctx, call.tool or "")
    assert tool is not None
    if call.stage is CallStage.STARTED:  # started before the process stopped: in doubt
        if not (tool.idempotent or tool.effect is Effect.READ):
            reason = (
                f"in doubt: {tool.name} started but its result was never recorded (the process "
                "stopped); it may or may not have taken effect, and the tool has no idempotency "
                "key, so a human must check"
            )
            ctx.emit(Escalated(reason=reason, call_id=call.call.id))
            await ctx.flush()
            return Outcome.STOP
    else:
        if _time_left(ctx) == 0.0:  # not started: nothing is in doubt
            deadline = ctx.agent.limits.deadline_seconds or 0.0
            reason = f"deadline passed ({deadline:g}s)"
            finish(ctx, RunStatus.BUDGET_EXCEEDED, reason=reason, budget=True)
            await ctx.flush()
            return Outcome.STOP
        key = tool_context(ctx, call).idempotency_key
        ctx.emit(ToolStarted(call_id=call.call.id, tool=tool.name, idempotency_key=key))
        if tool.effect.has_side_effect:
            await ctx.flush()
    result = await _invoke(ctx, call, tool)
    if isinstance(result, AwaitInput):
        await_input(ctx, call, result.question)
        return Outcome.WAIT
    if result.timed_out and tool.effect.has_side_effect:
        return await _in_doubt(ctx, call, tool, result.content)
    ctx.emit(result)
    if tool.effect.has_side_effect:
        await ctx.flush()
    _settle_limits(ctx, call, result)
    return Outcome.DONE


async def run_reads(ctx: RunContext, calls: list[CallProgress]) -> Outcome:
    """Run read-only calls; several at once run concurrently (sync tools on threads). WAIT if
    one of them asked a human (the others' results are journaled first)."""
    tools = [tool_named(ctx, c.tool or "") for c in calls]
    if len(calls) == 1:
        results = [await _invoke(ctx, calls[0], tools[0])]  # type: ignore[arg-type]
    else:
        results = await asyncio.gather(
            *[_invoke(ctx, c, t) for c, t in zip(calls, tools, strict=True)]  # type: ignore[arg-type]
        )
    asked = None
    for call, result in zip(calls, results, strict=True):
        if isinstance(result, AwaitInput):
            asked = asked or (call, result.question)
            continue
        ctx.emit(result)
        _settle_limits(ctx, call, result)
    if asked is not None:
        await_input(ctx, *asked)
        return Outcome.WAIT
    return Outcome.DONE


def tool_context(ctx: RunContext, call: CallProgress) -> ToolContext:
    s = ctx.state
    return ToolContext(
        run_id=s.run_id,
        agent=ctx.agent.name,
        step=s.step,
        call_id=call.call.id,
        idempotency_key=f"{s.run_id}:{s.step}:{call.call.id}",
        deps=ctx.deps,
        simulated=ctx.simulate_side_effects,
    )


async def _in_doubt(ctx: RunContext, call: CallProgress, tool: Tool, why: str) -> Outcome:
    """A side effect that overran its time: its intent is journaled, its result never will be.

    As after a crash, an idempotent tool may be called again with the same idempotency key: the
    run waits until it is resumed (or a human answers with what happened). Any other tool, or a
    run past its deadline, escalates: a human must check. Its limit reservations stay counted.
    """
    if tool.idempotent and _time_left(ctx) != 0.0:
        question = (
            f"in doubt: {why}; it may or may not have taken effect. It is idempotent: resume "
            "the run to call it again with the same idempotency key, or answer with what happened"
        )
        ctx.emit(InputRequested(kind=InputKind.IN_DOUBT, question=question, call_id=call.call.id))
    else:
        reason = f"in doubt: {why}; it may or may not have taken effect, so a human must check"
        ctx.emit(Escalated(reason=reason, call_id=call.call.id))
    await ctx.flush()
    return Outcome.STOP


def _time_left(ctx: RunContext) -> float | None:
    """Seconds until the run's deadline (0.0 once it passed), or ``None`` without one."""
    deadline = ctx.agent.limits.deadline_seconds
    if deadline is None:
        return None
    return max(0.0, ctx.state.started_at + deadline - ctx.clock())


def _timeout(ctx: RunContext, tool: Tool) -> float | None:
    """How long a call of ``tool`` may take: its own timeout or the agent's, within the
    run's deadline."""
    limit = tool.timeout if tool.timeout is not None else ctx.agent.tool_timeout
    left = _time_left(ctx)
    if left is None:
        return limit
    return left if limit is None else min(limit, left)


def _settle_limits(ctx: RunContext, call: CallProgress, result: ToolFinished) -> None:
    """A call that failed gives back what it reserved against hard limits (after its result is
    journaled: a crash in between leaves the call counted, which errs on the safe side)."""
    held = call.reserved
    if held:
        call.reserved = ()
        if not result.ok:
            ctx.policy.release_limits(held)
            ctx.emit(
                LimitsReserved(call_id=result.call_id, reservations=reserved(held), released=True)
            )


async def _invoke(ctx: RunContext, call: CallProgress, tool: Tool) -> ToolFinished | AwaitInput:
    """A call's result (from the tool, or served by a replay or the cache), or its error, or
    the question it asks a human."""
    call_id = call.call.id
    if ctx.replay is not None:  # replay or fork: results come from the journal or a simulation
        served: ToolFinished | None = ctx.replay.tool_result(tool, call.args or {})
        if served is not None:
            return served.replace(call_id=call_id)
    cache_key = None
    if tool.cache_ttl is not None and tool.effect is Effect.READ:
        cache_key, cached = _cached_result(ctx, tool, call.args or {})
        if cached is not None:
            return ToolFinished.from_json({**cached, "call_id": call_id, "cached": True})
    tctx = tool_context(ctx, call) if tool.takes_context else None
    args = call.validated if call.validated is not None else tool.validate(call.args or {})
    started = time.perf_counter()
    ok, timed_out = True, False
    result: Any = None
    timeout = _timeout(ctx, tool)
    try:
        result = await call_within(tool, tctx, args, timeout)
        content = result_to_text(result)
    except AwaitInput as asked:
        return asked
    except TimedOut:
        ok, timed_out = False, True
        content = f"{tool.name} did not finish within {timeout:g}s"
    except ToolError as exc:
        ok, content = False, str(exc)
    except Exception as exc:
        ok, content = False, f"{tool.name} failed: {type(exc).__name__}: {exc}"
    duration_ms = elapsed_ms(started)
    limit = ctx.agent.limits.max_tool_result_chars
    whole = len(content) <= limit
    blob, chars = None, None
    if not whole:
        full = ctx.journal.mask_text(content)
        blob, chars = await ctx.io(ctx.store.put_blob, full), len(content)
        content = (
            content[:limit] + f"\n[truncated: the result had {len(content):,} characters; "
            f"the first {limit:,} are shown]"
        )
    # how rules read the result back: the content is the text the tool returned, or the JSON
    # of the data it returned (then decoded when a rule asks; not stored twice)
    form = None
    if ok:
        form = ResultForm.TEXT if isinstance(result, str) else ResultForm.JSON if whole else None
    finished = ToolFinished(
        call_id=call_id,
        ok=ok,
        content=content,
        duration_ms=duration_ms,
        result_form=form,
        timed_out=timed_out,
        full_result_blob=blob,
        full_result_chars=chars,
    )
    if cache_key is not None and ok:
        _store_result(ctx, tool, cache_key, finished)
    return finished


def _cached_result(
    ctx: RunContext, tool: Tool, args: dict[str, Any]
) -> tuple[str, dict[str, Any] | None]:
    """Read-tool caching: ``cache_ttl=0`` reuses a result within the run, ``> 0`` across runs."""
    key = "tool:" + tool.name + ":" + json.dumps(args, sort_keys=True, default=str)
    if tool.cache_ttl == 0:
        return key, ctx.run_cache.get(key)
    digest = hashlib.sha256(key.encode()).hexdigest()
    text = ctx.store.cache_get(digest, now=ctx.clock())
    return digest, None if text is None else json.loads(text)


def _store_result(ctx: RunContext, tool: Tool, key: str, result: ToolFinished) -> None:
    kept = {k: v for k, v in result.to_json().items() if k not in ("call_id", "duration_ms")}
    if tool.cache_ttl == 0:
        ctx.run_cache[key] = kept
    else:
        kept = ctx.masked(kept)
        ctx.store.cache_set(key, json.dumps(kept), float(tool.cache_ttl or 0), now=ctx.clock())
