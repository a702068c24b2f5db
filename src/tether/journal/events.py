"""Journal events: one frozen dataclass per fact a run records, and the stored record around it.

The engine emits these objects; the journal stores each as a row of the ``events`` table whose
``type`` is the class's :class:`EventType` and whose ``payload`` is :meth:`EventData.to_json`.
Readers (the state fold, replay, telemetry, the CLI) get them back from :attr:`Event.data` and
``match`` on the classes. Every fact has one shape: shapes written by older versions are rewritten
on read by :mod:`tether.journal.upcast`, the only place that knows them.

A payload leaves out the fields left at an empty default (``None``, ``False``, ``()``), so the
stored JSON stays small, and a field added later with such a default reads back from older rows.
"""

from __future__ import annotations

import builtins
import dataclasses
import enum
import types
import typing
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar, NamedTuple, TypeVar

from tether.errors import JournalError
from tether.journal.jsontext import decode_json
from tether.messages import ModelResponse
from tether.policy.rules import VerdictKind
from tether.status import ApprovalStatus, RunStatus
from tether.tools import Effect

JOURNAL_FORMAT = 3
"""The format of the events this version writes, recorded in every ``run_started``.

1 and 2 (``run_started`` records no format): events as lines of text in batch rows, rewritten
into rows by migration 3. Format 1 also journaled each model request as an event of its own and
kept the system prompt beside the agent; both kept a read's proposal inside its ``tool_finished``.
3: one row per event, one shape per fact. :mod:`tether.journal.upcast` reads the older shapes."""


class EventType(StrEnum):
    RUN_STARTED = "run_started"
    RUN_RESUMED = "run_resumed"
    MODEL_REQUEST = "model_request"  # format 1 only: requests now travel with answers
    MODEL_RESPONSE = "model_response"
    MODEL_ERROR = "model_error"
    TOOL_PROPOSED = "tool_proposed"
    VALIDATION_FAILED = "validation_failed"
    POLICY_DECISION = "policy_decision"
    LIMITS_RESERVED = "limits_reserved"
    APPROVAL_REQUESTED = "approval_requested"
    APPROVAL_DECIDED = "approval_decided"
    TOOL_STARTED = "tool_started"
    TOOL_FINISHED = "tool_finished"
    FEEDBACK = "feedback"
    INPUT_REQUESTED = "input_requested"
    INPUT_RECEIVED = "input_received"
    BUDGET = "budget"
    ESCALATED = "escalated"
    RUN_FINISHED = "run_finished"


class InputKind(StrEnum):
    """Why a run waits for a human's input."""

    ASK = "ask"  # a tool asked a question (ask_human)
    FAILURES = "failures"  # too many failures in a row
    PAUSED = "paused"  # the agent's kill switch is on
    IN_DOUBT = "in_doubt"  # an idempotent side effect overran its time


class AnswerKind(StrEnum):
    """What ended a wait for input."""

    ANSWER = "answer"  # a human answered
    RETRY = "retry"  # resumed to call an in-doubt idempotent tool again
    UNPAUSED = "unpaused"  # resumed after the kill switch was turned off


class ResultForm(StrEnum):
    """How a rule reads a tool's result back from its content."""

    TEXT = "text"  # the tool returned this text
    JSON = "json"  # the content is the JSON of the data the tool returned


class Event(NamedTuple):
    """One stored journal record. ``payload_json`` is the exact stored text the hash covers.

    Immutable (a named tuple: the engine makes several per step). :attr:`data` is the typed event.
    """

    run_id: str
    seq: int
    type: str
    step: int
    ts: float
    payload_json: str
    prev_hash: str
    hash: str

    @property
    def payload(self) -> dict[str, Any]:
        """The stored JSON, as written (older formats keep their older shapes here)."""
        value: dict[str, Any] = decode_json(self.payload_json)
        return value

    @property
    def data(self) -> EventData:
        """The typed event, older shapes upcast (see :mod:`tether.journal.upcast`)."""
        from tether.journal.upcast import upcast

        return decode_event(self.type, upcast(self.type, self.payload), seq=self.seq)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "seq": self.seq,
            "type": self.type,
            "step": self.step,
            "ts": self.ts,
            "payload": self.payload,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


# -- the typed events ----------------------------------------------------------------------------

_Data = TypeVar("_Data", bound="EventData")
_Codec = typing.Callable[[Any], Any]


