"""Journal flushing: read-only work is group-committed, side effects never wait."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tether import (
    Agent,
    Limits,
    ModelRequest,
    ModelResponse,
    ScriptedModel,
    ToolCall,
    ToolContext,
    call,
    tool,
)
from tether.engine import Runtime
from tether.journal import Store

SEEN: dict[str, Any] = {}


def durable_types(path: Path) -> list[str]:
    """What another process would find in the journal right now."""
    other = Store(str(path))
    try:
        run_id = other.list_runs()[0].id
        return [e.type for e in other.events(run_id)]
    finally:
        other.close()


@tool
def look(key: str) -> str:
    """A read."""
    return f"value of {key}"


class SlowModel:
    """Answers after a pause; on its second call, records what is already on disk."""

    name = "slow"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.calls = 0

    async def request(self, request: ModelRequest) -> ModelResponse:
        self.calls += 1
        if self.calls == 1:
            return ModelResponse(tool_calls=[ToolCall("c1", "look", {"key": "a"})])
        await asyncio.sleep(0.2)  # a slow model: the loop is idle meanwhile
        SEEN["while_waiting"] = durable_types(self.path)
        return ModelResponse(text="done")


async def test_finished_read_steps_are_written_while_the_model_thinks(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    runtime = Runtime(Store(str(path)), model=SlowModel(path))
    result = await runtime.run(Agent(name="g", instructions="x", tools=[look]), "go")
    assert result.ok
    # step 1 (a read) reached the disk within the flush interval, before step 2 ended
    assert "tool_finished" in SEEN["while_waiting"]
    assert "run_finished" not in SEEN["while_waiting"]


@tool(effect="write")
def write(ctx: ToolContext, key: str) -> str:
    """A write that checks its own intent is already durable."""
    SEEN["during_write"] = durable_types(SEEN["path"])
    return "written"


async def test_a_side_effect_runs_only_after_its_intent_is_durable(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    SEEN["path"] = path
    agent = Agent(name="w", instructions="x", tools=[look, write], limits=Limits(max_repeats=10))
    script = [call("look", key="a"), call("write", key="a"), "ok"]
    result = await Runtime(Store(str(path)), model=ScriptedModel(script)).run(agent, "go")
    assert result.ok
    during = SEEN["during_write"]
    assert during[-1] == "tool_started" and during.count("tool_finished") == 1  # the read's
