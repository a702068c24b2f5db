"""Routing between models: a cheap-first cascade and a rule-based router.

:class:`CascadeModel` asks a small model first and escalates to a large one when the small answer
is not good enough:

* it fails validation (:func:`response_problems`): a tool call names a tool the request does not
  offer, its arguments are not a JSON object, or they do not match the tool's parameter schema;
  or, with a ``response_schema`` and no tool calls, the text is not JSON matching it;
* its confidence is low: ``response.meta["confidence"]`` is a number below ``min_confidence``;
* a rule says so: ``escalate_if(request, response)`` returns true (``None`` means no opinion);
* the small model raised a :class:`~tether.errors.ModelError` (unless ``escalate_on_error=False``).

The answer says what happened: ``meta["routed_to"]`` names the model that answered,
``meta["escalated"]`` is a bool and ``meta["escalation_reasons"]`` lists why. An escalated
answer also lists the small model's call in ``meta["prior_calls"]`` (model, usage, cost), and adds
its cost to ``cost_usd`` when both are priced, so budgets see both calls.

:class:`RouterModel` sends each request to one of several models chosen by ``choose(request)``.

The validator is a deliberately small JSON-schema checker covering what tool schemas use: ``type``,
``properties``, ``required``, ``additionalProperties``, ``items``, ``enum``, ``const``, ``anyOf``,
``oneOf``, ``allOf``, local ``$ref``, and the length/range/pattern bounds.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from tether.errors import ModelError, UsageError
from tether.messages import ModelRequest, ModelResponse, ToolCall
from tether.models.base import Model

# --------------------------------------------------------------------------- schema checking


def find_tool(request: ModelRequest, name: str) -> dict[str, Any] | None:
    """The spec of the tool called ``name`` in ``request.tools`` (plain or OpenAI-style)."""
    for spec in request.tools:
        inner = spec.get("function")
        fn = inner if spec.get("type") == "function" and isinstance(inner, dict) else spec
        if fn.get("name") == name:
            return fn
    return None


def tool_parameters(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON schema of a tool spec's arguments (``parameters`` or ``input_schema``)."""
    schema = spec.get("parameters", spec.get("input_schema"))
    return dict(schema) if isinstance(schema, Mapping) else {}


