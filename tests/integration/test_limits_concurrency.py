"""Hard limits hold under contention: many OS processes, one counter, never one call too many.

Each test starts WORKERS child processes (``tests/integration/limits_agent.py``) against the same
store, SQLite file or PostgreSQL schema. They load their limits from a policy file, wait for a
common start signal, then each runs RUNS runs of a refund agent. The tool writes every refund it
really issues to a separate ledger; the journal holds every policy decision. Afterwards:

* executions never exceed the limit, and reach it exactly (so the workers really competed);
* the limit's denials are exactly the attempts it turned away;
* the counter in the store agrees with the ledger.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tether
from tests.conftest import ROOT
from tests.integration.limits_agent import AGENT_NAME
from tether import Agent, ScriptedModel, call, tool
from tether.engine import Runtime
from tether.journal import Store
from tether.journal.events import proposal_of
from tether.policy import Limit

WORKERS = 8
RUNS = 3
CALLS_PER_RUN = 2
DAY = 86_400


@dataclass
class Outcome:
    attempts: list[dict[str, Any]]  # every proposed refund, from the journal
    executed: list[tuple[int, str, int]]  # (worker, customer, amount), from the ledger
    denials: Counter[str]  # limit name -> deny decisions
    reports: list[dict[str, Any]]
    now: float


def _spawn(args: list[str]) -> subprocess.Popen[str]:
    # the children import the tether this test imported
    src = Path(tether.__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), str(ROOT)])}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.integration.limits_agent", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def contend(
    store_url: str, tmp_path: Path, policy: str, inputs: list[list[dict[str, Any]]]
) -> Outcome:
    """Run ``inputs[w]`` in worker ``w``, all workers at once; collect what happened."""
    Store(store_url).close()  # create the schema once, before the workers race
    ledger, go = tmp_path / "ledger.db", tmp_path / "go"
    policy_path = tmp_path / "policy.toml"
    policy_path.write_text(textwrap.dedent(policy), encoding="utf-8")
    now = time.time()
    procs = [
        _spawn(
            [store_url, str(ledger), str(policy_path), str(go), repr(now), str(w), json.dumps(runs)]
        )
        for w, runs in enumerate(inputs)
    ]
    try:
        for p in procs:
            assert p.stdout is not None
            line = p.stdout.readline()
            assert line.strip() == "READY", (line, p.stderr.read() if p.stderr else "")
        go.touch()
        reports = []
        for p in procs:
            out, err = p.communicate(timeout=90)
            assert p.returncode == 0, err
            result = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
            assert result, (out, err)
            reports.append(json.loads(result[0].removeprefix("RESULT ")))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()

    conn = sqlite3.connect(ledger)
    executed = [
        (int(w), str(c), int(a))
        for w, c, a in conn.execute("SELECT worker, customer, amount FROM refunds")
    ]
    conn.close()
    store = Store(store_url)
    try:
        attempts: list[dict[str, Any]] = []
        denials: Counter[str] = Counter()
        for run in store.list_runs(limit=10_000):
            for ev in store.events(run.id):
                proposed = proposal_of(ev.data)
                if proposed is not None:
                    attempts.append(proposed.args)
                elif ev.type == "policy_decision" and ev.payload["decision"] == "deny":
                    denials[ev.payload["rule"]] += 1
    finally:
        store.close()
    return Outcome(attempts, executed, denials, reports, now)


def assert_all_ran_at_once(outcome: Outcome) -> None:
    """Every worker was running when the last one started: the runs really overlapped."""
    reports = outcome.reports
    assert len(reports) == WORKERS
    assert all(s == "succeeded" for r in reports for s in r["statuses"]), reports
    assert max(r["started"] for r in reports) < min(r["finished"] for r in reports)


def counter(store_url: str, name: str, key: str, now: float) -> tuple[int, float]:
    store = Store(store_url)
    try:
        return store.counter(name, f"{AGENT_NAME}|{key}", int(now // DAY) * DAY)
    finally:
        store.close()


COUNT_LIMIT = 10
COUNT_POLICY = f"""
[[limit]]
name = "refunds-per-customer"
tools = ["issue_refund"]
per = "customer"
max_count = {COUNT_LIMIT}
window = "1d"

