"""Serving a recorded run back to the engine: its model responses and tool results."""

from __future__ import annotations

import json
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

from tether.engine.state import RunState
from tether.errors import ReplayDivergence
from tether.journal.chain import GENESIS
from tether.journal.events import (
    AnswerKind,
    ApprovalDecided,
    ApprovalRequested,
    Event,
    InputReceived,
    ModelResponded,
    PolicyDecided,
    RunStarted,
    ToolFinished,
    proposal_of,
    request_of,
)
from tether.messages import ModelRequest, ModelResponse
from tether.models.base import Model
from tether.tools import Tool

Divergence = ReplayDivergence
"""The replay's name for :class:`tether.errors.ReplayDivergence`."""


def _key(tool: str, args: dict[str, Any]) -> str:
    return tool + json.dumps(args, sort_keys=True, separators=(",", ":"), default=str)


@dataclass(slots=True)
class Recording:
    """What a run saw, indexed for replay: one entry per model call, results per exact call."""

    run_id: str
    events: list[Event]
    responses: list[ModelResponse] = field(default_factory=list)
    prompts: list[list[dict[str, Any]]] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    results: dict[str, deque[ToolFinished]] = field(default_factory=lambda: defaultdict(deque))
    approvals: dict[str, deque[ApprovalDecided]] = field(default_factory=lambda: defaultdict(deque))
    answers: deque[str] = field(default_factory=deque)
    observed: dict[str, dict[str, Any]] = field(default_factory=dict)
    run_input: Any = None
    scopes: tuple[str, ...] = ()  # the permissions the run was granted

    @classmethod
    def from_events(cls, run_id: str, events: list[Event]) -> Recording:
        rec = cls(run_id, events)
        state = RunState(run_id=run_id, last_hash=GENESIS)
        calls: dict[str, str] = {}
        approval_keys: dict[str, str] = {}
        for ev in events:
            data = ev.data
            if request_of(data) is not None:  # what the model was sent: the state so far
                rec.prompts.append([m.to_dict() for m in state.messages])
                rec.steps.append(ev.step)
            state.apply(ev, data)
            proposed = proposal_of(data)
            if proposed is not None:
                calls[proposed.call_id] = _key(proposed.tool, proposed.args)
            match data:
                case RunStarted():
                    rec.run_input = data.input
                    rec.scopes = data.scopes
                case ModelResponded():
                    rec.responses.append(data.response)
                case PolicyDecided():
                    if data.args is not None:  # edited arguments, checked again
                        calls[data.call_id] = _key(data.tool, data.args)
                    if data.observed:
                        rec.observed.setdefault(data.call_id, {}).update(data.observed)
                case ApprovalRequested():
                    approval_keys[data.call_id] = _key(data.tool, data.args)
                case ApprovalDecided() if data.call_id in approval_keys:
                    rec.approvals[approval_keys[data.call_id]].append(data)
                case InputReceived(kind=AnswerKind.ANSWER):
                    rec.answers.append(data.answer)
            if isinstance(data, ToolFinished) and data.call_id in calls:
                # the result alone: a read's proposal journaled with it is not served again
                rec.results[calls[data.call_id]].append(data.replace(proposed=None))
        return rec

    def result_for(self, tool: str, args: dict[str, Any]) -> ToolFinished | None:
        queue = self.results.get(_key(tool, args))
        return queue.popleft() if queue else None

    def approval_for(self, tool: str, args: dict[str, Any]) -> ApprovalDecided | None:
        queue = self.approvals.get(_key(tool, args))
        return queue.popleft() if queue else None


class JournalModel:
    """Answers model calls from a recording.

    ``strict``: the prompt must equal the recorded one (exact replay). ``live_from_call``: from
    that model call on (0-based), a live model answers instead (a fork).
    """

    def __init__(
        self,
        recording: Recording,
        *,
        strict: bool = True,
        live: Model | None = None,
        live_from_call: int | None = None,
    ) -> None:
        self.recording = recording
        self.strict = strict
        self.live = live
        self.live_from_call = live_from_call
        self.calls = 0

    @property
    def name(self) -> str:
        return "journal" if self.live is None else f"journal+{self.live.name}"

    async def request(self, request: ModelRequest) -> ModelResponse:
        index = self.calls
        self.calls += 1
        if self.live_from_call is not None and index >= self.live_from_call:
            assert self.live is not None
            return await self.live.request(request)
        rec = self.recording
        if index >= len(rec.responses):
            raise Divergence(
                index + 1,
                "the replay makes more model calls than the recording",
                f"{len(rec.responses)} model calls",
                "one more",
            )
        if self.strict:
            sent = [m.to_dict() for m in request.messages]
            recorded = rec.prompts[index]
            if sent != recorded:
                i = next(
                    (i for i, (a, b) in enumerate(zip(recorded, sent, strict=False)) if a != b),
                    min(len(sent), len(recorded)),
                )
                raise Divergence(
                    rec.steps[index],
                    f"the prompt differs at message {i}",
                    recorded[i] if i < len(recorded) else None,
                    sent[i] if i < len(sent) else None,
                )
        return rec.responses[index]


class ReplayTools:
    """Serves tool results from a recording; in a fork, simulates side effects it lacks."""

    def __init__(self, recording: Recording, *, strict: bool, live_reads: bool = False) -> None:
        self.recording = recording
        self.strict = strict
        self.live_reads = live_reads
        self.simulated = 0
        self.live = 0

    def observations(self, call_id: str) -> dict[str, Any] | None:
        """What the rules read of outside state when deciding this call, as recorded."""
        return self.recording.observed.get(call_id)

    def tool_result(self, tool: Tool, args: dict[str, Any]) -> ToolFinished | None:
        recorded = self.recording.result_for(tool.name, args)
        if recorded is not None and not (self.live_reads and not tool.effect.has_side_effect):
            return recorded
        if self.strict:
            raise Divergence(
                0,
                f"no recorded result for {tool.name}({json.dumps(args)})",
                None,
                {"tool": tool.name, "args": args},
            )
        if not tool.effect.has_side_effect:
            self.live += 1
            return None  # a read runs live in a fork
        self.simulated += 1
        return ToolFinished(
            call_id="",  # the engine sets the call's id
            ok=True,
            simulated=True,
            content=f"[simulated in a fork: {tool.name} ({tool.effect.value}) was not "
            "executed; no recorded result for these arguments]",
        )
