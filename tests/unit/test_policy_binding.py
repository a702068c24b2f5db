"""A run is bound to the policy it started under; edits are checked before they are recorded.

The CLI tests run the real `tether` command in child processes, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import tether
from tether import Agent, ScriptedModel, call, tool
from tether.engine import Runtime
from tether.errors import PolicyMismatch
from tether.journal import Store
from tether.policy import Decision, Proposal, rule

REF = "examples.quickstart.agent:agent"

CAP = """\
[[rule]]
name = "refund-cap"
tool = "refund_order"
arg = "amount"
max = {cap}
reason = "refunds over ${cap} need a supervisor"
"""


def cli(db: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The real CLI on ``db`` (a SQLite file or a PostgreSQL URL), by an operator who allows the
    quickstart agent to continue its runs."""
    return tether(db, *args, env={"TETHER_AGENTS": REF})


def start(db: str, *args: str) -> tuple[str, str]:
    out = cli(db, "run", REF, "--input", "Refund order #1001 please", "--json", *args)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["status"] == "waiting_approval", result
    return result["run_id"], result["waiting_for"]["approval_id"]


def edit(amount: float) -> str:
    return json.dumps({"order_id": "#1001", "amount": amount, "reason": "goodwill"})


def test_a_run_keeps_the_policy_file_it_started_with(store_url: str, tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(CAP.format(cap=200))
    run_id, approval_id = start(store_url, "--policy", str(policy))
    started = json.loads(cli(store_url, "show", run_id, "--json").stdout)["events"][0]
    recorded = started["payload"]["policy"]
    assert recorded["sources"] == [str(policy.resolve())]
    assert recorded["digest"].startswith("sha256:")

    # approved from a process without --policy: the run's policy file is loaded again, and the
    # edit past its cap is refused before anything is recorded
    out = cli(store_url, "approve", approval_id, "--edit", edit(5000))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "refund-cap" in out.stderr and "still pending" in out.stderr
    pending = json.loads(cli(store_url, "approvals", "--json").stdout)
    assert [a["id"] for a in pending] == [approval_id]

    # the file changed since: a process cannot pick it up silently
    policy.write_text(CAP.format(cap=10_000))
    out = cli(store_url, "approve", approval_id, "--edit", edit(5000))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"run {run_id} was started under policy {recorded['digest']}" in out.stderr
    assert "pass --policy FILE" in out.stderr
    out = cli(store_url, "approve", approval_id, "--policy", str(policy), "--edit", edit(5000))
    assert out.returncode == 2 and "was started under policy" in out.stderr
    out = cli(store_url, "resume", run_id)
    assert out.returncode == 2 and "was started under policy" in out.stderr
    assert json.loads(cli(store_url, "approvals", "--json").stdout)[0]["status"] == "pending"

    # the same content under another name is the same policy
    copy = tmp_path / "copy.toml"
    copy.write_text(CAP.format(cap=200))
    out = cli(store_url, "approve", approval_id, "--policy", str(copy), "--edit", edit(150),
              "--json")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["output"] == "Done: refunded $150.00 for #1001 (goodwill)."


def test_an_invalid_edit_leaves_the_approval_pending(store_url: str) -> None:
    run_id, approval_id = start(store_url)
    bad = json.dumps({"order_id": "#1001", "amount": "five thousand", "reason": "x"})
    out = cli(store_url, "approve", approval_id, "--edit", bad)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "edited arguments for refund_order are invalid: amount" in out.stderr
    assert "still pending" in out.stderr and "edited" not in out.stdout
    missing = json.dumps({"order_id": "#1001"})
    out = cli(store_url, "approve", approval_id, "--edit", missing)
    assert out.returncode == 2 and "amount" in out.stderr
    pending = json.loads(cli(store_url, "approvals", "--json").stdout)
    assert [(a["id"], a["status"]) for a in pending] == [(approval_id, "pending")]
    # the human can still correct it
    out = cli(store_url, "approve", approval_id, "--edit", edit(20), "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["status"] == "succeeded"
    shown = json.loads(cli(store_url, "show", run_id, "--json").stdout)
    assert [e["type"] for e in shown["events"]].count("approval_decided") == 1


# -- from Python -----------------------------------------------------------------------------


@tool(effect="irreversible")
def pay(amount: float) -> str:
    """Pay out money."""
    return f"paid {amount}"


@rule("pay-cap", tools=["pay"])
def pay_cap(p: Proposal) -> Decision | None:
    return Decision.deny("over 200") if p.args["amount"] > 200 else None


@rule("pay-cap-loose", tools=["pay"])
def pay_cap_loose(p: Proposal) -> Decision | None:
    return Decision.deny("over 10000") if p.args["amount"] > 10_000 else None


async def test_python_rules_bind_the_run_too(store: Store) -> None:
    agent = Agent(name="payer", instructions="pay", tools=[pay])
    model = ScriptedModel([call("pay", amount=50), "paid"])
    started = Runtime(store, model=model, rules=[pay_cap])
    result = await started.run(agent, "pay 50")
    assert result.status == "waiting_approval"
    approval = store.list_approvals()[0]
    for other in (Runtime(store), Runtime(store, rules=[pay_cap_loose])):
        with pytest.raises(PolicyMismatch, match="was started under policy sha256:"):
            other.approve(approval.id, by="bob", edit={"amount": 5000}, agent=agent)
        with pytest.raises(PolicyMismatch):
            await other.resume(result.run_id, agent)
    assert store.get_approval(approval.id).status == "pending"
    same = Runtime(store, model=model, rules=[pay_cap])
    same.approve(approval.id, by="bob", edit={"amount": 150}, agent=agent)
    result = await same.resume(result.run_id, agent)
    assert result.ok and result.output == "paid"
    resumed = [e for e in store.events(result.run_id) if e.type == "run_resumed"]
    assert resumed[0].payload["same_policy"] is True


def test_replay_runs_under_the_recorded_policy_file(store_url: str, tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(CAP.format(cap=40))
    out = cli(store_url, "run", REF, "--input", "Refund order #1001 please", "--json",
              "--policy", str(policy))  # fmt: skip
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["status"] == "succeeded" and "refund-cap" in result["output"]
    replayed = cli(store_url, "replay", result["run_id"])
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert "replay matched" in replayed.stdout
    policy.write_text(CAP.format(cap=400))  # changed since: the replay refuses to guess
    replayed = cli(store_url, "replay", result["run_id"])
    assert replayed.returncode == 2 and "was started under policy" in replayed.stderr
