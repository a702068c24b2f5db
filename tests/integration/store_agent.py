"""A small multi-step agent driven in a child process by the store-fault tests.

    python -m tests.integration.store_agent URL open GO_FILE
        wait until GO_FILE exists, then open the store and complete one small run
    python -m tests.integration.store_agent URL run STEPS
        complete one run of STEPS steps, printing each step as it starts

Each run prints ``RESULT <run id> <status>`` at its end.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from tether import Agent, ModelRequest, ScriptedModel, ToolCall, tool
from tether.models.scripted import ScriptItem


@tool(effect="write", idempotent=True)
def note(text: str) -> str:
    """Write a note (a side effect, so the engine writes the journal before and after it)."""
    print("STEP", text, flush=True)
    time.sleep(float(_PACE[0]))
    return f"noted {text}"


_PACE = ["0"]
_STEPS = [3]


def decide(request: ModelRequest) -> ScriptItem:
    done = sum(1 for m in request.messages if m.role == "tool")
    if done >= _STEPS[0]:
        return f"wrote {done} notes"
    return ToolCall(f"n{done}", "note", {"text": str(done + 1)})


agent = Agent(
    name="store-faults",
    instructions="Write the notes.",
    tools=[note],
    model=ScriptedModel(decide, name="scripted:notes"),
)


def main() -> None:
    from tether.engine import Runtime
    from tether.journal import Store

    url, mode = sys.argv[1], sys.argv[2]
    if mode == "open":
        go = Path(sys.argv[3])
        print("READY", flush=True)
        while not go.exists():
            time.sleep(0.001)
    else:
        _STEPS[0] = int(sys.argv[3])
        _PACE[0] = sys.argv[4] if len(sys.argv) > 4 else "0.2"
    store = Store(url)
    result = asyncio.run(Runtime(store).run(agent, "go"))
    print("RESULT", result.run_id, result.status, flush=True)
    store.close()


if __name__ == "__main__":
    main()
