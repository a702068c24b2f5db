"""Policy rules: the author-facing half of the policy pipeline.

A rule is a function of a :class:`Proposal` (one validated tool call, with what the run has done so
far) that returns a :class:`Decision` or ``None`` (no opinion):

    @rule("refund-cap", tools=["refund"])
    def refund_cap(p: Proposal) -> Decision | None:
        if p.args["amount"] > 200:
            return Decision.deny("refunds over $200 need a supervisor")
        return None

Decisions combine by severity: escalate > deny > approve > allow. When no rule decides, the tool's
effect decides: read and write are allowed, irreversible waits for approval; a rule's explicit
allow decides a read or a write, and an irreversible call only where the operator set the tool's
autonomy to ``auto``. The agent's autonomy for the tool applies last (docs/policy.md has the whole
table).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

import orjson

from tether.messages import Message
from tether.tools import Effect

T = TypeVar("T")


class DecisionKind(StrEnum):
    ALLOW = "allow"
    APPROVE = "approve"
    DENY = "deny"
    ESCALATE = "escalate"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]


class VerdictKind(StrEnum):
    """What the engine does with a proposed call, as journaled: a rule's decision, or
    ``shadow`` (journaled for review, never executed)."""

    ALLOW = "allow"
    APPROVE = "approve"
    DENY = "deny"
    ESCALATE = "escalate"
    SHADOW = "shadow"


_SEVERITY = {
    DecisionKind.ALLOW: 0,
    DecisionKind.APPROVE: 1,
    DecisionKind.DENY: 2,
    DecisionKind.ESCALATE: 3,
}


@dataclass(slots=True, frozen=True)
class Decision:
    """What the policy says of a proposed call, and which rule said it."""

    kind: DecisionKind
    reason: str = ""
    rule: str = ""

    @classmethod
    def allow(cls, reason: str = "") -> Decision:
        return cls(DecisionKind.ALLOW, reason)

    @classmethod
    def deny(cls, reason: str) -> Decision:
        """Refuse the call; the reason goes back to the model."""
        return cls(DecisionKind.DENY, reason)

    @classmethod
    def approve(cls, reason: str) -> Decision:
        """Pause the run until a human approves, edits or rejects the call."""
        return cls(DecisionKind.APPROVE, reason)

    @classmethod
    def escalate(cls, reason: str) -> Decision:
        """Stop the run and hand it to a human."""
        return cls(DecisionKind.ESCALATE, reason)

    def by(self, rule: str) -> Decision:
        return Decision(self.kind, self.reason, rule)

    def to_dict(self) -> dict[str, str]:
        return {"decision": self.kind.value, "reason": self.reason, "rule": self.rule}


class CallOutcome(StrEnum):
    """How a proposed call ended: it ran (``ok`` or ``failed``) or it never ran."""

    OK = "ok"
    FAILED = "failed"  # the tool ran and reported an error
    DENIED = "denied"  # a rule or a limit refused it
    REJECTED = "rejected"  # a human rejected it at approval time
    INVALID = "invalid"  # its arguments did not validate (or the tool does not exist)


class PastCall:
    """A tool call this run already made, as rules see it: the tool, its arguments, whether it
    succeeded, and its ``result`` (``None`` for a failed call). ``outcome`` says how it ended
    and ``reason`` why it did not run, for calls in :attr:`Proposal.refused`.

    A result the journal holds as JSON text is decoded when a rule first reads it (most runs
    have no rule that looks back)."""

    __slots__ = ("_json", "_result", "args", "ok", "outcome", "reason", "tool")

    def __init__(
        self,
        tool: str,
        args: dict[str, Any],
        ok: bool,
        result: Any = None,
        *,
        outcome: CallOutcome | None = None,
        reason: str = "",
    ) -> None:
        self.tool = tool
        self.args = args
        self.ok = ok
        self._result = result
        self._json: str | None = None
        self.outcome = outcome or (CallOutcome.OK if ok else CallOutcome.FAILED)
        self.reason = reason

    @classmethod
    def from_json(cls, tool: str, args: dict[str, Any], ok: bool, text: str) -> PastCall:
        """A call whose result is the value ``text`` (JSON) encodes, decoded on first use."""
        call = cls(tool, args, ok)
        call._json = text
        return call

    @property
    def result(self) -> Any:
        text = self._json
        if text is not None:
            try:
                self._result = orjson.loads(text)
            except orjson.JSONDecodeError:  # what orjson refuses (NaN, integers beyond 64 bits)
                self._result = json.loads(text)
            self._json = None
        return self._result

    def _key(self) -> tuple[str, dict[str, Any], bool, Any]:
        return (self.tool, self.args, self.ok, self.result)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PastCall):
            return NotImplemented
        return self._key() == other._key()

    __hash__ = None  # type: ignore[assignment]  # (its arguments are a dict)

    def __repr__(self) -> str:
        return (
            f"PastCall(tool={self.tool!r}, args={self.args!r}, ok={self.ok!r}, "
            f"result={self.result!r})"
        )


@dataclass(slots=True)
class Proposal:
    """One proposed, schema-valid tool call, with the context a rule may need.

    What the run did so far, all folded from its journal (so a replay shows a rule exactly what
    the run showed it): ``history``, the calls that ran, in order; ``refused``, the calls that
    never ran (denied, rejected by a human, invalid); ``messages``, the conversation (the system
    prompt, the input, the model's turns, tool results, feedback and human answers); ``answers``,
    what humans answered, in order. These are read-only views: a rule must not change them.
    Outside state (a database, a clock) is read through :meth:`observe`; ``deps`` is not
    available when a run is replayed.
    """

    tool: str
    effect: Effect
    args: dict[str, Any]
    agent: str
    run_id: str
    run_input: Any = None
    history: Sequence[PastCall] = ()
    deps: Any = None
    scopes: frozenset[str] = frozenset()
    observed: dict[str, Any] = field(default_factory=dict)
    recorded: dict[str, Any] | None = None
    messages: Sequence[Message] = ()
    refused: Sequence[PastCall] = ()
    answers: Sequence[str] = ()

    def observe(self, key: str, read: Callable[[], T]) -> T:
        """Read outside state for a rule (an order's status, a balance) through the journal.

        The value is journaled with the decision, and an exact replay serves it back, so a rule
        that reads state decides the same way on replay even though the world has moved on.
        ``key`` names what was read, including its id (``"orders/#W123"``); the value must be
        JSON-serialisable.
        """
        if self.recorded is not None and key in self.recorded:
            value: T = self.recorded[key]
        else:
            value = read()
        self.observed[key] = value
        return value

    def succeeded(self, tool: str) -> list[PastCall]:
        """Earlier successful calls of ``tool`` in this run."""
        return [c for c in self.history if c.tool == tool and c.ok]

    def failed(self) -> list[PastCall]:
        """Earlier calls that ran and failed."""
        return [c for c in self.history if not c.ok]

    def denied(self) -> list[PastCall]:
        """Earlier calls a rule or a limit refused."""
        return [c for c in self.refused if c.outcome is CallOutcome.DENIED]

    def said(self, role: str = "user") -> list[str]:
        """The text of the conversation's messages of ``role`` (``"user"``: the input, feedback
        and answers to general questions; ``"assistant"``: the model's text), in order."""
        return [m.content for m in self.messages if m.role == role]


RuleFunction = Callable[[Proposal], "Decision | None"]


@dataclass(slots=True, frozen=True)
class Rule:
    """A named check, optionally limited to some tools or effects."""

    name: str
    check: RuleFunction
    tools: frozenset[str] | None = None
    effects: frozenset[Effect] | None = None
    # what the check compares, for rules built from data (a policy file entry); with ``origin``
    # (the file it came from) it lets a run record exactly which policy it ran under
    spec: str = ""
    origin: str = ""

    def applies_to(self, proposal: Proposal) -> bool:
        if self.tools is not None and proposal.tool not in self.tools:
            return False
        return self.effects is None or proposal.effect in self.effects

    def evaluate(self, proposal: Proposal) -> Decision | None:
        if not self.applies_to(proposal):
            return None
        decision = self.check(proposal)
        return None if decision is None else decision.by(self.name)


def rule(
    name: str,
    *,
    tools: Sequence[str] | None = None,
    effects: Sequence[Effect | str] | None = None,
) -> Callable[[RuleFunction], Rule]:
    """Declare a rule; ``tools``/``effects`` restrict which calls it sees."""

    def wrap(fn: RuleFunction) -> Rule:
        return Rule(
            name=name,
            check=fn,
            tools=None if tools is None else frozenset(tools),
            effects=None if effects is None else frozenset(Effect(e) for e in effects),
        )

    return wrap


def arg_rule(
    name: str,
    *,
    tool: str,
    check: Callable[[dict[str, Any]], bool],
    reason: str,
    decision: DecisionKind = DecisionKind.DENY,
) -> Rule:
    """A least-privilege argument rule: when ``check(args)`` is false, deny (or other kind)."""

    def fn(p: Proposal) -> Decision | None:
        if check(p.args):
            return None
        return Decision(decision, reason)

    return Rule(name=name, check=fn, tools=frozenset([tool]))


@dataclass(slots=True, frozen=True)
class Limit:
    """A hard limit across runs: a counter per key and window, enforced atomically in the store.

    ``max_count`` caps the number of calls, ``max_total`` the sum of ``amount(proposal)``.
    ``key(proposal)`` chooses the counter (e.g. the customer id); the agent name is always part of
    the key. ``window_seconds`` is a fixed window (86,400 for "per day").
    """

    name: str
    tools: frozenset[str]
    window_seconds: int = 86_400
    max_count: int | None = None
    max_total: float | None = None
    key: Callable[[Proposal], str] = field(default=lambda p: "*")
    amount: Callable[[Proposal], float] = field(default=lambda p: 1.0)
    decision: DecisionKind = DecisionKind.DENY
    spec: str = ""  # as for :class:`Rule`: the file entry it was built from, and the file
    origin: str = ""


def default_decision(effect: Effect) -> Decision:
    """The decision when no rule speaks: irreversible calls wait for a human."""
    return _DEFAULTS[effect]


_DEFAULTS = {
    effect: Decision(DecisionKind.APPROVE, "irreversible actions need a human", "effect-default")
    if effect is Effect.IRREVERSIBLE
    else Decision(DecisionKind.ALLOW, f"{effect.value} tool", "effect-default")
    for effect in Effect
}


def combine(decisions: Sequence[Decision]) -> Decision:
    """The most severe decision wins; ties keep the first."""
    best = decisions[0]
    for d in decisions[1:]:
        if d.kind.severity > best.kind.severity:
            best = d
    return best
