"""FaultModel: inject realistic model failures at fixed, seeded rates.

For benchmarks and tests of the runtime's defences. :class:`FaultModel` wraps a model (typically
an *oracle* that proposes the ground-truth next call) and, on a seeded share of calls, does one of:

==================  ======================================================================
``malformed_json``  the arguments of one tool call become invalid JSON
``unknown_tool``    one tool call names a tool the request does not offer
``wrong_type``      one argument gets a value of the wrong JSON type (an int for a string)
``wrong_valid``     one argument gets a plausible other value of the right type (another
                    id, a nearby number, another enum member, a flipped flag): it passes
                    validation, so only downstream checks can catch it
``repeated_call``   the previous turn's tool calls are proposed again
``timeout``         raises :class:`~tether.errors.ModelTimeout`
``rate_limit``      raises a retryable ``ModelError`` with status 429 and ``retry_after=0.01``
``server_error``    raises a retryable ``ModelError`` with a 5xx status
==================  ======================================================================

Rates: a float spreads that probability evenly over ``kinds`` (default: all of them); a dict
gives each kind its own probability (their sum at most 1). At most one fault is injected per call,
drawn from ``random.Random(seed)``, so a run is reproducible for a given seed and inner model.

Every injected fault is counted in :attr:`FaultModel.injected` and listed in :attr:`FaultModel.log`;
a returned response also carries ``meta["fault"]`` (the kind) and ``meta["fault_detail"]``. A fault
that does not apply (say ``wrong_type`` when the answer is plain text, or ``repeated_call`` on the
first turn) is not injected; it is counted in :attr:`FaultModel.skipped` and the call goes through.

Not advancing the oracle. A faulty answer replaces the oracle's proposal, so the oracle must
propose the *same* call again on the next request (after the runtime has fed the error back).
The raising kinds and ``repeated_call`` do not call the inner model at all. For the corrupting
kinds the inner model is called, and then:

* if it is :class:`Rewindable` (has a ``rewind()`` method), ``rewind()`` is called, and the next
  request asks it again; ``rewind()`` must make its next answer repeat the last one;
* otherwise the clean answer is held and returned (possibly faulted again) on the next request
  instead of calling the inner model.

Corrupted and repeated calls get fresh ids (``<id>-fault<n>``), so the clean proposal that follows
keeps the original ids without clashing with the faulty turn in the conversation.
"""

from __future__ import annotations

import copy
import json
import random
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from tether.errors import ModelError, ModelTimeout
from tether.messages import ModelRequest, ModelResponse, ToolCall, Usage
from tether.models.base import Model, estimate_request_tokens, estimate_tokens
from tether.models.router import (
    find_tool,
    parse_arguments,
    resolve,
    schema_errors,
    schema_types,
    tool_parameters,
)


class FaultKind(StrEnum):
    """The kinds of fault :class:`FaultModel` can inject."""

    MALFORMED_JSON = "malformed_json"
    UNKNOWN_TOOL = "unknown_tool"
    WRONG_TYPE = "wrong_type"
    WRONG_VALID = "wrong_valid"
    REPEATED_CALL = "repeated_call"
    TIMEOUT = "timeout"
    RATE_LIMIT = "rate_limit"
    SERVER_ERROR = "server_error"


RAISING_KINDS = frozenset({FaultKind.TIMEOUT, FaultKind.RATE_LIMIT, FaultKind.SERVER_ERROR})
CORRUPTING_KINDS = frozenset(
    {
        FaultKind.MALFORMED_JSON,
        FaultKind.UNKNOWN_TOOL,
        FaultKind.WRONG_TYPE,
        FaultKind.WRONG_VALID,
    }
)


@runtime_checkable
class Rewindable(Protocol):
    """A model that can be told to repeat its last proposal on the next request."""

    def rewind(self) -> None:
        """Make the next request answer what the last one did (do not advance)."""
        ...