class _Field(NamedTuple):
    """How one field of an event type is written and read (worked out once per type)."""

    name: str
    default: Any  # _REQUIRED when the field has none
    omitted: Any  # the empty default a payload leaves out (_NEVER: always written)
    encode: _Codec | None  # value -> JSON value (None: already one)
    decode: _Codec | None  # JSON value -> value (None: already one)


@dataclass(frozen=True, slots=True, kw_only=True)
class EventData:
    """A fact a run records. Subclasses set ``type``; their fields are the payload."""

    type: ClassVar[EventType]
    _codec: ClassVar[dict[builtins.type, tuple[_Field, ...]]] = {}

    def to_json(self) -> dict[str, Any]:
        """The payload, as JSON values: every field but those left at an empty default (``None``,
        ``False``, ``()``, ``""``), which read back as that default."""
        out: dict[str, Any] = {}
        for f in _fields(type(self)):
            value = getattr(self, f.name)
            if value is f.omitted:
                continue
            out[f.name] = value if f.encode is None or value is None else f.encode(value)
        return out

    @classmethod
    def from_json(cls: builtins.type[_Data], payload: dict[str, Any]) -> _Data:
        """The event a payload of this type holds (in today's shape: see ``upcast``)."""
        known = _fields(cls)
        values: dict[str, Any] = {}
        for f in known:
            if f.name in payload:
                raw = payload[f.name]
                values[f.name] = raw if f.decode is None or raw is None else f.decode(raw)
            elif f.default is _REQUIRED:
                raise JournalError(f"{cls.type} lacks its {f.name!r}")
        if len(values) != len(payload):
            unknown = sorted(set(payload) - {f.name for f in known})
            raise JournalError(f"{cls.type} has no field {', '.join(map(repr, unknown))}")
        return cls(**values)

    def replace(self: _Data, **changes: Any) -> _Data:
        return dataclasses.replace(self, **changes)


_REQUIRED: Any = object()
_NEVER: Any = object()


def _fields(cls: type[EventData]) -> tuple[_Field, ...]:
    known = EventData._codec.get(cls)
    if known is None:
        hints = typing.get_type_hints(cls)
        out = []
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                default = _REQUIRED
            empty = default is None or default is False or default == () or default == ""
            hint = hints[f.name]
            omitted = default if empty else _NEVER
            out.append(_Field(f.name, default, omitted, _encoder(hint), _decoder(hint)))
        known = EventData._codec[cls] = tuple(out)
    return known


