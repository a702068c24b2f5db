"""Tools: typed Python functions with a declared effect.

This module is part of the author-facing API and imports nothing from the runtime, store or server.

    @tool(effect="write", idempotent=True)
    def cancel_order(ctx: ToolContext, order_id: str, reason: str) -> dict:
        '''Cancel a pending order.'''

The argument schema comes from the type hints (validated by pydantic), the description from the
docstring. A first parameter annotated :class:`ToolContext` receives the run context and is not
part of the schema.
"""

from __future__ import annotations

import inspect
import json
import math
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, overload

import orjson
import pydantic
from pydantic_core import to_jsonable_python


class Effect(StrEnum):
    """What a tool does to the world. Drives the default policy."""

    READ = "read"
    WRITE = "write"
    IRREVERSIBLE = "irreversible"

    @property
    def has_side_effect(self) -> bool:
        return self is not Effect.READ


@dataclass(slots=True)
class ToolContext:
    """What a tool can know about the call it serves.

    ``idempotency_key`` is stable across retries and resumes of the same proposed call, so a tool
    that declares ``idempotent=True`` can use it to make a repeated execution harmless.
    """

    run_id: str
    agent: str
    step: int
    call_id: str
    idempotency_key: str
    deps: Any = None
    simulated: bool = False


class ToolError(Exception):
    """Raise from a tool to report a failure the model should see (e.g. "order not found").

    The message goes back to the model as the tool's result, marked as an error.
    """


class AwaitInput(Exception):
    """Raise from a tool to stop the run until a human answers ``question``.

    The run waits (``waiting_input``); ``tether answer RUN TEXT`` (or ``Runtime.answer``) gives
    the answer, which the model then sees as the call's result. A tool declared with
    ``awaits_input=True`` always waits: it is not called to do anything but to return the
    question (see :data:`tether.builtins.ask_human`).
    """

    def __init__(self, question: str) -> None:
        super().__init__(question)
        self.question = question