[[limit]]
name = "refund-dollars"
tools = ["issue_refund"]
amount = "amount"
max_total = 1000000
window = "1d"
"""


def test_daily_count_limit_is_never_exceeded(store_url: str, tmp_path: Path) -> None:
    customers = ["c-1", "c-2"]
    inputs = [
        [
            {"customer": customers[(w + r) % 2], "amounts": [10 + w] * CALLS_PER_RUN}
            for r in range(RUNS)
        ]
        for w in range(WORKERS)
    ]
    outcome = contend(store_url, tmp_path, COUNT_POLICY, inputs)
    assert_all_ran_at_once(outcome)

    attempts = Counter(a["customer"] for a in outcome.attempts)
    executed = Counter(c for _, c, _ in outcome.executed)
    assert sum(attempts.values()) == WORKERS * RUNS * CALLS_PER_RUN == 48
    for customer in customers:
        assert attempts[customer] == 24
        # never more, and the limit was reached
        assert executed[customer] == COUNT_LIMIT, (customer, executed)
        count, total = counter(
            store_url, "refunds-per-customer", f"customer={customer}", outcome.now
        )
        assert (count, total) == (COUNT_LIMIT, COUNT_LIMIT)  # no amount: each call adds 1
    # every attempt past the limit, and only those, was denied by that limit
    assert outcome.denials == Counter({"refunds-per-customer": 48 - 2 * COUNT_LIMIT})
    # the refunds that went through came from several competing processes
    assert len({w for w, _, _ in outcome.executed}) >= 2


DOLLAR_LIMIT = 500
DOLLAR_POLICY = f"""
[[limit]]
name = "refund-dollars"
tools = ["issue_refund"]
amount = "amount"
max_total = {DOLLAR_LIMIT}
window = "1d"

[[limit]]
name = "refunds-per-customer"
tools = ["issue_refund"]
per = "customer"
max_count = 1000
window = "1d"
"""


def test_daily_dollar_limit_is_never_exceeded(store_url: str, tmp_path: Path) -> None:
    sizes = [5, 20, 35, 50, 65]
    inputs: list[list[dict[str, Any]]] = [
        [
            {
                "customer": f"c-{w}-{r}",
                "amounts": [
                    sizes[(w * RUNS * CALLS_PER_RUN + r * CALLS_PER_RUN + i) % len(sizes)]
                    for i in range(CALLS_PER_RUN)
                ],
            }
            for r in range(RUNS)
        ]
        for w in range(WORKERS)
    ]
    asked = sum(a for runs in inputs for run in runs for a in run["amounts"])
    assert asked > 3 * DOLLAR_LIMIT
    outcome = contend(store_url, tmp_path, DOLLAR_POLICY, inputs)
    assert_all_ran_at_once(outcome)

    paid = sum(a for _, _, a in outcome.executed)
    assert len(outcome.attempts) == WORKERS * RUNS * CALLS_PER_RUN
    assert paid <= DOLLAR_LIMIT, outcome.executed
    count, total = counter(store_url, "refund-dollars", "*", outcome.now)
    assert (count, total) == (len(outcome.executed), paid)
    # saturated: each refund turned away really did not fit, even under the final total
    executed_amounts = Counter(a for _, _, a in outcome.executed)
    denied_amounts = Counter(a["amount"] for a in outcome.attempts) - executed_amounts
    assert denied_amounts, "the limit never bit"
    assert all(paid + amount > DOLLAR_LIMIT for amount in denied_amounts)
    assert outcome.denials == Counter(
        {"refund-dollars": len(outcome.attempts) - len(outcome.executed)}
    )
    assert len({w for w, _, _ in outcome.executed}) >= 2


def test_a_denied_call_consumes_no_other_limit(tmp_path: Path) -> None:
    """Limits are reserved in order; a call refused by the second must not count in the first."""
    policy = """
    [[limit]]
    name = "refunds-per-customer"
    tools = ["issue_refund"]
    per = "customer"
    max_count = 5
    window = "1d"

    [[limit]]
    name = "refund-dollars"
    tools = ["issue_refund"]
    amount = "amount"
    max_total = 100
    window = "1d"
    """
    store_url = str(tmp_path / "one.db")
    inputs = [[{"customer": "c", "amounts": [60, 60, 30]}]]
    outcome = contend(store_url, tmp_path, policy, inputs)
    assert [a for _, _, a in outcome.executed] == [60, 30]
    assert outcome.denials == Counter({"refund-dollars": 1})
    count, _ = counter(store_url, "refunds-per-customer", "customer=c", outcome.now)
    assert count == 2  # the refused $60 must not be counted


async def test_an_approved_call_still_counts_against_limits(tmp_path: Path) -> None:
    """A human approval is not a way around a hard limit: the third approved refund is denied."""
    paid: list[int] = []

    @tool(effect="irreversible")
    def wire(amount: int) -> str:
        """Send money; waits for a human by default."""
        paid.append(amount)
        return "sent"

    cap = Limit("two-wires", tools=frozenset({"wire"}), max_count=2)
    agent = Agent(name="wires", instructions="x", tools=[wire], policy=[cap])
    with Store(str(tmp_path / "t.db")) as store:
        for amount in (10, 20, 30):
            rt = Runtime(store, model=ScriptedModel([call("wire", amount=amount), "done"]))
            result = await rt.run(agent, "go")
            assert result.status == "waiting_approval"
            rt.approve(store.list_approvals()[0].id, by="bob")
            await rt.resume(result.run_id, agent)
        assert paid == [10, 20]
