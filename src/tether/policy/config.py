"""Policy files: hard limits and simple argument rules that operators change without code.

    policy = load_policy("policy.toml")          # or .yaml / .yml
    runtime = Runtime(store, rules=policy.rules, limits=policy.limits)

A file has two lists, ``limit`` and ``rule`` (``[[limit]]`` / ``[[rule]]`` tables in TOML, lists
under ``limit:`` / ``rule:`` in YAML):

    [[limit]]
    name = "refunds-per-customer"
    tools = ["refund"]
    per = "user_id"          # argument whose value keys the counter; omit for one per agent
    max_count = 3
    window = "1d"            # 30s, 15m, 2h, 1d

    [[rule]]
    name = "refund-cap"
    tool = "refund"
    arg = "amount"
    max = 200                # also: min, one_of, not_one_of, pattern
    decision = "deny"        # or escalate / approve
    reason = "refunds over $200 need a supervisor"

Every entry is validated; a mistake raises :class:`~tether.errors.UsageError` naming the file, the
entry and the problem. Rules fail closed: an argument that is missing or of the wrong type to be
compared counts as breaking the rule. See ``docs/policy.md``.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeGuard

import pydantic
import yaml

from tether.errors import UsageError
from tether.policy.rules import DecisionKind, Limit, Proposal, Rule, arg_rule

__all__ = ["PolicyConfig", "load_policy", "parse_policy", "parse_window"]

_UNITS = {"s": 1, "m": 60, "h": 3_600, "d": 86_400}
_WINDOW = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
_MISSING = "<missing>"


def parse_window(text: str) -> int:
    """``"30s"``, ``"15m"``, ``"2h"`` or ``"1d"`` in seconds; ``ValueError`` otherwise."""
    match = _WINDOW.match(text) if isinstance(text, str) else None
    seconds = 0 if match is None else int(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise ValueError(f"window {text!r} is not a duration like 30s, 15m, 2h or 1d")
    return seconds


# -- the file's schema ---------------------------------------------------------------------------


class _Entry(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", strict=True, frozen=True)

    name: str = pydantic.Field(min_length=1)


class LimitEntry(_Entry):
    """One ``[[limit]]`` table."""

    tools: list[str] = pydantic.Field(min_length=1)
    window: str
    per: str | None = None
    max_count: int | None = pydantic.Field(default=None, ge=0)
    max_total: float | None = pydantic.Field(default=None, ge=0)
    amount: str | None = None
    decision: Literal["deny", "escalate"] = "deny"

    @pydantic.field_validator("window")
    @classmethod
    def _window(cls, value: str) -> str:
        try:
            parse_window(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a duration like 30s, 15m, 2h or 1d") from None
        return value

    @pydantic.field_validator("tools")
    @classmethod
    def _tools(cls, value: list[str]) -> list[str]:
        if any(not t.strip() for t in value):
            raise ValueError("tool names must not be empty")
        return value

    @pydantic.model_validator(mode="after")
    def _caps(self) -> LimitEntry:
        if self.max_count is None and self.max_total is None:
            raise ValueError("a limit needs max_count, max_total or both")
        if self.max_total is not None and self.amount is None:
            raise ValueError('max_total needs amount = "<argument to sum>"')
        if self.amount is not None and self.max_total is None:
            raise ValueError("amount is only used with max_total")
        return self


class RuleEntry(_Entry):
    """One ``[[rule]]`` table: a check on one argument of one tool."""

    tool: str = pydantic.Field(min_length=1)
    arg: str = pydantic.Field(min_length=1)
    reason: str = pydantic.Field(min_length=1)
    decision: Literal["deny", "escalate", "approve"] = "deny"
    max: float | None = None
    min: float | None = None
    one_of: list[Any] | None = pydantic.Field(default=None, min_length=1)
    not_one_of: list[Any] | None = pydantic.Field(default=None, min_length=1)
    pattern: str | None = None

    @pydantic.field_validator("pattern")
    @classmethod
    def _pattern(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(
                    f"pattern {value!r} is not a valid regular expression: {exc}"
                ) from None
        return value

    @pydantic.model_validator(mode="after")
    def _checks(self) -> RuleEntry:
        kinds = [k for k in ("max", "min", "one_of", "not_one_of", "pattern")
                 if getattr(self, k) is not None]  # fmt: skip
        if not kinds:
            raise ValueError("a rule needs at least one check: max, min, one_of, not_one_of "
                             "or pattern")  # fmt: skip
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


class PolicyFile(pydantic.BaseModel):
    """The whole file."""

    model_config = pydantic.ConfigDict(extra="forbid", strict=True)

    limit: list[LimitEntry] = []
    rule: list[RuleEntry] = []


# -- building rules and limits -------------------------------------------------------------------


@dataclass(slots=True)
class PolicyConfig:
    """Rules and limits read from a policy file; pass both to :class:`~tether.engine.Runtime`."""

    rules: list[Rule] = field(default_factory=list)
    limits: list[Limit] = field(default_factory=list)
    source: str = ""

    def __add__(self, other: PolicyConfig) -> PolicyConfig:
        return PolicyConfig(self.rules + other.rules, self.limits + other.limits,
                            ", ".join(s for s in (self.source, other.source) if s))  # fmt: skip


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _key_text(value: Any) -> str:
    if value is None:
        return _MISSING
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def _limit_key(arg: str) -> Callable[[Proposal], str]:
    def key(p: Proposal) -> str:
        return f"{arg}={_key_text(p.args.get(arg))}"

    return key


def _limit_amount(arg: str) -> Callable[[Proposal], float]:
    def amount(p: Proposal) -> float:
        value = p.args.get(arg)
        if not _is_number(value):  # fail closed: the limit refuses a call it cannot count
            raise ValueError(f"argument {arg!r} is {value!r}, not a number")
        return float(value)

    return amount


def build_limit(entry: LimitEntry, origin: str = "") -> Limit:
    """The :class:`Limit` a validated ``[[limit]]`` entry stands for (``origin``: its file)."""
    extra: dict[str, Any] = {}
    if entry.per is not None:
        extra["key"] = _limit_key(entry.per)
    if entry.amount is not None:
        extra["amount"] = _limit_amount(entry.amount)
    return Limit(
        name=entry.name,
        tools=frozenset(entry.tools),
        window_seconds=parse_window(entry.window),
        max_count=entry.max_count,
        max_total=None if entry.max_total is None else float(entry.max_total),
        decision=DecisionKind(entry.decision),
        spec=entry.model_dump_json(),
        origin=origin,
        **extra,
    )


def _argument_check(entry: RuleEntry) -> Callable[[dict[str, Any]], bool]:
    """True when the argument passes every check of the entry."""
    pattern = None if entry.pattern is None else re.compile(entry.pattern)

    def check(args: dict[str, Any]) -> bool:
        value = args.get(entry.arg)
        if entry.max is not None and not (_is_number(value) and value <= entry.max):
            return False
        if entry.min is not None and not (_is_number(value) and value >= entry.min):
            return False
        if entry.one_of is not None and value not in entry.one_of:
            return False
        if entry.not_one_of is not None and value in entry.not_one_of:
            return False
        return pattern is None or (isinstance(value, str) and pattern.fullmatch(value) is not None)

    return check


def build_rule(entry: RuleEntry, origin: str = "") -> Rule:
    """The :class:`Rule` a validated ``[[rule]]`` entry stands for (``origin``: its file)."""
    built = arg_rule(entry.name, tool=entry.tool, check=_argument_check(entry),
                     reason=entry.reason, decision=DecisionKind(entry.decision))  # fmt: skip
    return dataclasses.replace(built, spec=entry.model_dump_json(), origin=origin)


# -- reading files -------------------------------------------------------------------------------


def _entry(data: Any, loc: tuple[int | str, ...]) -> str:
    """``limit #2 ('refunds-per-customer')`` for an error location inside the file."""
    if len(loc) >= 2 and loc[0] in ("limit", "rule") and isinstance(loc[1], int):
        entry = f"{loc[0]} #{loc[1] + 1}"
        try:
            name = data[loc[0]][loc[1]].get("name")
        except (KeyError, IndexError, TypeError, AttributeError):
            name = None
        return entry + (f" ({name!r})" if isinstance(name, str) and name else "")
    return "top level"