def _inner(hint: Any) -> Any:
    """``X`` of ``X | None``; ``hint`` itself otherwise."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        return inner[0] if len(inner) == 1 else Any
    return hint


def _encoder(hint: Any) -> _Codec | None:
    """How a value of type ``hint`` becomes a JSON value (``None``: it already is one; enums
    are ``str`` values already)."""
    hint = _inner(hint)
    if typing.get_origin(hint) is tuple:
        item = _encoder(typing.get_args(hint)[0])
        return list if item is None else (lambda value: [item(v) for v in value])
    if isinstance(hint, type):
        if issubclass(hint, EventData):
            return hint.to_json
        if hint is ModelResponse:
            return ModelResponse.to_dict
        if dataclasses.is_dataclass(hint):  # a plain record (AskedModel, Reserved)
            names = [f.name for f in dataclasses.fields(hint)]
            return lambda value: {n: getattr(value, n) for n in names}
    return None


def _decoder(hint: Any) -> _Codec | None:
    """How a JSON value becomes a value of type ``hint`` (``None``: it already is one)."""
    hint = _inner(hint)
    if typing.get_origin(hint) is tuple:
        item = _decoder(typing.get_args(hint)[0])
        return tuple if item is None else (lambda raw: tuple(item(v) for v in raw))
    if isinstance(hint, type):
        if issubclass(hint, enum.Enum):
            return hint
        if issubclass(hint, EventData):
            return hint.from_json
        if hint is ModelResponse:
            return ModelResponse.from_dict
        if dataclasses.is_dataclass(hint):  # a plain record (AskedModel, Reserved)
            return lambda raw: hint(**raw)
    return None


@dataclass(frozen=True, slots=True)
class AskedModel:
    """What a model call was sent: the model, and how many messages and tool specs."""

    model: str
    messages: int
    tools: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RunStarted(EventData):
    type = EventType.RUN_STARTED
    agent: dict[str, Any]  # the agent's snapshot; its instructions are the system prompt
    input: Any
    fingerprint: str = ""
    model: str = ""
    agent_ref: str | None = None
    policy: dict[str, Any] | None = None  # the rules and limits every resume must run under
    scopes: tuple[str, ...] = ()
    format: int = 1

    @property
    def instructions(self) -> str:
        return str(self.agent.get("instructions", ""))


@dataclass(frozen=True, slots=True, kw_only=True)
class RunResumed(EventData):
    type = EventType.RUN_RESUMED
    fingerprint: str = ""
    same_agent: bool = True
    same_policy: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelRequested(EventData):
    """Format 1: a model call, journaled before its answer (now the answer carries it)."""

    type = EventType.MODEL_REQUEST
    model: str = ""
    messages: int = 0
    tools: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelResponded(EventData):
    """A model's answer, with what it was asked; the event opens the step it carries."""

    type = EventType.MODEL_RESPONSE
    response: ModelResponse
    duration_ms: float = 0.0
    request: AskedModel | None = None  # None: format 1, where a model_request came before


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelFailed(EventData):
    type = EventType.MODEL_ERROR
    error: str
    retryable: bool = False
    status: int | None = None
    duration_ms: float = 0.0
    request: AskedModel | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolProposed(EventData):
    """A call the model proposed, validated; a plain allow is decided with it (``decision``)."""

    type = EventType.TOOL_PROPOSED
    call_id: str
    tool: str
    effect: Effect
    args: dict[str, Any]
    decision: VerdictKind | None = None
    rule: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ValidationFailed(EventData):
    """A call's arguments (``call_id`` set) or the final output did not validate."""

    type = EventType.VALIDATION_FAILED
    error: str
    call_id: str | None = None
    tool: str | None = None
    kind: str = "call"  # "call" or "output"
    feedback: str | None = None  # what the model is told (the final output's retry)


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyDecided(EventData):
    """The policy's decision on a call, unless it was a plain allow (see :class:`ToolProposed`).

    ``recheck``: edited arguments, checked again after a human edited them (``args``).
    ``observed``: what the rules read of outside state, served again on replay."""

    type = EventType.POLICY_DECISION
    call_id: str
    tool: str
    decision: VerdictKind
    rule: str | None = None
    reason: str | None = None
    observed: dict[str, Any] | None = None
    args: dict[str, Any] | None = None
    recheck: bool = False


@dataclass(frozen=True, slots=True)
class Reserved:
    """One hard limit's counter a call reserved an amount against."""

    name: str
    key: str
    window_start: int
    amount: float


@dataclass(frozen=True, slots=True, kw_only=True)
class LimitsReserved(EventData):
    """What a call reserved against hard limits (``released``: given back, the call failed).

    Journaled so that the counters can be checked against the journal (``tether verify``)."""

    type = EventType.LIMITS_RESERVED
    call_id: str
    reservations: tuple[Reserved, ...]
    released: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ApprovalRequested(EventData):
    """A call waits for a human. ``position``: the call's index in its step's turn, which with
    the run and the step identifies the call (providers may reuse call ids)."""

    type = EventType.APPROVAL_REQUESTED
    approval_id: str
    call_id: str
    tool: str
    args: dict[str, Any]
    args_hash: str
    position: int | None = None
    again: bool = False  # asked again on resume; the request itself was journaled before


@dataclass(frozen=True, slots=True, kw_only=True)
class ApprovalDecided(EventData):
    type = EventType.APPROVAL_DECIDED
    approval_id: str
    call_id: str
    status: ApprovalStatus
    by: str | None = None
    at: float | None = None
    reason: str | None = None
    edited_args: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolStarted(EventData):
    """A side effect's intent, durable before the tool runs."""

    type = EventType.TOOL_STARTED
    call_id: str
    tool: str = ""
    idempotency_key: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolFinished(EventData):
    """A call's result (``ok``) or error. ``content`` is what the model sees."""

    type = EventType.TOOL_FINISHED
    call_id: str
    ok: bool
    content: str
    duration_ms: float = 0.0
    result_form: ResultForm | None = None
    timed_out: bool = False
    cached: bool = False
    shadow: bool = False  # shadow mode: recorded for review, not executed
    simulated: bool = False  # a fork's side effect that was not executed
    full_result_blob: str | None = None  # the whole result, when content was truncated
    full_result_chars: int | None = None
    # format 1 only: the raw result beside its content, and a read's proposal carried along
    result: Any = None
    proposed: ToolProposed | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Feedback(EventData):
    """A message the engine adds for the model (``kind`` "loop": a repeated call, ``key``)."""

    type = EventType.FEEDBACK
    message: str
    kind: str = ""
    key: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class InputRequested(EventData):
    type = EventType.INPUT_REQUESTED
    kind: InputKind
    question: str
    call_id: str | None = None  # the answer stands for this call's result