@dataclass(slots=True)
class Tool:
    """A tool as the runtime sees it. Build one with :func:`tool`."""

    name: str
    description: str
    effect: Effect
    fn: Callable[..., Any]
    args_model: type[pydantic.BaseModel]
    takes_context: bool = False
    is_async: bool = False
    idempotent: bool = False
    cache_ttl: float | None = None
    scopes: tuple[str, ...] = ()
    timeout: float | None = None  # seconds; None: the agent's ``tool_timeout``
    awaits_input: bool = False  # every call waits for a human (see AwaitInput)
    inline: bool = False  # a sync tool that runs on the event loop instead of a thread
    _schema: dict[str, Any] | None = field(default=None, repr=False)
    _fields: tuple[str, ...] | None = field(default=None, repr=False)

    @property
    def parameters(self) -> dict[str, Any]:
        """JSON schema of the arguments."""
        if self._schema is None:
            schema = self.args_model.model_json_schema()
            schema.pop("title", None)
            self._schema = schema
        return self._schema

    def spec(self) -> dict[str, Any]:
        """The tool as offered to a model (name, description, parameters)."""
        return {"name": self.name, "description": self.description, "parameters": self.parameters}

    def validate(self, arguments: dict[str, Any]) -> pydantic.BaseModel:
        """Validate arguments; raises :class:`pydantic.ValidationError`.

        ``NaN`` and infinities are refused anywhere in the arguments, also under ``Any`` or in
        a ``dict``: JSON cannot hold them (the journal would record ``null`` while the tool got
        ``nan``), and they slip through comparisons (``nan > 50`` is false), so a rule capping a
        number would let them pass.
        """
        where = _non_finite(arguments, ())
        if where is not None:
            raise pydantic.ValidationError.from_exception_data(
                self.args_model.__name__,
                [{"type": "finite_number", "loc": where[0], "input": where[1]}],
            )
        # (``model_validate`` without its keyword handling: the same validator, called direct)
        validated: pydantic.BaseModel = self.args_model.__pydantic_validator__.validate_python(
            arguments
        )
        return validated

    async def invoke(self, ctx: ToolContext | None, args: pydantic.BaseModel) -> Any:
        """Call the function with validated arguments (sync functions run inline). ``ctx`` may
        be ``None`` for a tool that takes no context."""
        result = self.call(ctx, args)
        if self.is_async:
            result = await result
        return result

    def call(self, ctx: ToolContext | None, args: pydantic.BaseModel) -> Any:
        """Call the function with validated arguments: its result, or for an async tool the
        awaitable that gives it (:meth:`invoke` awaits it)."""
        names = self._fields
        if names is None or type(args) is not self.args_model:
            names = tuple(type(args).model_fields)
            if type(args) is self.args_model:
                self._fields = names
        kwargs = {name: getattr(args, name) for name in names}
        return self.fn(ctx, **kwargs) if self.takes_context else self.fn(**kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Tools stay plain functions: calling one calls the function."""
        return self.fn(*args, **kwargs)


def _non_finite(
    value: Any, loc: tuple[int | str, ...]
) -> tuple[tuple[int | str, ...], float] | None:
    """Where in ``value`` (a JSON-like tree) a ``NaN`` or an infinity sits, and which, or
    ``None``."""
    if isinstance(value, float):
        return None if math.isfinite(value) else (loc, value)
    if isinstance(value, dict):
        for k, v in value.items():
            found = _non_finite(v, (*loc, str(k)))
            if found is not None:
                return found
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            found = _non_finite(v, (*loc, i))
            if found is not None:
                return found
    return None


# for what orjson refuses: the standard library, on pydantic's JSON-able form of the value
_encode_result = json.JSONEncoder(separators=(",", ":"), default=str).encode
_dumps = orjson.dumps
_RESULT_OPTIONS = orjson.OPT_NON_STR_KEYS


def result_to_text(result: Any) -> str:
    """Render a tool result as the text a model sees: the string itself, or compact JSON.

    Types JSON lacks (pydantic models, sets, bytes...) are converted the way pydantic does
    (``to_jsonable_python``); text is UTF-8, not ``\\u`` escapes (fewer tokens for the model).
    """
    if isinstance(result, str):
        return result
    try:
        return _dumps(result, default=to_jsonable_python, option=_RESULT_OPTIONS).decode()
    except (TypeError, ValueError):  # what orjson refuses (e.g. integers beyond 64 bits)
        return _encode_result(to_jsonable_python(result))


def _build_tool(
    fn: Callable[..., Any],
    *,
    name: str | None,
    effect: Effect | str,
    description: str | None,
    idempotent: bool,
    cache_ttl: float | None,
    scopes: tuple[str, ...] | str,
    timeout: float | None = None,
    awaits_input: bool = False,
    inline: bool = False,
) -> Tool:
    hints = typing.get_type_hints(fn)
    sig = inspect.signature(fn)
    params = list(sig.parameters.values())
    takes_context = bool(params) and hints.get(params[0].name) is ToolContext
    if takes_context:
        params = params[1:]
    fields: dict[str, Any] = {}
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise TypeError(f"tool {fn.__name__}: *args/**kwargs are not supported")
        annotation = hints.get(p.name, Any)
        default = ... if p.default is inspect.Parameter.empty else p.default
        fields[p.name] = (annotation, default)
    tool_name = name or fn.__name__
    model_name = "".join(part.title() for part in tool_name.split("_")) + "Args"
    args_model = pydantic.create_model(
        model_name, __config__=pydantic.ConfigDict(extra="forbid", allow_inf_nan=False), **fields
    )
    doc = description if description is not None else inspect.getdoc(fn) or ""
    if effect not in {e.value for e in Effect}:
        raise ValueError(f"tool {tool_name}: effect must be one of read/write/irreversible")
    if timeout is not None and not timeout > 0:
        raise ValueError(f"tool {tool_name}: timeout must be a number of seconds > 0")
    return Tool(
        name=tool_name,
        description=doc.strip(),
        effect=Effect(effect),
        fn=fn,
        args_model=args_model,
        takes_context=takes_context,
        is_async=inspect.iscoroutinefunction(fn),
        idempotent=idempotent,
        cache_ttl=cache_ttl,
        scopes=(scopes,) if isinstance(scopes, str) else tuple(scopes),
        timeout=timeout,
        awaits_input=awaits_input,
        inline=inline,
    )


@overload
def tool(fn: Callable[..., Any], /) -> Tool: ...


@overload
def tool(
    *,
    effect: Effect | str = Effect.READ,
    name: str | None = None,
    description: str | None = None,
    idempotent: bool = False,
    cache_ttl: float | None = None,
    scopes: tuple[str, ...] | str = (),
    timeout: float | None = None,
    awaits_input: bool = False,
    inline: bool = False,
) -> Callable[[Callable[..., Any]], Tool]: ...


def tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    effect: Effect | str = Effect.READ,
    name: str | None = None,
    description: str | None = None,
    idempotent: bool = False,
    cache_ttl: float | None = None,
    scopes: tuple[str, ...] | str = (),
    timeout: float | None = None,
    awaits_input: bool = False,
    inline: bool = False,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Declare a tool.

    Args:
        effect: ``read``, ``write`` (reversible) or ``irreversible``. Reads run freely; writes
            are allowed unless a rule says otherwise; irreversible calls wait for a human.
        name: the name the model sees (default: the function's name).
        description: what the model sees (default: the docstring).
        idempotent: the tool honours ``ctx.idempotency_key``, so a call whose outcome is in doubt
            after a crash may be re-run safely.
        cache_ttl: for read tools: ``0`` reuses a result for identical arguments within a run;
            a positive number of seconds reuses it across runs (kept in the store).
        scopes: permissions a run must be granted to use the tool (``Runtime.run(...,
            scopes={"admin"})``); a call from a run without one of them is denied by the
            policy (rule ``scopes``), whatever other rules, approvals or autonomy say.
        timeout: seconds a call may take (default: the agent's ``tool_timeout``). The run stops
            waiting after that: a read's call becomes an error the model sees; a write's or an
            irreversible call's outcome is in doubt (see :class:`tether.Agent`). A sync tool
            runs on a thread that cannot be stopped: it may still finish later, unseen.
        awaits_input: every call stops the run until a human answers: the function is called
            only to return the question (a string). Any tool may also raise
            :class:`AwaitInput` to wait for an answer.
        inline: a sync tool normally runs on a thread, so the event loop (and every other run
            on it) goes on while it works; ``inline=True`` runs it on the loop itself, for a
            quick function that does no I/O (no thread hop: about 50 µs less a call). No time
            limit applies to an inline call: nothing can stop it.
    """

    def wrap(f: Callable[..., Any]) -> Tool:
        return _build_tool(
            f,
            name=name,
            effect=effect,
            description=description,
            idempotent=idempotent,
            cache_ttl=cache_ttl,
            scopes=scopes,
            timeout=timeout,
            awaits_input=awaits_input,
            inline=inline,
        )

    if fn is not None:
        return wrap(fn)
    return wrap
