"""Checking arguments a human edits at approval time, before the approval is recorded.

The run re-checks edited arguments when it resumes (a human cannot bypass the rules), but by then
the approval is used up: a typo in an edit would turn into a failed call the human can no longer
correct. So the same checks run first, as a dry run, while the approval is still pending: the
tool's schema, then the policy the run started under on the edited proposal. Nothing is journaled
and no limit is counted here; limits are counted when the call executes.
"""

from __future__ import annotations

from typing import Any

import pydantic

from tether.agent import Agent
from tether.engine.state import RunState
from tether.errors import InvalidEdit
from tether.journal.store import ApprovalRecord
from tether.policy.pipeline import PolicyEngine
from tether.policy.rules import DecisionKind


def check_edit(
    record: ApprovalRecord,
    edit: dict[str, Any],
    agent: Agent,
    policy: PolicyEngine,
    state: RunState,
    deps: Any,
) -> dict[str, Any]:
    """The edited arguments as the tool validates them; :class:`InvalidEdit` when the schema
    or the policy refuses them (the message says why and that the approval is still pending)."""
    pending = f"approval {record.id[:12]} is still pending"
    tool = agent.tool(record.tool)
    if tool is None:
        raise InvalidEdit(f"agent {agent.name} has no tool {record.tool!r}; {pending}")
    try:
        validated = tool.validate(edit).model_dump(mode="json")
    except pydantic.ValidationError as exc:
        raise InvalidEdit(
            f"edited arguments for {tool.name} are invalid: {_errors(exc)}; {pending}"
        ) from None
    proposal = state.proposal(tool, validated, agent=agent.name, deps=deps)
    decision = policy.decide(agent, proposal).decision
    if decision.kind in (DecisionKind.DENY, DecisionKind.ESCALATE):
        raise InvalidEdit(
            f"the policy would {decision.kind.value} the edited {tool.name} call "
            f"({decision.rule}: {decision.reason}); {pending}"
        )
    return validated


def _errors(exc: pydantic.ValidationError) -> str:
    parts = [f"{'.'.join(str(x) for x in e['loc']) or '(root)'}: {e['msg']}"
             for e in exc.errors()[:5]]  # fmt: skip
    return "; ".join(parts)
