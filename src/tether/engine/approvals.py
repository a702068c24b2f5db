"""The approval gate: a call the policy sends to a human waits until one approves, edits or
rejects it; edited arguments are validated and decided by the same policy again.

The approval row is written with the ``approval_requested`` event, in one transaction, and
bound to the run, the step and the call's position in the step's turn. The run consumes the
decision once: a replayed or duplicated approval is refused.
"""

from __future__ import annotations

import uuid
from typing import Any

import pydantic

from tether.engine.context import RunContext
from tether.engine.decisions import Outcome, decided, invalid, proposal, short_validation_error
from tether.engine.state import CallProgress, CallStage
from tether.journal.events import ApprovalDecided, ApprovalRequested, Escalated
from tether.journal.store import ApprovalRecord, args_hash
from tether.policy.rules import VerdictKind
from tether.status import ApprovalStatus, RunStatus
from tether.tools import Tool


async def approval_gate(ctx: RunContext, call: CallProgress, tool: Tool) -> Outcome | None:
    if call.decision is not VerdictKind.APPROVE or call.stage >= CallStage.APPROVED:
        return None
    assert call.args is not None
    s = ctx.state
    if call.approval_id is None:
        record = _request(ctx, call, tool)
        ctx.approvals.append(record)  # written with the event that asks for it
        ctx.emit(_requested(record))
        return Outcome.WAIT
    record = await ctx.io(ctx.store.get_approval, call.approval_id)
    if record.status == ApprovalStatus.PENDING:
        if s.status is RunStatus.RUNNING:  # resumed before anyone decided: still waiting
            ctx.emit(_requested(record, again=True))
        return Outcome.WAIT
    if record.args_hash != args_hash(call.args):
        reason = f"approval {record.id} does not match the call's arguments"
        ctx.emit(Escalated(reason=reason, call_id=call.call.id))
        return Outcome.STOP
    edited = record.edited_args if record.status == ApprovalStatus.EDITED else None
    ctx.emit(
        ApprovalDecided(
            approval_id=record.id,
            call_id=call.call.id,
            status=ApprovalStatus(record.status),
            by=record.decided_by,
            at=record.decided_at,
            reason=record.decision_reason,
            edited_args=edited,
        )
    )
    await ctx.flush()
    if not await ctx.io(ctx.store.consume_approval, record.id):
        ctx.emit(Escalated(reason=f"approval {record.id} was already used", call_id=call.call.id))
        return Outcome.STOP
    if record.status == ApprovalStatus.REJECTED:
        return Outcome.DONE
    return None if edited is None else _recheck(ctx, call, tool, edited)


def _recheck(
    ctx: RunContext, call: CallProgress, tool: Tool, edited: dict[str, Any]
) -> Outcome | None:
    """Edited arguments are validated and decided by the policy again (a human can't bypass
    rules); the human has just approved these exact arguments, so "approve" means allow."""
    try:
        call.validated = tool.validate(edited)
    except pydantic.ValidationError as exc:
        why = short_validation_error(exc)
        return invalid(ctx, call, f"edited arguments are invalid: {why}")
    call.args = call.validated.model_dump(mode="json")
    asked = proposal(ctx, call, tool)
    verdict = ctx.policy.decide(ctx.agent, asked)
    kind = VerdictKind.ALLOW if verdict.kind is VerdictKind.APPROVE else verdict.kind
    return decided(
        ctx, call, tool, kind, verdict.decision, observed=asked.observed, edited=call.args
    )


def _request(ctx: RunContext, call: CallProgress, tool: Tool) -> ApprovalRecord:
    s = ctx.state
    assert call.args is not None
    return ApprovalRecord(
        id=uuid.uuid4().hex,
        run_id=s.run_id,
        agent=ctx.agent.name,
        call_id=call.call.id,
        step=s.step,
        position=s.calls.index(call),
        tool=tool.name,
        args=call.args,
        args_hash=args_hash(call.args),
        reason=call.decision_reason or "approval required",
        rule=call.decision_rule,
        status=ApprovalStatus.PENDING,
        requested_by=None,
        decided_by=None,
        decided_at=None,
        edited_args=None,
        decision_reason=None,
        consumed_at=None,
        created_at=ctx.clock(),
    )


def _requested(record: ApprovalRecord, *, again: bool = False) -> ApprovalRequested:
    return ApprovalRequested(
        approval_id=record.id,
        call_id=record.call_id,
        tool=record.tool,
        args=record.args,
        args_hash=record.args_hash,
        position=record.position,
        again=again,
    )


__all__ = ["approval_gate"]
