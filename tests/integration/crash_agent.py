"""A multi-step agent with side-effecting tools, driven in a child process by the crash test.

    python -m tests.integration.crash_agent DB LEDGER start
    python -m tests.integration.crash_agent DB LEDGER resume RUN_ID

The ledger is a separate SQLite file standing for the outside world: every transfer the tool
makes is a row there. The scripted model decides from the conversation alone, so a resumed run
continues exactly where the journal says.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
import time

from tether import Agent, Limits, ModelRequest, ScriptedModel, ToolCall, ToolContext, tool
from tether.models.scripted import ScriptItem

TRANSFERS = 8
LEDGER_ENV = "CRASH_LEDGER"


def ledger() -> sqlite3.Connection:
    conn = sqlite3.connect(os.environ[LEDGER_ENV], timeout=30, isolation_level=None)
    conn.execute("CREATE TABLE IF NOT EXISTS attempts (key TEXT, amount INTEGER, ts REAL)")
    conn.execute("CREATE TABLE IF NOT EXISTS effects (key TEXT PRIMARY KEY, amount INTEGER)")
    return conn


@tool(effect="read")
def balance(account: str) -> int:
    """Read the account balance."""
    time.sleep(0.01)
    with ledger() as conn:
        return int(conn.execute("SELECT COALESCE(SUM(amount), 0) FROM effects").fetchone()[0])


@tool(effect="write", idempotent=True)
def transfer(ctx: ToolContext, account: str, amount: int) -> str:
    """Move money; honours the idempotency key, so a retry after a crash is harmless."""
    conn = ledger()
    conn.execute(
        "INSERT INTO attempts VALUES (?, ?, ?)", (ctx.idempotency_key, amount, time.time())
    )
    time.sleep(0.02)  # the window in which a crash leaves the outcome in doubt
    conn.execute("INSERT OR IGNORE INTO effects VALUES (?, ?)", (ctx.idempotency_key, amount))
    conn.close()
    time.sleep(0.01)
    return f"moved {amount} to {account}"


def decide(request: ModelRequest) -> ScriptItem:
    time.sleep(0.01)  # model latency
    done = sum(1 for m in request.messages if m.role == "tool" and m.content.startswith("moved"))
    step = sum(1 for m in request.messages if m.role == "assistant")
    if done >= TRANSFERS:
        return f"moved money {TRANSFERS} times"
    calls = [
        ToolCall(f"s{step}b", "balance", {"account": "acme"}),
        ToolCall(f"s{step}t", "transfer", {"account": "acme", "amount": done + 1}),
    ]
    return calls


agent = Agent(
    name="crash-test",
    instructions="Move money in eight transfers.",
    tools=[balance, transfer],
    limits=Limits(max_steps=40, max_repeats=100),
    model=ScriptedModel(decide, name="scripted:crash"),
)


def main() -> None:
    from tether.engine import Runtime
    from tether.journal import Store

    db, mode = sys.argv[1], sys.argv[3]
    os.environ[LEDGER_ENV] = sys.argv[2]
    runtime = Runtime(Store(db))
    print("READY", flush=True)
    if mode == "start":
        result = asyncio.run(
            runtime.run(agent, "go", agent_ref="tests.integration.crash_agent:agent")
        )
    else:
        result = asyncio.run(runtime.resume(sys.argv[4], agent))
    print("RESULT", result.status, flush=True)


if __name__ == "__main__":
    main()


@tool(effect="irreversible")
def send_wire(account: str, amount: int) -> str:
    """Send money out; no idempotency key. Dies mid-call the first time (marker file)."""
    marker = os.environ[LEDGER_ENV] + ".died"
    if not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), 9)
    return "sent"


wire_agent = Agent(
    name="crash-wire",
    instructions="Send one wire.",
    tools=[send_wire],
    autonomy={"send_wire": "auto"},
    model=ScriptedModel(
        lambda r: (
            "sent"
            if any(m.role == "tool" for m in r.messages)
            else ToolCall("w1", "send_wire", {"account": "x", "amount": 5})
        ),
        name="scripted:wire",
    ),
)
