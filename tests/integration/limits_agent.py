"""A refund agent driven in a child process by the limits concurrency test.

    python -m tests.integration.limits_agent DB LEDGER POLICY GO NOW WORKER RUNS_JSON

Each child loads the hard limits from the POLICY file, prints ``READY``, waits until the file GO
exists (so every child starts at once), then runs its runs one after another. A run's input is
``{"customer": ..., "amounts": [...]}``: the scripted model asks for one ``issue_refund`` per
amount, one per turn, whatever the policy said of the one before, then finishes.

The ledger is a separate SQLite file standing for the payment system: every refund the tool
really issues is a row there. NOW fixes the instant the limits are counted at, so a run that
straddles midnight cannot open a second daily window. The child ends with one ``RESULT`` line of
JSON: its worker number, when its first and last run started and ended, and each run's status.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import sys
import time
from typing import Any

from tether import Agent, Limits, ModelRequest, ScriptedModel, ToolCall, ToolContext, tool
from tether.models.scripted import ScriptItem

LEDGER_ENV = "LIMITS_LEDGER"
WORKER_ENV = "LIMITS_WORKER"
AGENT_NAME = "refund-desk"


def ledger() -> sqlite3.Connection:
    conn = sqlite3.connect(os.environ[LEDGER_ENV], timeout=60, isolation_level=None)
    conn.execute(
        "CREATE TABLE IF NOT EXISTS refunds (worker INTEGER, run_id TEXT, call_id TEXT, "
        "customer TEXT, amount INTEGER, started REAL, finished REAL)"
    )
    return conn


@tool(effect="write")
def issue_refund(ctx: ToolContext, customer: str, amount: int) -> str:
    """Refund ``amount`` dollars to a customer."""
    started = time.time()
    time.sleep(0.005)  # the payment provider's latency: other workers reserve meanwhile
    conn = ledger()
    try:
        conn.execute(
            "INSERT INTO refunds VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                int(os.environ[WORKER_ENV]),
                ctx.run_id,
                ctx.call_id,
                customer,
                amount,
                started,
                time.time(),
            ),
        )
    finally:
        conn.close()
    return f"refunded {amount} to {customer}"


def decide(request: ModelRequest) -> ScriptItem:
    spec = json.loads(request.messages[1].content)
    turn = sum(1 for m in request.messages if m.role == "assistant")
    amounts: list[int] = spec["amounts"]
    if turn >= len(amounts):
        done = sum(
            1 for m in request.messages if m.role == "tool" and m.content.startswith("refunded")
        )
        return f"issued {done} of {len(amounts)} refunds"
    return ToolCall(
        f"t{turn}", "issue_refund", {"customer": spec["customer"], "amount": amounts[turn]}
    )


agent = Agent(
    name=AGENT_NAME,
    instructions="Issue the refunds you are asked for.",
    tools=[issue_refund],
    limits=Limits(max_steps=20, max_consecutive_failures=100, max_repeats=100),
    model=ScriptedModel(decide, name="scripted:refunds"),
)


def main() -> None:
    from tether.engine import Runtime
    from tether.journal import Store
    from tether.policy.config import load_policy

    db, ledger_path, policy_path, go, now, worker, runs_json = sys.argv[1:8]
    os.environ[LEDGER_ENV] = ledger_path
    os.environ[WORKER_ENV] = worker
    policy = load_policy(policy_path)
    runtime = Runtime(Store(db), rules=policy.rules, limits=policy.limits)
    fixed = float(now)
    runtime.policy.clock = lambda: fixed
    inputs: list[dict[str, Any]] = json.loads(runs_json)
    ledger().close()
    print("READY", flush=True)
    deadline = time.monotonic() + 60
    while not os.path.exists(go):
        if time.monotonic() > deadline:
            raise SystemExit("never told to start")
        time.sleep(0.002)
    started = time.time()
    statuses = [asyncio.run(runtime.run(agent, spec)).status for spec in inputs]
    report = {
        "worker": int(worker),
        "started": started,
        "finished": time.time(),
        "statuses": statuses,
    }
    runtime.store.close()
    print("RESULT", json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
