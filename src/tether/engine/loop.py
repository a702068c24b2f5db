"""The step loop: ask the model, then take each call it proposes through the gates and run it.

    while the run is running:
        a turn with calls still pending → handle them
        otherwise → check the budget, ask the model, journal its answer
            no calls: the final answer (validated, or retried)
            calls:    handle them

Every change of state is an event: ``ctx.emit`` journals it and folds it into the state at once.
Events are made durable before and after any side effect and when the run waits or ends (see
:mod:`tether.engine.context`); read-only work is grouped, and a crash loses at most a few
milliseconds of it, which resume redoes. Where each call can stop is in
:mod:`tether.engine.gates`; how calls run, in :mod:`tether.engine.execute`.
"""

from __future__ import annotations

import contextlib
import time

from tether.engine.budget import BudgetGuard
from tether.engine.context import _UNSET, RunContext
from tether.engine.decisions import Outcome
from tether.engine.execute import elapsed_ms, run_reads, run_side_effect
from tether.engine.gates import pass_gates
from tether.engine.output import finish, finish_or_retry
from tether.engine.state import CallProgress
from tether.errors import ModelError
from tether.journal.events import AskedModel, InputKind, InputRequested, ModelFailed, ModelResponded
from tether.messages import ModelRequest, ModelResponse
from tether.status import RunStatus


async def drive(ctx: RunContext, budget: BudgetGuard) -> None:
    """Advance the run until it finishes or waits for a human."""
    try:
        await _drive(ctx, budget)
    except BaseException:
        # keep the steps the run finished (the one in progress is redone on resume, as after
        # a crash); a failure to write is secondary to the exception already under way
        with contextlib.suppress(Exception):
            ctx.flush_settled()
        raise
    await ctx.flush(final=True, release_lease=True)  # the run waits or ended: let it go


async def _drive(ctx: RunContext, budget: BudgetGuard) -> None:
    s = ctx.state
    while s.status is RunStatus.RUNNING:
        if s.has_pending_calls():
            await handle_calls(ctx)
            continue
        request = build_request(ctx)
        reason = budget.before(s, request, ctx.clock())
        if reason is not None:
            finish(ctx, RunStatus.BUDGET_EXCEEDED, reason=reason, budget=True)
            break
        response = await model_turn(ctx, request)
        if response is None:
            budget.release()  # the call failed: its daily-cap reservation is given back
            break
        reason = budget.after(s, response, ctx.clock())
        if reason is not None:
            finish(ctx, RunStatus.BUDGET_EXCEEDED, reason=reason, budget=True)
            break
        if response.tool_calls:
            await handle_calls(ctx)
        else:
            finish_or_retry(ctx, response)
            ctx.checkpoint()


def build_request(ctx: RunContext) -> ModelRequest:
    if ctx.response_schema is _UNSET:
        ctx.response_schema = ctx.agent.output_schema()
    if ctx.tool_specs is None:
        ctx.tool_specs = ctx.agent.tool_specs()
    return ModelRequest(
        messages=list(ctx.state.messages),
        tools=ctx.tool_specs,
        response_schema=ctx.response_schema,
    )


async def model_turn(ctx: RunContext, request: ModelRequest) -> ModelResponse | None:
    """One model call, journaled as one event: its response (or error) with what was asked.

    The request is not an event of its own: nothing durable happens between asking and
    answering (a crash redoes the call), so the answer carries the model, the number of
    messages and tools sent, and opens the step. A failed call fails the run.
    """
    step = ctx.state.step + 1
    asked = AskedModel(ctx.model.name, len(request.messages), len(request.tools))
    started = time.perf_counter()
    try:
        response = await ctx.model.request(request)
    except Exception as exc:
        if getattr(exc, "propagate", False):  # e.g. a replay divergence: not the run's failure
            raise
        known = isinstance(exc, ModelError)
        error = str(exc) if known else f"{type(exc).__name__}: {exc}"
        failed = ModelFailed(
            error=error,
            retryable=exc.retryable if isinstance(exc, ModelError) else False,
            status=exc.status if isinstance(exc, ModelError) else None,
            request=asked,
            duration_ms=elapsed_ms(started),
        )
        ctx.emit(failed, step=step)
        finish(ctx, RunStatus.FAILED, reason=f"model error: {error}")
        return None
    if not response.model:
        response.model = ctx.model.name
    answered = ModelResponded(response=response, duration_ms=elapsed_ms(started), request=asked)
    ctx.emit(answered, step=step)
    return response


async def handle_calls(ctx: RunContext) -> None:
    """Take the turn's pending calls through the gates and run them, in order.

    Consecutive reads run together; a side effect waits until the reads before it finished, so
    its gates see their results. A call that makes the run wait or stop ends the turn there.
    """
    s = ctx.state
    reads: list[CallProgress] = []
    for call in s.pending_calls:  # a new list: the state changes as calls proceed
        outcome = await pass_gates(ctx, call)
        if outcome is Outcome.RUN_READ:
            reads.append(call)
            continue
        if reads and await run_reads(ctx, reads) is Outcome.WAIT:
            return await _stop(ctx)
        reads = []
        if outcome is Outcome.RUN:
            outcome = await run_side_effect(ctx, call)
        if outcome in (Outcome.WAIT, Outcome.STOP):
            return await _stop(ctx)
    if reads and await run_reads(ctx, reads) is Outcome.WAIT:
        return await _stop(ctx)
    limit = ctx.agent.limits.max_consecutive_failures
    if s.status is RunStatus.RUNNING and s.consecutive_failures >= limit:
        question = (
            f"The agent failed {s.consecutive_failures} times in a row "
            "(invalid calls, denials or tool errors). How should it proceed?"
        )
        ctx.emit(InputRequested(kind=InputKind.FAILURES, question=question))
    ctx.checkpoint()  # side effects were flushed as they ran; the rest is read-only work


async def _stop(ctx: RunContext) -> None:
    """The run waits or stops: what it did is made durable now."""
    await ctx.flush()