@dataclass(frozen=True, slots=True, kw_only=True)
class InputReceived(EventData):
    type = EventType.INPUT_RECEIVED
    kind: AnswerKind
    answer: str = ""
    by: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class BudgetExceeded(EventData):
    type = EventType.BUDGET
    reason: str | None = None
    exceeded: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class Escalated(EventData):
    type = EventType.ESCALATED
    reason: str
    call_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RunFinished(EventData):
    type = EventType.RUN_FINISHED
    status: RunStatus
    output: Any = None
    reason: str | None = None


EVENT_CLASSES: dict[str, type[EventData]] = {
    cls.type.value: cls
    for cls in (
        RunStarted,
        RunResumed,
        ModelRequested,
        ModelResponded,
        ModelFailed,
        ToolProposed,
        ValidationFailed,
        PolicyDecided,
        LimitsReserved,
        ApprovalRequested,
        ApprovalDecided,
        ToolStarted,
        ToolFinished,
        Feedback,
        InputRequested,
        InputReceived,
        BudgetExceeded,
        Escalated,
        RunFinished,
    )
}


def decode_event(type_: str, payload: dict[str, Any], *, seq: int = 0) -> EventData:
    """The typed event of a stored ``type_`` and (upcast) payload; :class:`JournalError` names
    an unknown type or a payload that does not fit it."""
    cls = EVENT_CLASSES.get(type_)
    if cls is None:
        raise JournalError(f"event #{seq}: unknown event type {type_!r}")
    try:
        return cls.from_json(payload)
    except JournalError as exc:
        raise JournalError(f"event #{seq}: {exc}") from None
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise JournalError(f"event #{seq}: {type_} payload does not fit: {exc}") from None


# -- questions many readers ask --------------------------------------------------------------


def proposal_of(data: EventData) -> ToolProposed | None:
    """The proposed call an event records: a ``tool_proposed``, or (formats 1-2) the proposal a
    plainly allowed read carried inside its ``tool_finished``."""
    if isinstance(data, ToolProposed):
        return data
    if isinstance(data, ToolFinished):
        return data.proposed
    return None


def decision_of(data: EventData) -> PolicyDecided | ToolProposed | None:
    """The policy decision an event records: a ``policy_decision``, or the plain allow a
    proposal carries (``decision`` set)."""
    if isinstance(data, PolicyDecided):
        return data
    proposed = proposal_of(data)
    return proposed if proposed is not None and proposed.decision is not None else None


def request_of(data: EventData) -> AskedModel | None:
    """What a model call was sent, if the event records one: the ``request`` of a model's answer
    or error, or (format 1) a ``model_request``."""
    if isinstance(data, ModelRequested):
        return AskedModel(data.model, data.messages, data.tools)
    if isinstance(data, ModelResponded | ModelFailed):
        return data.request
    return None


def asked_at(ts: float, data: EventData) -> float:
    """When the model call (or tool call) an event records began: its time less its
    ``duration_ms``, if it has one."""
    return ts - float(getattr(data, "duration_ms", 0.0) or 0.0) / 1000


__all__ = [
    "JOURNAL_FORMAT",
    "AnswerKind",
    "ApprovalDecided",
    "ApprovalRequested",
    "AskedModel",
    "BudgetExceeded",
    "Escalated",
    "Event",
    "EventData",
    "EventType",
    "Feedback",
    "InputKind",
    "InputReceived",
    "InputRequested",
    "LimitsReserved",
    "ModelFailed",
    "ModelRequested",
    "ModelResponded",
    "PolicyDecided",
    "Reserved",
    "ResultForm",
    "RunFinished",
    "RunResumed",
    "RunStarted",
    "ToolFinished",
    "ToolProposed",
    "ToolStarted",
    "ValidationFailed",
    "asked_at",
    "decision_of",
    "decode_event",
    "proposal_of",
    "request_of",
]