def resolve(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    """Follow local ``$ref`` pointers (``#/$defs/Name``) until a concrete schema."""
    seen: set[str] = set()
    while "$ref" in schema:
        ref = str(schema["$ref"])
        if not ref.startswith("#") or ref in seen:
            return {}
        seen.add(ref)
        node: Any = root
        for part in ref.lstrip("#").strip("/").split("/"):
            if not part:
                continue
            node = node.get(part.replace("~1", "/").replace("~0", "~"), {})
            if not isinstance(node, Mapping):
                return {}
        schema = node
    return schema


def _is_type(value: Any, kind: str) -> bool:
    if kind == "string":
        return isinstance(value, str)
    if kind == "integer":
        if isinstance(value, bool):
            return False
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "array":
        return isinstance(value, list)
    if kind == "object":
        return isinstance(value, dict)
    if kind == "null":
        return value is None
    return True


def schema_types(schema: Mapping[str, Any], root: Mapping[str, Any]) -> set[str]:
    """The JSON types a schema admits (through ``anyOf``/``oneOf``); empty if unconstrained."""
    schema = resolve(schema, root)
    kinds: set[str] = set()
    declared = schema.get("type")
    if isinstance(declared, str):
        kinds.add(declared)
    elif isinstance(declared, list):
        kinds.update(str(k) for k in declared)
    for key in ("anyOf", "oneOf"):
        for option in schema.get(key, []):
            sub = schema_types(option, root)
            if not sub:
                return set()
            kinds |= sub
    if "enum" in schema and not kinds:
        for v in schema["enum"]:
            kinds.update(k for k in ("string", "integer", "number", "boolean") if _is_type(v, k))
    return kinds


def schema_errors(
    value: Any, schema: Mapping[str, Any], root: Mapping[str, Any] | None = None, path: str = "$"
) -> list[str]:
    """Everything wrong with ``value`` under ``schema``, as readable messages (empty if valid)."""
    root = schema if root is None else root
    schema = resolve(schema, root)
    errors: list[str] = []
    for option_key in ("anyOf", "oneOf"):
        options = schema.get(option_key)
        if options and not any(not schema_errors(value, o, root, path) for o in options):
            errors.append(f"{path}: matches none of the allowed shapes")
    for sub in schema.get("allOf", []):
        errors += schema_errors(value, sub, root, path)
    declared = schema.get("type")
    if declared is not None:
        kinds = [declared] if isinstance(declared, str) else list(declared)
        if not any(_is_type(value, k) for k in kinds):
            return [*errors, f"{path}: expected {' or '.join(kinds)}, got {_json_type(value)}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} is not one of {schema['enum']!r}")
    if "const" in schema and value != schema["const"]:
        errors.append(f"{path}: must be {schema['const']!r}")
    if isinstance(value, str):
        errors += _string_errors(value, schema, path)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        errors += _number_errors(value, schema, path)
    elif isinstance(value, list):
        errors += _array_errors(value, schema, root, path)
    elif isinstance(value, dict):
        errors += _object_errors(value, schema, root, path)
    return errors


def _json_type(value: Any) -> str:
    for kind in ("null", "boolean", "integer", "number", "string", "array", "object"):
        if _is_type(value, kind):
            return kind
    return type(value).__name__


def _string_errors(value: str, schema: Mapping[str, Any], path: str) -> list[str]:
    errors = []
    if "minLength" in schema and len(value) < schema["minLength"]:
        errors.append(f"{path}: shorter than {schema['minLength']}")
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        errors.append(f"{path}: longer than {schema['maxLength']}")
    if "pattern" in schema and re.search(schema["pattern"], value) is None:
        errors.append(f"{path}: does not match {schema['pattern']!r}")
    return errors


def _number_errors(value: float, schema: Mapping[str, Any], path: str) -> list[str]:
    errors = []
    if "minimum" in schema and value < schema["minimum"]:
        errors.append(f"{path}: below {schema['minimum']}")
    if "maximum" in schema and value > schema["maximum"]:
        errors.append(f"{path}: above {schema['maximum']}")
    if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
        errors.append(f"{path}: not above {schema['exclusiveMinimum']}")
    if "exclusiveMaximum" in schema and value >= schema["exclusiveMaximum"]:
        errors.append(f"{path}: not below {schema['exclusiveMaximum']}")
    return errors


def _array_errors(
    value: list[Any], schema: Mapping[str, Any], root: Mapping[str, Any], path: str
) -> list[str]:
    errors = []
    if "minItems" in schema and len(value) < schema["minItems"]:
        errors.append(f"{path}: fewer than {schema['minItems']} items")
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        errors.append(f"{path}: more than {schema['maxItems']} items")
    items = schema.get("items")
    if isinstance(items, Mapping):
        for i, item in enumerate(value):
            errors += schema_errors(item, items, root, f"{path}[{i}]")
    return errors


def _object_errors(
    value: dict[str, Any], schema: Mapping[str, Any], root: Mapping[str, Any], path: str
) -> list[str]:
    errors = [f"{path}: missing {k!r}" for k in schema.get("required", []) if k not in value]
    properties: Mapping[str, Any] = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    for key, item in value.items():
        if key in properties:
            errors += schema_errors(item, properties[key], root, f"{path}.{key}")
        elif extra is False:
            errors.append(f"{path}: unexpected {key!r}")
        elif isinstance(extra, Mapping):
            errors += schema_errors(item, extra, root, f"{path}.{key}")
    return errors


def parse_arguments(call: ToolCall) -> dict[str, Any] | str:
    """The call's arguments as a dict, or a message saying why they are not a JSON object."""
    args: Any = call.arguments
    if isinstance(args, str):
        if not args.strip():
            return {}
        try:
            args = json.loads(args)
        except ValueError as exc:
            return f"arguments are not valid JSON: {exc}"
    if not isinstance(args, dict):
        return f"arguments must be a JSON object, got {_json_type(args)}"
    return args


def tool_call_problems(request: ModelRequest, call: ToolCall) -> list[str]:
    """What is wrong with one tool call against the request's tool specs (empty if valid)."""
    spec = find_tool(request, call.name)
    if spec is None:
        return [f"unknown tool {call.name!r}"]
    args = parse_arguments(call)
    if isinstance(args, str):
        return [f"{call.name}: {args}"]
    return [f"{call.name}: {p}" for p in schema_errors(args, tool_parameters(spec))]


def response_problems(request: ModelRequest, response: ModelResponse) -> list[str]:
    """What is wrong with a response: invalid tool calls, or text not matching the schema."""
    problems: list[str] = []
    for call in response.tool_calls:
        problems += tool_call_problems(request, call)
    if not response.tool_calls and request.response_schema is not None:
        try:
            data = json.loads(response.text)
        except ValueError:
            return ["output is not valid JSON"]
        problems += [f"output: {p}" for p in schema_errors(data, request.response_schema)]
    return problems


# --------------------------------------------------------------------------- routing models

EscalateRule = Callable[[ModelRequest, ModelResponse], bool | None]


class CascadeModel:
    """Asks a small model first and escalates to a large one when its answer falls short."""

    def __init__(
        self,
        small: Model,
        large: Model,
        *,
        escalate_if: EscalateRule | None = None,
        min_confidence: float | None = 0.5,
        validate: bool = True,
        escalate_on_error: bool = True,
    ) -> None:
        self.small = small
        self.large = large
        self.escalate_if = escalate_if
        self.min_confidence = min_confidence
        self.validate = validate
        self.escalate_on_error = escalate_on_error

    @property
    def name(self) -> str:
        return f"cascade:{self.small.name},{self.large.name}"

    def reasons(self, request: ModelRequest, response: ModelResponse) -> list[str]:
        """Why ``response`` from the small model should be escalated (empty: keep it)."""
        reasons: list[str] = []
        if self.validate:
            reasons += [f"invalid: {p}" for p in response_problems(request, response)]
        confidence = response.meta.get("confidence")
        if (
            self.min_confidence is not None
            and isinstance(confidence, int | float)
            and not isinstance(confidence, bool)
            and confidence < self.min_confidence
        ):
            reasons.append(f"low confidence: {confidence} < {self.min_confidence}")
        if self.escalate_if is not None and self.escalate_if(request, response):
            reasons.append("rule")
        return reasons

    async def request(self, request: ModelRequest) -> ModelResponse:
        first: ModelResponse | None = None
        try:
            first = await self.small.request(request)
        except ModelError as err:
            if not self.escalate_on_error:
                raise
            reasons = [f"error: {err}"]
        else:
            reasons = self.reasons(request, first)
            if not reasons:
                first.meta["routed_to"] = self.small.name
                first.meta["escalated"] = False
                return first
        response = await self.large.request(request)
        if not response.model:
            response.model = self.large.name
        response.meta["routed_to"] = self.large.name
        response.meta["escalated"] = True
        response.meta["escalation_reasons"] = reasons
        if first is not None:
            prior = {
                "model": first.model or self.small.name,
                "usage": first.usage.to_dict(),
                "cost_usd": first.cost_usd,
            }
            response.meta["prior_calls"] = [*response.meta.get("prior_calls", []), prior]
            if response.cost_usd is not None and first.cost_usd is not None:
                response.cost_usd += first.cost_usd
        return response


class RouterModel:
    """Sends each request to the model ``choose(request)`` names among ``routes``.

    An unknown choice goes to ``default`` when one is given, else raises
    :class:`~tether.errors.UsageError`. The answer has ``meta["route"]`` (the key) and
    ``meta["routed_to"]`` (the model's name).
    """

    def __init__(
        self,
        routes: Mapping[str, Model],
        choose: Callable[[ModelRequest], str],
        *,
        default: str | None = None,
    ) -> None:
        if not routes:
            raise ValueError("RouterModel needs at least one route")
        if default is not None and default not in routes:
            raise ValueError(f"default route {default!r} is not one of the routes")
        self.routes = dict(routes)
        self.choose = choose
        self.default = default

    @property
    def name(self) -> str:
        return "router:" + ",".join(m.name for m in self.routes.values())

    async def request(self, request: ModelRequest) -> ModelResponse:
        key = self.choose(request)
        if key not in self.routes:
            if self.default is None:
                raise UsageError(
                    f"router chose unknown route {key!r}; routes are {sorted(self.routes)}"
                )
            key = self.default
        model = self.routes[key]
        response = await model.request(request)
        if not response.model:
            response.model = model.name
        response.meta["route"] = key
        response.meta["routed_to"] = model.name
        return response
