"""The end of a run: the final answer validated (against the output type and the agent's
validators, with retries the model is told about), or the run finished with a status."""

from __future__ import annotations

from typing import Any

import pydantic

from tether.engine.context import RunContext
from tether.engine.decisions import short_validation_error
from tether.journal.events import BudgetExceeded, RunFinished, ValidationFailed
from tether.messages import ModelResponse
from tether.status import RunStatus


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
    """A final answer: the run succeeds with it, or the model is told why not and tries again
    (up to ``max_output_retries``), or the run fails."""
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
        return None, short_validation_error(exc)
    return value.model_dump(mode="json"), None


def _run_validators(ctx: RunContext, output: Any) -> str | None:
    for validator in ctx.agent.output_validators:
        try:
            validator(output)
        except (ValueError, AssertionError, TypeError) as exc:
            return str(exc) or type(exc).__name__
    return None
