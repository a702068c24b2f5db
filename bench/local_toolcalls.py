"""How often does the local model produce a valid tool call?

Generates tool calls with :class:`tether.models.llamacpp.LlamaCppModel` (SmolLM2-135M-Instruct by
default) over a variety of prompts, tool sets and sampling settings, and validates every call's
arguments against its tool's JSON schema with a pydantic model built from that schema.

    python bench/local_toolcalls.py [--n 210] [--max-tokens 96] [--model-path FILE]

Ends with one line:

    local_toolcalls: generated=<n> parsed=<n> valid=<n> rate=<valid/generated>
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import time
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, create_model
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tether.messages import Message, ModelRequest
from tether.models.llamacpp import LlamaCppModel


def tool(
    name: str, description: str, properties: dict[str, Any], required: list[str]
) -> dict[str, Any]:
    return {
        "name": name,
        "description": description,
        "parameters": {
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": False,
        },
    }


STR = {"type": "string"}

RETAIL = [
    tool(
        "get_order_details",
        "Get the status and items of an order.",
        {"order_id": STR},
        ["order_id"],
    ),
    tool(
        "find_user_id_by_email",
        "Find a customer's user id from their email.",
        {"email": STR},
        ["email"],
    ),
    tool(
        "cancel_pending_order",
        "Cancel an order that has not shipped yet.",
        {"order_id": STR, "reason": {"enum": ["no longer needed", "ordered by mistake"]}},
        ["order_id", "reason"],
    ),
    tool("calculate", "Evaluate an arithmetic expression.", {"expression": STR}, ["expression"]),
]

TRAVEL = [
    tool(
        "get_weather",
        "Current weather for a city.",
        {"city": STR, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        ["city", "unit"],
    ),
    tool(
        "search_flights",
        "Search flights between two airports.",
        {
            "origin": STR,
            "destination": STR,
            "passengers": {"type": "integer"},
            "nonstop": {"type": "boolean"},
        },
        ["origin", "destination", "passengers"],
    ),
    tool(
        "book_hotel",
        "Book a hotel room.",
        {"city": STR, "nights": {"type": "integer"}, "guests": {"type": "integer"}},
        ["city", "nights"],
    ),
]

OFFICE = [
    tool(
        "send_email",
        "Send an email.",
        {"to": STR, "subject": STR, "body": STR},
        ["to", "subject", "body"],
    ),
    tool(
        "create_event",
        "Put an event in the calendar.",
        {
            "title": STR,
            "date": STR,
            "duration_minutes": {"type": "integer"},
            "attendees": {"type": "array", "items": STR},
        },
        ["title", "date"],
    ),
    tool(
        "convert_currency",
        "Convert an amount of money.",
        {"amount": {"type": "number"}, "from_currency": STR, "to_currency": STR},
        ["amount", "from_currency", "to_currency"],
    ),
    tool("calculate", "Evaluate an arithmetic expression.", {"expression": STR}, ["expression"]),
]

PROMPTS: dict[str, list[str]] = {
    "retail": [
        "What's the status of order #W2378156?",
        "My email is mia.garcia2723@example.com, can you find my account?",
        "Please cancel order #W4817420, I don't need it anymore.",
        "I ordered #W9911002 by mistake, cancel it.",
        "How much is 3 times 19.99 plus 4.50 shipping?",
        "Where is my package? The order number is W5566778.",
        "Look up the user with email yusuf.rossi@example.org.",
        "Cancel #W1000001 please, it was a mistake.",
        "What is 15% of 240?",
        "Can you check order #W7654321 for me?",
        "I want to cancel my pending order #W3141592 because I no longer need it.",
        "Compute (12 + 8) * 3 / 4.",
    ],
    "travel": [
        "What's the weather in Paris in celsius?",
        "Is it hot in Phoenix right now? Use fahrenheit.",
        "Find me a nonstop flight from SFO to JFK for 2 people.",
        "I need flights from London Heathrow to Tokyo for my family of four.",
        "Book a hotel in Lisbon for 3 nights.",
        "Reserve a room in Berlin for 2 nights for 2 guests.",
        "Weather in Tokyo?",
        "Search flights from CDG to LAX, one passenger.",
    ],
    "office": [
        "Email bob@example.com that the meeting moved to 3pm.",
        "Schedule a project review on 2025-07-14 for 45 minutes with ana and li.",
        "Convert 250 euros to US dollars.",
        "Send a thank-you email to the team at team@example.com.",
        "Add 'Dentist' to my calendar on 2025-03-02.",
        "How many yen is 99.5 GBP?",
        "What is 1024 divided by 16?",
        "Create an event called Standup tomorrow, 15 minutes.",
    ],
}

TOOLSETS = {"retail": RETAIL, "travel": TRAVEL, "office": OFFICE}
SYSTEM = "You are a helpful assistant. Use the tools to help the user."
SAMPLING = [
    {"temperature": 0.0},
    {"temperature": 0.7, "top_p": 0.95},
    {"temperature": 1.0, "top_k": 40},
]


def _annotation(schema: dict[str, Any], name: str) -> Any:
    if "enum" in schema:
        return Literal[tuple(schema["enum"])]
    if "const" in schema:
        return Literal[schema["const"]]
    kind = schema.get("type")
    if kind == "string":
        return str
    if kind == "integer":
        return int
    if kind == "number":
        return float
    if kind == "boolean":
        return bool
    if kind == "array":
        return list[_annotation(schema.get("items") or {}, name)]  # type: ignore[misc]
    if kind == "object":
        return model_from_schema(name, schema)
    return Any


def model_from_schema(name: str, schema: dict[str, Any]) -> type[BaseModel]:
    """A strict pydantic model for an object JSON schema (the subset the tools above use)."""
    required = set(schema.get("required", []))
    fields: dict[str, Any] = {}
    for prop, sub in (schema.get("properties") or {}).items():
        annotation = _annotation(sub, f"{name}_{prop}")
        fields[prop] = (annotation, ...) if prop in required else (annotation | None, None)
    forbid = schema.get("additionalProperties") is False
    config = ConfigDict(extra="forbid" if forbid else "ignore", strict=True)
    model: type[BaseModel] = create_model(name, __config__=config, **fields)
    return model


@dataclass
class Tally:
    generated: int = 0
    parsed: int = 0
    valid: int = 0


def check(response_calls: list[Any], validators: dict[str, type[BaseModel]], tally: Tally) -> str:
    tally.generated += 1
    if not response_calls:
        return "no tool call"
    call = response_calls[0]
    arguments = call.arguments
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return "unparseable arguments"
    if not isinstance(arguments, dict):
        return "arguments not an object"
    tally.parsed += 1
    validator = validators.get(call.name)
    if validator is None:
        return f"unknown tool {call.name}"
    try:
        validator.model_validate(arguments)
    except ValidationError as exc:
        return f"invalid: {exc.errors()[0]['msg']}"
    tally.valid += 1
    return "ok"


async def run(
    n: int, max_tokens: int, model_path: str | None, threads: int | None, verbose: bool
) -> Tally:
    console = Console(stderr=True)
    model = LlamaCppModel(model_path, n_ctx=2048, seed=0, n_threads=threads)
    validators = {
        f"{set_name}:{t['name']}": model_from_schema(t["name"], t["parameters"])
        for set_name, tools in TOOLSETS.items()
        for t in tools
    }
    jobs = list(
        itertools.islice(
            (
                (set_name, prompt, sampling, choice)
                for round_no in itertools.count()
                for set_name, prompts in PROMPTS.items()
                for i, prompt in enumerate(prompts)
                for sampling in [SAMPLING[(i + round_no) % len(SAMPLING)]]
                for choice in [("required" if (i + round_no) % 2 == 0 else "auto")]
            ),
            n,
        )
    )
    tally = Tally()
    failures: dict[str, int] = {}
    started = time.perf_counter()
    columns = (
        TextColumn("[bold]local tool calls"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("valid {task.fields[valid]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("calls", total=len(jobs), valid=0)
        for seed, (set_name, prompt, sampling, choice) in enumerate(jobs):
            tools = TOOLSETS[set_name]
            params = {"max_tokens": max_tokens, "seed": seed, "tool_choice": choice, **sampling}
            request = ModelRequest(
                [Message("system", SYSTEM), Message("user", prompt)], tools=tools, params=params
            )
            response = await model.request(request)
            if not response.tool_calls and choice == "auto":
                # the model answered instead of calling a tool: ask again, requiring a call
                request.params["tool_choice"] = "required"
                response = await model.request(request)
            set_validators = {
                key.split(":", 1)[1]: v for key, v in validators.items() if key.startswith(set_name)
            }
            outcome = check(response.tool_calls, set_validators, tally)
            if outcome != "ok":
                failures[outcome] = failures.get(outcome, 0) + 1
                if verbose:
                    console.print(f"[red]{outcome}[/red] {prompt!r} -> {response.to_dict()}")
            elif verbose:
                call = response.tool_calls[0]
                console.print(f"[green]ok[/green] {call.name} {json.dumps(call.arguments)}")
            progress.update(task, advance=1, valid=tally.valid)
    elapsed = time.perf_counter() - started
    console.print(f"{len(jobs)} calls in {elapsed:.1f}s ({elapsed / max(1, len(jobs)):.2f}s each)")
    for reason, count in sorted(failures.items(), key=lambda kv: -kv[1]):
        console.print(f"  {count} x {reason}")
    return tally


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=210, help="tool calls to generate (default 210)")
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--model-path", default=None, help="a GGUF file (default: SmolLM2-135M)")
    parser.add_argument("--threads", type=int, default=None, help="llama.cpp threads")
    parser.add_argument("--verbose", action="store_true", help="print every call")
    args = parser.parse_args(argv)
    tally = asyncio.run(run(args.n, args.max_tokens, args.model_path, args.threads, args.verbose))
    rate = tally.valid / tally.generated if tally.generated else 0.0
    print(
        f"local_toolcalls: generated={tally.generated} parsed={tally.parsed} "
        f"valid={tally.valid} rate={rate:.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
