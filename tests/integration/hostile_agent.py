"""Agents for the CLI's hardening tests, run through the real `tether` command.

``agent``: its tool results, model text and rule reasons carry terminal escape sequences, bidi
overrides and Rich markup, as data an attacker controls would. The run stops at an approval.

``slow_agent``: its first tool waits (without blocking the event loop) until the file named by
``HOSTILE_RELEASE`` exists, writing the file named by ``HOSTILE_STARTED`` first, so a test can
interrupt a run in the middle of a step and resume it afterwards; then a write tool writes the
file named by ``HOSTILE_NOTE``.

``deep_agent``: the model's tool arguments are JSON nested 5,000 deep.

``flaky_agent``: its refunds wait for a human; its dependencies cannot be built while
``HOSTILE_DEPS_DOWN`` is set.

``broken_agent``: building it fails, as an agent whose own setup breaks (a missing setting, an
unreachable service) would.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from tether import Agent, Limits, ModelRequest, ModelResponse, ScriptedModel, ToolCall, tool
from tether.models.scripted import ScriptItem
from tether.policy import Decision, Proposal, rule

ERASE = "\x1b[2K\x1b[1G\x1b[8m"  # erase the line, go to its start, hide what follows
RTL = "\u202e"  # right-to-left override: what follows reads backwards
ADDRESS = f"12 Main St{ERASE}hidden{RTL}01 dnufer"


@tool(effect="read")
def lookup_customer(email: str) -> dict[str, str]:
    """Look a customer up by email."""
    return {"email": email, "address": ADDRESS}


@tool(effect="irreversible")
def refund(order_id: str, amount: int) -> str:
    """Refund an order."""
    return f"refunded {amount} for {order_id}"


@rule("refunds-need-a-human", tools=["refund"])
def refunds_need_a_human(p: Proposal) -> Decision | None:
    """The reason quotes the model's arguments, as many real rules do."""
    return Decision.approve(f"refund for {p.args['order_id']} needs a human")


def decide(request: ModelRequest) -> ScriptItem:
    results = [m.content for m in request.messages if m.role == "tool"]
    if not results:
        return ModelResponse(
            text=f"[bold red]checking[/] {ERASE}{RTL}",
            tool_calls=[ToolCall("c1", "lookup_customer", {"email": "ana@example.com"})],
        )
    if len(results) == 1:
        return ToolCall("c2", "refund", {"order_id": f"#1{ERASE}{RTL}", "amount": 10})
    return f"done {ERASE}{RTL}"


agent = Agent(
    name="hostile",
    instructions="Help the customer.",
    tools=[lookup_customer, refund],
    policy=[refunds_need_a_human],
    limits=Limits(max_steps=6),
    model=ScriptedModel(decide, name="scripted:hostile"),
)


@tool(effect="read")
async def wait_for_release() -> str:
    """A step that takes as long as the test wants."""
    Path(os.environ["HOSTILE_STARTED"]).write_text("started")
    release = Path(os.environ["HOSTILE_RELEASE"])
    while not release.exists():
        await asyncio.sleep(0.05)
    return "released"


@tool(effect="write")
def note(text: str) -> str:
    """A write, so the kill switch is read from the store right before it runs."""
    Path(os.environ["HOSTILE_NOTE"]).write_text(text)
    return "noted"


def decide_slow(request: ModelRequest) -> ScriptItem:
    results = [m.content for m in request.messages if m.role == "tool"]
    if not results:
        return ToolCall("w1", "wait_for_release", {})
    if len(results) == 1:
        return ToolCall("n1", "note", {"text": "after the wait"})
    return "finished"


slow_agent = Agent(
    name="slow",
    instructions="Wait, note, then finish.",
    tools=[wait_for_release, note],
    limits=Limits(max_steps=6),
    model=ScriptedModel(decide_slow, name="scripted:slow"),
)


def decide_deep(request: ModelRequest) -> ScriptItem:
    if not [m for m in request.messages if m.role == "tool"]:
        return ToolCall("d1", "lookup_customer", '{"email":' * 5000 + '"a"' + "}" * 5000)
    return "gave up"


deep_agent = Agent(
    name="deep",
    instructions="Look the customer up.",
    tools=[lookup_customer],
    limits=Limits(max_steps=4),
    model=ScriptedModel(decide_deep, name="scripted:deep"),
)


def order_service() -> object:
    """The agent's dependencies, which cannot be built while ``HOSTILE_DEPS_DOWN`` is set."""
    if os.environ.get("HOSTILE_DEPS_DOWN"):
        raise ConnectionError("the order service is down")
    return object()


flaky_agent = Agent(
    name="flaky",
    instructions="Refund the order.",
    tools=[refund],
    policy=[refunds_need_a_human],
    limits=Limits(max_steps=4),
    model=ScriptedModel(
        lambda r: (
            ToolCall("f1", "refund", {"order_id": "#1", "amount": 5})
            if not [m for m in r.messages if m.role == "tool"]
            else "refunded"
        ),
        name="scripted:flaky",
    ),
    deps_factory=order_service,
)


def broken_agent() -> Agent:
    """An agent factory whose setup fails."""
    raise RuntimeError("the order service is unreachable")