def _problem(err: Any) -> str:
    loc = tuple(err["loc"])
    in_entry = len(loc) >= 2 and isinstance(loc[1], int)
    where = ".".join(str(x) for x in (loc[2:] if in_entry else loc))
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        if not in_entry:
            return f"unknown key {where!r} (a policy file has `limit` and `rule` lists)"
        model = LimitEntry if loc[0] == "limit" else RuleEntry
        close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1)
        return f"unknown key {where!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
    if err["type"] == "literal_error":
        return f"{where}: {msg}, got {err['input']!r}"
    return f"{where}: {msg}" if where else msg


def parse_policy(data: Any, source: str = "<policy>", origin: str = "") -> PolicyConfig:
    """Validate already-parsed file contents (a mapping) and build the rules and limits.

    ``origin`` is the file's absolute path, recorded with every run that uses these rules so a
    process resuming the run can load the same file again."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UsageError(f"{source}: the file must be a mapping with limit and rule lists, "
                         f"not a {type(data).__name__}")  # fmt: skip
    try:
        parsed = PolicyFile.model_validate(data)
    except pydantic.ValidationError as exc:
        problems = [f"{_entry(data, tuple(e['loc']))}: {_problem(e)}"
                    for e in exc.errors()]  # fmt: skip
        raise UsageError(f"{source}: invalid policy: " + "; ".join(problems)) from None
    for kind, entries in (("limit", parsed.limit), ("rule", parsed.rule)):
        seen: set[str] = set()
        for i, entry in enumerate(entries):
            if entry.name in seen:
                raise UsageError(f"{source}: {kind} #{i + 1} ({entry.name!r}): the name is "
                                 f"used by another {kind}; names must be unique")  # fmt: skip
            seen.add(entry.name)
    return PolicyConfig(
        rules=[build_rule(e, origin) for e in parsed.rule],
        limits=[build_limit(e, origin) for e in parsed.limit],
        source=source,
    )


def load_policy(path: str | Path) -> PolicyConfig:
    """Read a ``.toml``, ``.yaml`` or ``.yml`` policy file into rules and limits."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in (".toml", ".yaml", ".yml"):
        raise UsageError(f"{p}: a policy file must end in .toml, .yaml or .yml")
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{p}: policy file not found") from None
    except OSError as exc:
        raise UsageError(f"{p}: cannot read the policy file: {exc}") from exc
    try:
        data: Any = tomllib.loads(text) if suffix == ".toml" else yaml.safe_load(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{p}: not valid TOML: {exc}") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"{p}: not valid YAML: {exc}") from None
    return parse_policy(data, str(p), str(p.resolve()))
