"""Agents: plain data describing what to run.

Part of the author-facing API: imports nothing from the runtime, store or server.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson
import pydantic

from tether.tools import Tool


class Autonomy(StrEnum):
    """How much a tool may do on its own for an agent."""

    SHADOW = "shadow"  # journal the proposed call, never execute it
    APPROVE = "approve"  # every call waits for a human
    AUTO = "auto"  # the policy alone decides


@dataclass(slots=True, frozen=True)
class Limits:
    """Per-run limits (and one per agent per day: ``max_cost_usd_per_day``). ``None`` = unlimited.

    Budgets are checked before each model call with an estimate and after it with the actual
    figures, so a run never overshoots a budget by more than one call. The daily cap is shared
    by all runs of the agent in every process: each call reserves its estimated cost on a
    counter in the store atomically before it is made (refused past the cap), then settles it
    to the real cost, or gives it back if the call failed; concurrent runs overshoot the cap
    only by what calls cost beyond their estimates.
    """

    max_steps: int = 20
    max_input_tokens: int | None = None
    max_output_tokens: int | None = None
    max_cost_usd: float | None = None
    max_cost_usd_per_day: float | None = None
    deadline_seconds: float | None = None
    max_tool_result_chars: int = 100_000
    max_output_retries: int = 2
    max_consecutive_failures: int = 3
    max_repeats: int = 3

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


OutputValidator = Callable[[Any], None]

DEFAULT_TOOL_TIMEOUT = 300.0
"""Seconds a tool call may take by default (``Agent.tool_timeout``): a tool that never returns
must not hold a run forever."""


_fingerprints: dict[bytes, str] = {}  # a snapshot as orjson writes it -> its fingerprint


@dataclass(slots=True)
class Agent:
    """An agent: instructions, tools, limits and an optional structured output.

    Args:
        name: stable identifier, used for runs, limits and autonomy.
        instructions: the system prompt.
        tools: the tools it may call.
        version: bump it when behaviour changes; journaled with every run.
        limits: steps, tokens, dollars, deadline.
        output_type: a pydantic model the final answer must validate against (JSON text).
        output_validators: extra checks on the parsed output; raise ``ValueError`` to reject.
        policy: rules checked on every proposed tool call (see :mod:`tether.policy`).
        autonomy: per-tool autonomy; tools not listed are ``auto``.
        model: a model spec (``"local"``, ``"openai:gpt-4o-mini"``...) or a Model object;
            ``None`` lets the runtime choose.
        deps_factory: builds the object tools receive as ``ctx.deps`` (a database handle...),
            called when a run starts or resumes, unless the runtime was given ``deps``.
        tool_timeout: seconds a tool call may take unless the tool sets its own ``timeout``
            (``None``: no limit); ``limits.deadline_seconds`` bounds tool calls too. A read
            that overruns becomes an error the model sees. A write or irreversible call that
            overruns is in doubt, as after a crash: its intent is journaled, its result is not;
            the run escalates to a human, or, for an idempotent tool, waits until it is resumed
            (which calls the tool again with the same idempotency key) or answered.
    """

    name: str
    instructions: str
    tools: Sequence[Tool] = ()
    version: str = "1"
    limits: Limits = field(default_factory=Limits)
    output_type: type[pydantic.BaseModel] | None = None
    output_validators: Sequence[OutputValidator] = ()
    policy: Sequence[Any] = ()
    autonomy: dict[str, Autonomy | str] = field(default_factory=dict)
    model: Any = None
    deps_factory: Callable[[], Any] | None = None
    tool_timeout: float | None = DEFAULT_TOOL_TIMEOUT

    def __post_init__(self) -> None:
        if self.tool_timeout is not None and not self.tool_timeout > 0:
            raise ValueError(f"agent {self.name}: tool_timeout must be a number of seconds > 0")
        names = [t.name for t in self.tools]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"agent {self.name}: duplicate tool names {sorted(dupes)}")
        for tool_name, level in self.autonomy.items():
            Autonomy(level)  # raises ValueError on a bad level
            if tool_name not in names:
                raise ValueError(f"agent {self.name}: autonomy names unknown tool {tool_name!r}")

    def tool(self, name: str) -> Tool | None:
        """The tool of this name, or ``None``."""
        for t in self.tools:
            if t.name == name:
                return t
        return None

    def autonomy_for(self, tool_name: str) -> Autonomy:
        return Autonomy(self.autonomy.get(tool_name, Autonomy.AUTO))

    def tool_specs(self) -> list[dict[str, Any]]:
        return [t.spec() for t in self.tools]

    def output_schema(self) -> dict[str, Any] | None:
        return None if self.output_type is None else self.output_type.model_json_schema()

    def snapshot(self) -> dict[str, Any]:
        """Everything about the agent that shapes a run, as JSON-able data."""
        return {
            "name": self.name,
            "version": self.version,
            "instructions": self.instructions,
            "tools": [{**t.spec(), "effect": t.effect.value} for t in self.tools],
            "limits": self.limits.to_dict(),
            "output_schema": self.output_schema(),
            "autonomy": {k: Autonomy(v).value for k, v in sorted(self.autonomy.items())},
        }

    def fingerprint(self, snapshot: dict[str, Any] | None = None) -> str:
        """A hash of :meth:`snapshot`: equal fingerprints mean the same prompt and tools.

        Pass a snapshot just taken to hash that instead of taking another. The hash is taken
        over the snapshot as compact JSON with sorted keys (UTF-8).
        """
        data = self.snapshot() if snapshot is None else snapshot
        try:
            # the snapshot as it is (cheaper to write than sorted): the key of a process-wide
            # cache, since runs of one agent hash the same snapshot again and again
            key = orjson.dumps(data)
        except TypeError:  # what orjson refuses (integers beyond 64 bits)
            text = json.dumps(
                data, sort_keys=True, separators=(",", ":"), ensure_ascii=False
            ).encode()
            return hashlib.sha256(text).hexdigest()
        known = _fingerprints.get(key)
        if known is None:
            text = orjson.dumps(data, option=orjson.OPT_SORT_KEYS)
            known = hashlib.sha256(text).hexdigest()
            if len(_fingerprints) >= 256:
                _fingerprints.clear()
            _fingerprints[key] = known
        return known

    def has_fingerprint(self, fingerprint: str) -> bool:
        """Whether this agent is the one a run recorded with ``fingerprint`` (also as older
        versions wrote it: the standard library's ASCII-escaped JSON)."""
        snapshot = self.snapshot()
        if self.fingerprint(snapshot) == fingerprint:
            return True
        legacy = json.dumps(snapshot, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(legacy.encode()).hexdigest() == fingerprint