class FaultModel:
    """Wraps a model and injects faults at seeded per-call rates (see the module docstring)."""

    def __init__(
        self,
        inner: Model,
        rate: float | Mapping[FaultKind | str, float],
        seed: int,
        *,
        kinds: Iterable[FaultKind | str] | None = None,
    ) -> None:
        self.inner = inner
        allowed = None if kinds is None else {FaultKind(k) for k in kinds}
        if isinstance(rate, Mapping):
            rates = {FaultKind(k): float(v) for k, v in rate.items()}
            if allowed is not None:
                rates = {k: v for k, v in rates.items() if k in allowed}
        else:
            chosen = [k for k in FaultKind if allowed is None or k in allowed]
            if not chosen:
                raise ValueError("kinds must name at least one fault kind")
            rates = {k: float(rate) / len(chosen) for k in chosen}
        if any(not 0.0 <= v <= 1.0 for v in rates.values()) or sum(rates.values()) > 1.0 + 1e-9:
            raise ValueError("fault rates must be in [0, 1] and sum to at most 1")
        # Declaration order, so the draw does not depend on how the dict was written.
        self.rates: dict[FaultKind, float] = {k: rates[k] for k in FaultKind if k in rates}
        self.seed = seed
        self._rng = random.Random(seed)
        self.injected: Counter[FaultKind] = Counter()
        self.skipped: Counter[FaultKind] = Counter()
        self.log: list[tuple[int, FaultKind]] = []
        self.calls = 0
        self._held: ModelResponse | None = None

    @property
    def name(self) -> str:
        return self.inner.name

    # ------------------------------------------------------------------ the call

    async def request(self, request: ModelRequest) -> ModelResponse:
        self.calls += 1
        kind = self._draw()
        if kind in RAISING_KINDS:
            assert kind is not None
            self._record(kind)
            raise self._error(kind)
        if kind is FaultKind.REPEATED_CALL:
            repeated = self._repeat(request)
            if repeated is not None:
                self._record(kind)
                return repeated
            self.skipped[kind] += 1
            kind = None
        clean = await self._propose(request)
        if kind is None:
            return clean
        faulty = copy.deepcopy(clean)
        detail = self._corrupt(kind, request, faulty)
        if detail is None:
            self.skipped[kind] += 1
            return clean
        self._renumber(faulty)
        faulty.meta["fault"] = kind.value
        faulty.meta["fault_detail"] = detail
        self._record(kind)
        if isinstance(self.inner, Rewindable):
            self.inner.rewind()
        else:
            self._held = clean
        return faulty

    def _draw(self) -> FaultKind | None:
        u = self._rng.random()
        edge = 0.0
        for kind, rate in self.rates.items():
            edge += rate
            if u < edge:
                return kind
        return None

    def _record(self, kind: FaultKind) -> None:
        self.injected[kind] += 1
        self.log.append((self.calls, kind))

    async def _propose(self, request: ModelRequest) -> ModelResponse:
        if self._held is not None:
            held, self._held = self._held, None
            return held
        return await self.inner.request(request)

    def _error(self, kind: FaultKind) -> ModelError:
        provider = self.inner.name
        err: ModelError
        if kind is FaultKind.TIMEOUT:
            err = ModelTimeout(provider=provider)
        elif kind is FaultKind.RATE_LIMIT:
            err = ModelError(
                "rate limited (429)",
                retryable=True,
                retry_after=0.01,
                status=429,
                provider=provider,
            )
        else:
            status = self._rng.choice((500, 502, 503))
            err = ModelError(
                f"server error ({status})", retryable=True, status=status, provider=provider
            )
        err.add_note(f"injected fault: {kind.value}")
        return err

    def _renumber(self, response: ModelResponse) -> None:
        for c in response.tool_calls:
            c.id = f"{c.id}-fault{self.calls}"

    # ------------------------------------------------------------------ faults

    def _repeat(self, request: ModelRequest) -> ModelResponse | None:
        previous = next(
            (m for m in reversed(request.messages) if m.role == "assistant" and m.tool_calls),
            None,
        )
        if previous is None:
            return None
        calls = [ToolCall(c.id, c.name, copy.deepcopy(c.arguments)) for c in previous.tool_calls]
        out = sum(estimate_tokens(c.arguments_text()) + 2 for c in calls)
        response = ModelResponse(
            tool_calls=calls,
            usage=Usage(estimate_request_tokens(request), out),
            model=self.inner.name,
            meta={"fault": FaultKind.REPEATED_CALL.value, "fault_detail": {"repeats": len(calls)}},
        )
        self._renumber(response)
        return response

    def _corrupt(
        self, kind: FaultKind, request: ModelRequest, response: ModelResponse
    ) -> dict[str, Any] | None:
        if not response.tool_calls:
            return None
        call = response.tool_calls[self._rng.randrange(len(response.tool_calls))]
        if kind is FaultKind.MALFORMED_JSON:
            return self._malformed(call)
        if kind is FaultKind.UNKNOWN_TOOL:
            return self._unknown_tool(request, call)
        if kind is FaultKind.WRONG_TYPE:
            return self._wrong_type(request, call)
        return self._wrong_valid(request, call)

    def _malformed(self, call: ToolCall) -> dict[str, Any]:
        text = call.arguments_text()
        variants = [
            text[:-1] if text.endswith("}") else text + "{",  # truncated
            text.replace('"', "'"),  # Python-style quotes
            text[:-1] + ",}" if text.endswith("}") and len(text) > 2 else text + ",",  # trailing
        ]
        broken = variants[self._rng.randrange(len(variants))]
        if _parses(broken):
            broken = variants[0]
        call.arguments = broken
        return {"tool": call.name, "arguments": broken}

    def _unknown_tool(self, request: ModelRequest, call: ToolCall) -> dict[str, Any]:
        name = call.name
        plural = name[:-1] if name.endswith("s") else name + "s"
        options = [plural, f"{name}_v2", f"{name}_tool", f"get_{name}"]
        options = [n for n in options if find_tool(request, n) is None]
        new = options[self._rng.randrange(len(options))] if options else f"{name}_unknown"
        call.name = new
        return {"tool": name, "renamed_to": new}

    def _wrong_type(self, request: ModelRequest, call: ToolCall) -> dict[str, Any] | None:
        target = _arguments_and_schema(request, call)
        if target is None:
            return None
        args, params = target
        properties: Mapping[str, Any] = params.get("properties", {})
        options: list[tuple[str, Any]] = []
        for key, value in args.items():
            allowed = schema_types(properties[key], params) if key in properties else {_kind(value)}
            if not allowed:
                continue
            for candidate in (self._rng.randint(2, 999), "unknown", [value], {"value": value}):
                kind = _kind(candidate)
                if kind not in allowed and not (kind == "integer" and "number" in allowed):
                    options.append((key, candidate))
                    break
        if not options:
            return None
        key, new = options[self._rng.randrange(len(options))]
        old = args[key]
        args[key] = new
        _store(call, args)
        return {"tool": call.name, "argument": key, "from": old, "to": new}

    def _wrong_valid(self, request: ModelRequest, call: ToolCall) -> dict[str, Any] | None:
        target = _arguments_and_schema(request, call)
        if target is None:
            return None
        args, params = target
        properties: Mapping[str, Any] = params.get("properties", {})
        was_valid = not schema_errors(args, params)
        changes: list[tuple[str, Any]] = []
        for key, value in args.items():
            schema = resolve(properties.get(key, {}), params)
            new = self._other_value(value, schema)
            if new is _NONE or new == value:
                continue
            trial = {**args, key: new}
            if was_valid and schema_errors(trial, params):
                continue
            changes.append((key, new))
        if not changes:
            return None
        id_like = [c for c in changes if _is_id_like(c[0], args[c[0]])]
        pool = id_like or changes
        key, new = pool[self._rng.randrange(len(pool))]
        old = args[key]
        args[key] = new
        _store(call, args)
        return {"tool": call.name, "argument": key, "from": old, "to": new}

    def _other_value(self, value: Any, schema: Mapping[str, Any]) -> Any:
        enum = schema.get("enum")
        if isinstance(enum, list):
            others = [v for v in enum if v != value and type(v) is type(value)]
            return others[self._rng.randrange(len(others))] if others else _NONE
        if isinstance(value, bool):
            return not value
        if isinstance(value, int):
            step = self._rng.randint(1, 5)
            lo, hi = schema.get("minimum"), schema.get("maximum")
            for candidate in (value + step, value - step):
                if (lo is None or candidate >= lo) and (hi is None or candidate <= hi):
                    return candidate
            return _NONE
        if isinstance(value, float):
            factor = 1 + self._rng.choice((-0.5, -0.25, -0.1, 0.1, 0.25, 0.5))
            return round(value * factor, 2) if value else 1.0
        if isinstance(value, str):
            return self._other_id(value)
        return _NONE

    def _other_id(self, value: str) -> Any:
        runs = list(re.finditer(r"\d+", value))
        if not runs:
            return _NONE
        run = runs[-1]
        digits = run.group()
        modulus = 10 ** len(digits)
        number = (int(digits) + self._rng.randint(1, 9)) % modulus
        return f"{value[: run.start()]}{number:0{len(digits)}d}{value[run.end() :]}"


class _Missing:
    pass


_NONE: Any = _Missing()


def _parses(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _is_id_like(key: str, value: Any) -> bool:
    if key.lower() == "id" or key.endswith(("_id", "Id", "ID")):
        return True
    return isinstance(value, str) and any(ch.isdigit() for ch in value)


def _arguments_and_schema(
    request: ModelRequest, call: ToolCall
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    args = parse_arguments(call)
    if isinstance(args, str) or not args:
        return None
    spec = find_tool(request, call.name)
    params = tool_parameters(spec) if spec is not None else {}
    return copy.deepcopy(args), params


def _store(call: ToolCall, args: dict[str, Any]) -> None:
    call.arguments = json.dumps(args) if isinstance(call.arguments, str) else args
