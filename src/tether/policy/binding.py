"""Which policy a run runs under: a content hash of its rules and limits, and where they came from.

A run records, in its ``run_started`` event, the hash of the runtime's rules and limits (those a
process passes to ``Runtime(rules=..., limits=...)``, e.g. from ``--policy FILE``), the files they
were read from, and the hash of the agent's own policy. Every process that resumes the run, or
re-checks an edited call, must run under the same rules: a limit or a cap that one process
enforces and another forgets is no limit at all.

The hash is taken over a stable description of each rule and limit: its name, the tools and
effects it applies to, and what it checks -- the file entry for rules and limits read from a
policy file (so a changed cap changes the hash), the qualified name of the function for rules
written in Python.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tether.policy.rules import Limit, Rule


def _qualname(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__name__)}"


def describe(item: Rule | Limit) -> str:
    """One line that changes whenever what the rule or limit decides may change."""
    if isinstance(item, Rule):
        tools = "*" if item.tools is None else ",".join(sorted(item.tools))
        effects = "*" if item.effects is None else ",".join(sorted(e.value for e in item.effects))
        check = item.spec or _qualname(item.check)
        return f"rule {item.name} tools={tools} effects={effects} check={check}"
    if item.spec:
        return f"limit {item.name} {item.spec}"
    return (
        f"limit {item.name} tools={','.join(sorted(item.tools))} window={item.window_seconds} "
        f"max_count={item.max_count} max_total={item.max_total} decision={item.decision.value} "
        f"key={_qualname(item.key)} amount={_qualname(item.amount)}"
    )


def digest(items: Sequence[Any]) -> str:
    """``sha256:<hex>`` of the descriptions of the rules and limits among ``items``, in order."""
    lines = [describe(x) for x in items if isinstance(x, Rule | Limit)]
    return "sha256:" + hashlib.sha256("\n".join(lines).encode()).hexdigest()


EMPTY = digest(())


@dataclass(slots=True, frozen=True)
class PolicyRecord:
    """The policy a run started under, as its ``run_started`` event records it."""

    digest: str  # the runtime's rules and limits
    sources: tuple[str, ...] = ()  # the policy files they were read from (absolute paths)
    agent_digest: str = EMPTY  # the agent's own rules and limits

    def to_dict(self) -> dict[str, Any]:
        return {"digest": self.digest, "sources": list(self.sources),
                "agent_digest": self.agent_digest}  # fmt: skip

    @classmethod
    def from_dict(cls, data: Any) -> PolicyRecord | None:
        """The record in a ``run_started`` payload (``None`` for runs that predate it)."""
        if not isinstance(data, dict) or not isinstance(data.get("digest"), str):
            return None
        sources = tuple(str(s) for s in data.get("sources") or ())
        return cls(data["digest"], sources, str(data.get("agent_digest") or EMPTY))


def sources(items: Sequence[Rule | Limit]) -> tuple[str, ...]:
    """The files the rules and limits were read from, in first-seen order."""
    seen: dict[str, None] = {}
    for x in items:
        if x.origin:
            seen.setdefault(x.origin, None)
    return tuple(seen)
