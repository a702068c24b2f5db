"""The step loop: model → validate → policy → execute → journal → repeat.

Every change of state is an event: :meth:`RunContext.emit` folds it into the state and buffers it.
Buffered events are flushed (made durable) before and after any side effect and when the run waits
or ends; read-only steps are grouped (see :mod:`tether.engine.context`), so a crash loses at most a
few milliseconds of read-only work, which resume redoes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
import uuid
from typing import Any

import pydantic

from tether.builtins import ask_human
from tether.engine.budget import BudgetGuard
from tether.engine.context import _UNSET, RunContext
from tether.engine.state import CallProgress, RunStatus, repeat_key
from tether.engine.timeouts import TimedOut, call_within
from tether.errors import ModelError
from tether.journal.events import (
    ApprovalDecided,
    ApprovalRequested,
    AskedModel,
    BudgetExceeded,
    Escalated,
    Feedback,
    InputKind,
    InputRequested,
    LimitsReserved,
    ModelFailed,
    ModelResponded,
    PolicyDecided,
    Reserved,
    ResultForm,
    RunFinished,
    ToolFinished,
    ToolProposed,
    ToolStarted,
    ValidationFailed,
)
from tether.journal.store import ApprovalRecord, Reservation, args_hash
from tether.messages import ModelRequest, ModelResponse
from tether.policy.pipeline import Verdict
from tether.policy.rules import Decision, Proposal, VerdictKind
from tether.status import ApprovalStatus
from tether.tools import Effect, Tool, ToolContext, ToolError, result_to_text

EXECUTE, EXECUTE_READ, DONE, WAIT, STOP = "execute", "read", "done", "wait", "stop"


def _elapsed_ms(started: float) -> float:
    """Milliseconds since ``started`` (a perf_counter reading), to the microsecond.

    Rounded through an integer: ``round(x, 3)`` converts to decimal digits, at several times the
    cost."""
    return round((time.perf_counter() - started) * 1e6) / 1000


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
    ctx.flush(final=True)


async def _drive(ctx: RunContext, budget: BudgetGuard) -> None:
    s = ctx.state
    while s.status is RunStatus.RUNNING:
        if s.has_pending_calls():
            await process_calls(ctx)
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
        if not response.tool_calls:
            finish_or_retry(ctx, response)
            ctx.checkpoint()
        else:  # the turn's calls, none started yet; the response is flushed with their results
            await process_calls(ctx)


def build_request(ctx: RunContext) -> ModelRequest:
    if ctx.response_schema is _UNSET:
        ctx.response_schema = ctx.agent.output_schema()
    return ModelRequest(
        messages=list(ctx.state.messages),
        tools=_tool_specs(ctx),
        response_schema=ctx.response_schema,
    )


def _tool_specs(ctx: RunContext) -> list[dict[str, Any]]:
    if ctx.tool_specs is None:
        ctx.tool_specs = ctx.agent.tool_specs()
    return ctx.tool_specs


async def model_turn(ctx: RunContext, request: ModelRequest) -> ModelResponse | None:
    """One model call, journaled as one event: its response (or error) with what was asked.

    The request is not an event of its own: nothing durable happens between asking and
    answering (a crash in between redoes the call), so ``model_response`` and ``model_error``
    carry the model, the number of messages and tools sent, and the step they open.
    """
    step = ctx.state.step + 1
    asked = AskedModel(ctx.model.name, len(request.messages), len(request.tools))
    started = time.perf_counter()
    try:
        response = await ctx.model.request(request)
    except ModelError as exc:
        failed = ModelFailed(
            error=str(exc),
            retryable=exc.retryable,
            status=exc.status,
            request=asked,
            duration_ms=_elapsed_ms(started),
        )
        ctx.emit(failed, step=step)
        finish(ctx, RunStatus.FAILED, reason=f"model error: {exc}")
        return None
    except Exception as exc:
        if getattr(exc, "propagate", False):  # e.g. a replay divergence: not the run's failure
            raise
        error = f"{type(exc).__name__}: {exc}"
        ctx.emit(
            ModelFailed(error=error, request=asked, duration_ms=_elapsed_ms(started)), step=step
        )
        finish(ctx, RunStatus.FAILED, reason=f"model error: {error}")
        return None
    if not response.model:
        response.model = ctx.model.name
    ms = _elapsed_ms(started)
    answered = ModelResponded(response=response, duration_ms=ms, request=asked)
    ctx.emit(
        answered,
        step=step,
        # what the model said and the model's names; the usage is numbers and the rest counts
        scan=(
            response.text,
            [c.to_dict() for c in response.tool_calls],
            response.model,
            response.meta,
            asked.model,
        ),
    )
    ctx.response_clean = ctx.last_clean
    return response


def finish(
    ctx: RunContext,
    status: RunStatus,
    *,
    output: Any = None,
    reason: str | None = None,
    budget: bool = False,
) -> None:
    if budget:
        ctx.emit(BudgetExceeded(reason=reason))
    ctx.emit(RunFinished(status=status, output=output, reason=reason))


def finish_or_retry(ctx: RunContext, response: ModelResponse) -> None:
    agent = ctx.agent
    if agent.output_type is None:
        output: Any = response.text
        error = _run_validators(ctx, output)
    else:
        output, error = _parse_output(agent.output_type, response.text)
        if error is None:
            error = _run_validators(ctx, output)
    if error is None:
        finish(ctx, RunStatus.SUCCEEDED, output=output)
        return
    if ctx.state.output_retries < agent.limits.max_output_retries:
        feedback = (
            f"Your final answer was rejected: {error}. Reply again with only the corrected "
            "answer" + (" as JSON matching the required schema." if agent.output_type else ".")
        )
        ctx.emit(ValidationFailed(kind="output", error=error, feedback=feedback))
    else:
        finish(ctx, RunStatus.FAILED, reason=f"final output invalid: {error}")


def _parse_output(output_type: type[pydantic.BaseModel], text: str) -> tuple[Any, str | None]:
    body = text.strip()
    if body.startswith("```"):
        body = body.strip("`")
        body = body.split("\n", 1)[1] if "\n" in body else body
        body = body.removeprefix("json").strip()
    try:
        value = output_type.model_validate_json(body)
    except pydantic.ValidationError as exc:
        return None, _short_validation_error(exc)
    return value.model_dump(mode="json"), None


def _run_validators(ctx: RunContext, output: Any) -> str | None:
    for validator in ctx.agent.output_validators:
        try:
            validator(output)
        except (ValueError, AssertionError, TypeError) as exc:
            return str(exc) or type(exc).__name__
    return None


def _short_validation_error(exc: pydantic.ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(x) for x in err["loc"]) or "(root)"
        parts.append(f"{loc}: {err['msg']}")
    more = f" (+{exc.error_count() - 5} more)" if exc.error_count() > 5 else ""
    return "; ".join(parts) + more


# -- tool calls ------------------------------------------------------------------------------


async def process_calls(ctx: RunContext) -> None:
    """Validate, decide and execute the pending calls of the current turn, in order.

    Consecutive allowed read-only calls run in parallel; a write waits until the reads before it
    finished, so its policy sees their results.
    """
    s = ctx.state
    batch: list[CallProgress] = []
    for progress in s.pending_calls:  # a new list: the state changes as calls proceed
        outcome = prepare(ctx, progress)
        if outcome == EXECUTE_READ:
            batch.append(progress)
            continue
        if batch:
            await execute_batch(ctx, batch)
            batch = []
        if outcome == EXECUTE:
            if await execute(ctx, progress) == STOP:
                return
        elif outcome in (WAIT, STOP):
            ctx.flush()
            return
    if batch:
        await execute_batch(ctx, batch)
    limit = ctx.agent.limits.max_consecutive_failures
    if s.status is RunStatus.RUNNING and s.consecutive_failures >= limit:
        question = (
            f"The agent failed {s.consecutive_failures} times in a row "
            "(invalid calls, denials or tool errors). How should it proceed?"
        )
        ctx.emit(InputRequested(kind=InputKind.FAILURES, question=question))
    ctx.checkpoint()  # side effects were flushed as they ran; the rest is read-only work


def _tool(ctx: RunContext, name: str) -> Tool | None:
    table = ctx.tools_by_name
    if table is None:
        table = ctx.tools_by_name = {}
        for t in ctx.agent.tools:
            table.setdefault(t.name, t)
    return table.get(name)


def _proposal(
    ctx: RunContext, progress: CallProgress, tool: Tool, args: dict[str, Any] | None = None
) -> Proposal:
    s = ctx.state
    recorded = None if ctx.replay is None else ctx.replay.observations(progress.call.id)
    return Proposal(
        tool=tool.name,
        effect=tool.effect,
        args=(progress.args or {}) if args is None else args,
        agent=ctx.agent.name,
        run_id=s.run_id,
        run_input=s.run_input,
        history=s.history,
        deps=ctx.deps,
        scopes=s.scopes,
        recorded=recorded,
        messages=s.messages,
        refused=s.refused,
        answers=s.answers,
    )


def prepare(ctx: RunContext, progress: CallProgress) -> str:
    """Bring one call up to the point of execution; return what to do next."""
    call = progress.call
    if progress.tool is None:
        tool = _tool(ctx, call.name)
        if tool is None:
            names = ", ".join(t.name for t in ctx.agent.tools) or "none"
            return _invalid(ctx, progress, f"unknown tool {call.name!r}; available tools: {names}")
        args, error = _parse_arguments(call.arguments)
        if error is not None:
            return _invalid(ctx, progress, error)
        try:
            validated = tool.validate(args)
        except pydantic.ValidationError as exc:
            return _invalid(
                ctx, progress, f"invalid arguments for {tool.name}: {_short_validation_error(exc)}"
            )
        checked = _json_args(validated)
        # arguments the model sent as an object, unchanged by validation, in a response whose
        # journaled text was found to need no masking, need no second look (that text holds
        # them, encoded as the journal encodes them)
        clean = ctx.response_clean and type(call.arguments) is dict and checked == args
        decided = _propose(ctx, progress, tool, checked, clean=clean)
        progress.validated = validated
    else:
        tool = _tool(ctx, progress.tool)
        decided = None
    assert tool is not None and progress.args is not None
    proposal = None if decided is None else decided[0]
    # decided without a proposal: the policy has no rule and no limit for this agent
    plain = decided is not None and proposal is None
    if progress.decision is None:
        if decided is None:
            loop = _loop_check(ctx, progress)
            if loop is not None:
                return loop
            proposal = _proposal(ctx, progress, tool)
            verdict = ctx.policy.decide(ctx.agent, proposal)
        else:
            proposal, verdict = decided
        settled = _journal_decision(ctx, progress, tool, proposal, verdict.kind, verdict.decision)
        if settled is not None:
            return settled
    if progress.decision is VerdictKind.APPROVE and not progress.approved:
        gate = _approval_gate(ctx, progress, tool)
        if gate not in (EXECUTE, EXECUTE_READ):
            return gate
        # approved: the kill switch and the hard limits below still apply
    if progress.decision is VerdictKind.SHADOW:
        return _shadow(ctx, progress)
    if progress.started:
        return EXECUTE_READ if tool.effect is Effect.READ and tool is not ask_human else EXECUTE
    paused, why = ctx.kill_switch(fresh=tool.effect.has_side_effect)
    if paused:
        question = f"agent {ctx.agent.name} is {why}; unpause it, then resume the run"
        ctx.emit(InputRequested(kind=InputKind.PAUSED, question=question))
        return WAIT
    if tool is ask_human:
        question = str(progress.args["question"])
        ctx.emit(InputRequested(kind=InputKind.ASK, question=question, call_id=call.id))
        return WAIT
    limited = None
    if not plain and ctx.policy.has_limits(ctx.agent):
        # the proposal the policy decided on, unless there was none to build (no rule could
        # speak) or this call was decided before (a resume)
        if proposal is None:
            proposal = _proposal(ctx, progress, tool)
        limited, progress.reserved = ctx.policy.reserve_limits(ctx.agent, proposal)
        if progress.reserved:
            ctx.emit(LimitsReserved(call_id=call.id, reservations=_reserved(progress.reserved)))
    if limited is not None:
        kind = VerdictKind(limited.kind.value)
        ctx.emit(
            PolicyDecided(
                call_id=call.id,
                tool=tool.name,
                decision=kind,
                reason=limited.reason,
                rule=limited.rule,
            )
        )
        if kind is VerdictKind.ESCALATE:
            ctx.emit(Escalated(reason=f"{limited.rule}: {limited.reason}", call_id=call.id))
            return STOP
        return DONE
    return EXECUTE_READ if tool.effect is Effect.READ else EXECUTE


def _json_args(validated: pydantic.BaseModel) -> dict[str, Any]:
    """``validated.model_dump(mode="json")``, straight from the model's serializer (the same
    result without the keyword handling, which costs as much again for small arguments)."""
    dumped: dict[str, Any] = type(validated).__pydantic_serializer__.to_python(
        validated, mode="json"
    )
    return dumped


def _propose(
    ctx: RunContext,
    progress: CallProgress,
    tool: Tool,
    args: dict[str, Any],
    *,
    clean: bool = False,
) -> tuple[Proposal | None, Verdict] | None:
    """Journal a proposed call and decide it; a plain "allow" goes into the same event.

    The policy decides on the arguments as the journal holds them (masked), as it would on
    resume. Any other decision (deny, approve, escalate, shadow, or one whose rules read outside
    state) is returned for the caller to journal as an event of its own, which approvals,
    shadow mode and audits look for. ``None``: not decided, because the call repeats too often
    and the loop detector speaks first.
    """
    # what the journal will hold, so the repeat key and the policy see what resume sees
    if not clean:
        args = ctx.masked(args)
    proposed = ToolProposed(call_id=progress.call.id, tool=tool.name, effect=tool.effect, args=args)
    key = progress.repeat_key = tool.name + repeat_key(args)
    decided: tuple[Proposal | None, Verdict] | None = None
    if ctx.state.call_counts.get(key, 0) < ctx.agent.limits.max_repeats:
        proposal = _proposal(ctx, progress, tool, args)
        verdict = ctx.policy.decide(ctx.agent, proposal)
        decided = (proposal, verdict)
        if verdict.kind is VerdictKind.ALLOW and not proposal.observed:
            d = verdict.decision
            proposed = proposed.replace(decision=VerdictKind.ALLOW, rule=d.rule, reason=d.reason)
    ctx.emit(proposed)
    return decided


def _journal_decision(
    ctx: RunContext,
    progress: CallProgress,
    tool: Tool,
    proposal: Proposal | None,
    kind: VerdictKind,
    d: Decision,
    edited: dict[str, Any] | None = None,
) -> str | None:
    """Journal a policy decision (with what its rules read); DONE/STOP when it settles the call.

    ``edited``: arguments a human edited, checked again."""
    ctx.emit(
        PolicyDecided(
            call_id=progress.call.id,
            tool=tool.name,
            decision=kind,
            reason=d.reason,
            rule=d.rule,
            observed=proposal.observed if proposal is not None and proposal.observed else None,
            args=edited,
            recheck=edited is not None,
        )
    )
    if kind is VerdictKind.DENY:
        return DONE
    if kind is VerdictKind.ESCALATE:
        ctx.emit(Escalated(reason=f"{d.rule}: {d.reason}", call_id=progress.call.id))
        return STOP
    return None


def _invalid(ctx: RunContext, progress: CallProgress, error: str) -> str:
    ctx.emit(ValidationFailed(call_id=progress.call.id, tool=progress.call.name, error=error))
    return DONE


def _parse_arguments(raw: str | dict[str, Any]) -> tuple[dict[str, Any], str | None]:
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


def _loop_check(ctx: RunContext, progress: CallProgress) -> str | None:
    s = ctx.state
    key = progress.repeat_key
    count = s.call_counts.get(key, 0)
    if count <= ctx.agent.limits.max_repeats:
        return None
    if key in s.nudged:
        reason = (
            f"loop: {progress.tool} was called {count} times with the same arguments, "
            "after a warning"
        )
        ctx.emit(Escalated(reason=reason, call_id=progress.call.id))
        return STOP
    message = (
        f"You have called {progress.tool} with the same arguments {count} times. The result "
        "will not change. Use what you already know, try something different, or finish."
    )
    ctx.emit(Feedback(kind="loop", key=key, message=message))
    ctx.emit(
        PolicyDecided(
            call_id=progress.call.id,
            tool=progress.tool or "",
            decision=VerdictKind.DENY,
            rule="loop-detector",
            reason="repeated identical call",
        )
    )
    return DONE


def _approval_requested(record: ApprovalRecord, *, again: bool = False) -> ApprovalRequested:
    return ApprovalRequested(
        approval_id=record.id,
        call_id=record.call_id,
        tool=record.tool,
        args=record.args,
        args_hash=record.args_hash,
        position=record.position,
        again=again,
    )


def _approval_gate(ctx: RunContext, progress: CallProgress, tool: Tool) -> str:
    s = ctx.state
    call = progress.call
    assert progress.args is not None
    if progress.approval_id is None:
        record = ApprovalRecord(
            id=uuid.uuid4().hex,
            run_id=s.run_id,
            agent=ctx.agent.name,
            call_id=call.id,
            step=s.step,
            position=s.calls.index(progress),
            tool=tool.name,
            args=progress.args,
            args_hash=args_hash(progress.args),
            reason=progress.decision_reason or "approval required",
            rule=progress.decision_rule,
            status="pending",
            requested_by=None,
            decided_by=None,
            decided_at=None,
            edited_args=None,
            decision_reason=None,
            consumed_at=None,
            created_at=ctx.clock(),
        )
        ctx.approvals.append(record)  # written with the event that asks for it
        ctx.emit(_approval_requested(record))
        return WAIT
    record = ctx.store.get_approval(progress.approval_id)
    if record.status == ApprovalStatus.PENDING:
        if s.status is RunStatus.RUNNING:
            ctx.emit(_approval_requested(record, again=True))
        return WAIT
    if record.args_hash != args_hash(progress.args):
        reason = f"approval {record.id} does not match the call's arguments"
        ctx.emit(Escalated(reason=reason, call_id=call.id))
        return STOP
    edited = record.edited_args if record.status == ApprovalStatus.EDITED else None
    ctx.emit(
        ApprovalDecided(
            approval_id=record.id,
            call_id=call.id,
            status=ApprovalStatus(record.status),
            by=record.decided_by,
            at=record.decided_at,
            reason=record.decision_reason,
            edited_args=edited,
        )
    )
    ctx.flush()
    if not ctx.store.consume_approval(record.id):
        ctx.emit(Escalated(reason=f"approval {record.id} was already used", call_id=call.id))
        return STOP
    if record.status == ApprovalStatus.REJECTED:
        return DONE
    if edited is not None:
        return _recheck_edited(ctx, progress, tool, edited)
    return EXECUTE_READ if tool.effect is Effect.READ else EXECUTE


def _recheck_edited(
    ctx: RunContext, progress: CallProgress, tool: Tool, edited: dict[str, Any]
) -> str:
    """Edited arguments are validated and checked by policy again (a human can't bypass rules)."""
    try:
        validated = tool.validate(edited).model_dump(mode="json")
    except pydantic.ValidationError as exc:
        return _invalid(
            ctx, progress, f"edited arguments are invalid: {_short_validation_error(exc)}"
        )
    progress.args = validated
    proposal = _proposal(ctx, progress, tool)
    verdict = ctx.policy.decide(ctx.agent, proposal)
    kind = verdict.kind
    if kind is VerdictKind.APPROVE:  # the human has just approved these exact arguments
        kind = VerdictKind.ALLOW
    settled = _journal_decision(ctx, progress, tool, proposal, kind, verdict.decision, validated)
    if settled is not None:
        return settled
    progress.approved = True
    if kind is VerdictKind.SHADOW:
        return _shadow(ctx, progress)
    return EXECUTE_READ if tool.effect is Effect.READ else EXECUTE


def _shadow(ctx: RunContext, progress: CallProgress) -> str:
    content = "Recorded for human review (shadow mode); the action was not executed."
    ctx.emit(ToolFinished(call_id=progress.call.id, ok=True, shadow=True, content=content))
    return DONE


def _tool_context(ctx: RunContext, progress: CallProgress) -> ToolContext:
    s = ctx.state
    return ToolContext(
        run_id=s.run_id,
        agent=ctx.agent.name,
        step=s.step,
        call_id=progress.call.id,
        idempotency_key=f"{s.run_id}:{s.step}:{progress.call.id}",
        deps=ctx.deps,
        simulated=ctx.simulate_side_effects,
    )


async def execute(ctx: RunContext, progress: CallProgress) -> str:
    """Run one side-effecting call: intent durable first, then the call, then its result."""
    tool = _tool(ctx, progress.tool or "")
    assert tool is not None
    if progress.started:
        if not (tool.idempotent or tool.effect is Effect.READ):
            reason = (
                f"in doubt: {tool.name} started but its result was never recorded (the process "
                "stopped); it may or may not have taken effect, and the tool has no idempotency "
                "key, so a human must check"
            )
            ctx.emit(Escalated(reason=reason, call_id=progress.call.id))
            ctx.flush()
            return STOP
    else:
        if _time_left(ctx) == 0.0:  # not started: nothing is in doubt
            deadline = ctx.agent.limits.deadline_seconds or 0.0
            finish(
                ctx,
                RunStatus.BUDGET_EXCEEDED,
                reason=f"deadline passed ({deadline:g}s)",
                budget=True,
            )
            ctx.flush()
            return STOP
        key = _tool_context(ctx, progress).idempotency_key
        ctx.emit(ToolStarted(call_id=progress.call.id, tool=tool.name, idempotency_key=key))
        if tool.effect.has_side_effect:
            ctx.flush()
    result = await _invoke(ctx, progress, tool)
    if result.timed_out and tool.effect.has_side_effect:
        return _in_doubt(ctx, progress, tool, result.content)
    ctx.emit(result, scan=_unchecked_result(result))
    if tool.effect.has_side_effect:
        ctx.flush()
    _settle_limits(ctx, progress, result)
    return DONE


def _in_doubt(ctx: RunContext, progress: CallProgress, tool: Tool, why: str) -> str:
    """A side effect that overran its time: its intent is journaled, its result never will be.

    As after a crash, an idempotent tool may be called again with the same idempotency key: the
    run waits until it is resumed (or a human answers with what happened). Any other tool, or a
    run past its deadline, escalates: a human must check. Its limit reservations stay counted.
    """
    call_id = progress.call.id
    if tool.idempotent and _time_left(ctx) != 0.0:
        question = (
            f"in doubt: {why}; it may or may not have taken effect. It is idempotent: resume "
            "the run to call it again with the same idempotency key, or answer with what happened"
        )
        ctx.emit(InputRequested(kind=InputKind.IN_DOUBT, question=question, call_id=call_id))
    else:
        reason = f"in doubt: {why}; it may or may not have taken effect, so a human must check"
        ctx.emit(Escalated(reason=reason, call_id=call_id))
    ctx.flush()
    return STOP


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


async def execute_batch(ctx: RunContext, batch: list[CallProgress]) -> None:
    """Run read-only calls; several at once run concurrently."""
    if len(batch) == 1:
        results = [await _invoke(ctx, batch[0], _tool(ctx, batch[0].tool or ""))]  # type: ignore[arg-type]
    else:
        tools = [_tool(ctx, p.tool or "") for p in batch]
        results = await asyncio.gather(
            *[_invoke(ctx, p, t, threaded=True) for p, t in zip(batch, tools, strict=True)]  # type: ignore[arg-type]
        )
    for progress, result in zip(batch, results, strict=True):
        ctx.emit(result, scan=_unchecked_result(result))
        _settle_limits(ctx, progress, result)


def _reserved(held: tuple[Reservation, ...]) -> tuple[Reserved, ...]:
    return tuple(Reserved(r.name, r.key, r.window_start, r.amount) for r in held)


def _settle_limits(ctx: RunContext, progress: CallProgress, result: ToolFinished) -> None:
    """A call that failed gives back what it reserved against hard limits (after its result is
    journaled: a crash in between leaves the call counted, which errs on the safe side)."""
    held = progress.reserved
    if held:
        progress.reserved = ()
        if not result.ok:
            ctx.policy.release_limits(held)
            ctx.emit(
                LimitsReserved(call_id=result.call_id, reservations=_reserved(held), released=True)
            )


def _unchecked_result(result: ToolFinished) -> tuple[Any, Any]:
    """What of a ``tool_finished`` payload needs the secret check: the tool's output (or error)
    and a result served from an older journal beside its content. The rest is the engine's own
    (identifiers, numbers, flags)."""
    return result.content, result.result


async def _invoke(
    ctx: RunContext, progress: CallProgress, tool: Tool, *, threaded: bool = False
) -> ToolFinished:
    """A call's result (from the tool, or served by a replay or the cache), or its error.
    ``threaded``: a sync tool runs on a thread, beside others."""
    call_id = progress.call.id
    if ctx.replay is not None:  # replay or fork: results come from the journal or a simulation
        served: ToolFinished | None = ctx.replay.tool_result(tool, progress.args or {})
        if served is not None:
            return served.replace(call_id=call_id)
    cache_key = None
    if tool.cache_ttl is not None and tool.effect is Effect.READ:
        cache_key, cached = _cached_result(ctx, tool, progress.args or {})
        if cached is not None:
            return ToolFinished.from_json({**cached, "call_id": call_id, "cached": True})
    tctx = _tool_context(ctx, progress) if tool.takes_context else None
    args = (
        progress.validated if progress.validated is not None else tool.validate(progress.args or {})
    )
    started = time.perf_counter()
    ok = True
    result: Any = None
    timeout = _timeout(ctx, tool)
    timed_out = False
    try:
        result = await call_within(tool, tctx, args, timeout, inline=not threaded)
        content = result_to_text(result)
    except TimedOut:
        ok, timed_out = False, True
        content = f"{tool.name} did not finish within {timeout:g}s"
    except ToolError as exc:
        ok, content = False, str(exc)
    except Exception as exc:
        ok, content = False, f"{tool.name} failed: {type(exc).__name__}: {exc}"
    duration_ms = _elapsed_ms(started)
    limit = ctx.agent.limits.max_tool_result_chars
    whole = len(content) <= limit
    blob, chars = None, None
    if not whole:
        full = content if ctx.redact is None else ctx.redact({"c": content})["c"]
        blob, chars = ctx.store.put_blob(full), len(content)
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
        if ctx.redact is not None:
            kept = ctx.redact(kept)
        ctx.store.cache_set(key, json.dumps(kept), float(tool.cache_ttl or 0), now=ctx.clock())
