"""Approvals across OS processes: a run waits, its process exits, a new process decides.

Every decision goes through the real CLI (``python -m tether.cli.app``) in a fresh process, which
resumes the run from its agent reference. Refunds are counted in a separate ledger the tool
writes, so "executed exactly once" is measured outside the journal.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT
from tests.integration.approval_agent import AGENT_REF, ASKED, LEDGER_ENV
from tether.agent_refs import AGENTS_ENV
from tether.engine import Runtime
from tether.errors import UsageError
from tether.journal import Store, verify_chain
from tether.journal.store import args_hash


def _env(ledger: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}",
        LEDGER_ENV: str(ledger),
        AGENTS_ENV: AGENT_REF,  # the operator allows this agent's code to continue its runs
    }
    env.pop("TETHER_DB", None)
    return env


def start(db: str, ledger: Path, requested_by: str | None = None) -> tuple[str, str]:
    """Start a run in its own process, which exits at the approval gate."""
    args = [db, str(ledger), "start", *([requested_by] if requested_by else [])]
    proc = subprocess.run(
        [sys.executable, "-m", "tests.integration.approval_agent", *args],
        cwd=ROOT,
        env=_env(ledger),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    _, status, run_id, approval_id = proc.stdout.split()
    assert status == "waiting_approval"
    return run_id, approval_id


def tether(db: str, ledger: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The real command line, in a new process."""
    return subprocess.run(
        [sys.executable, "-m", "tether.cli.app", *args, "--db", db],
        cwd=ROOT,
        env=_env(ledger),
        capture_output=True,
        text=True,
        timeout=60,
    )


def spawn_tether(db: str, ledger: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tether.cli.app", *args, "--db", db],
        cwd=ROOT,
        env=_env(ledger),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def refunds(ledger: Path) -> list[tuple[str, str, int]]:
    if not ledger.exists():
        return []
    conn = sqlite3.connect(ledger)
    try:
        rows = conn.execute("SELECT idempotency_key, order_id, amount FROM refunds").fetchall()
        return [(str(key), str(order), int(amount)) for key, order, amount in rows]
    finally:
        conn.close()


def events(db: str, run_id: str, type_: str) -> list[dict[str, Any]]:
    with Store(db) as store:
        return [e.payload for e in store.events(run_id) if e.type == type_]


def test_edited_approval_from_a_new_process_executes_once(store_url: str, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.db"
    run_id, approval_id = start(store_url, ledger)
    # the first process is gone; nothing was paid; the approval waits in the store
    assert refunds(ledger) == []
    with Store(store_url) as store:
        pending = store.get_approval(approval_id)
        assert pending.status == "pending" and pending.args == ASKED
        assert pending.args_hash == args_hash(ASKED) and pending.consumed_at is None
        assert store.get_run(run_id).status == "waiting_approval"
        [listed] = store.list_approvals(status="pending")
        assert listed.id == approval_id

    edit = {"order_id": "#W100", "amount": 80}
    proc = tether(
        store_url,
        ledger,
        "approve",
        approval_id[:12],
        "--edit",
        json.dumps(edit),
        "--by",
        "bob",
        "--reason",
        "partial refund agreed",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["run_id"] == run_id and result["status"] == "succeeded"
    assert result["output"] == "outcome: refunded 80 for #W100"
    # the edited call ran, exactly once; the original $150 never did
    [(key, order, amount)] = refunds(ledger)
    assert (order, amount) == ("#W100", 80) and key.startswith(f"{run_id}:")

    [decided] = events(store_url, run_id, "approval_decided")
    assert decided["status"] == "edited" and decided["by"] == "bob"
    assert decided["edited_args"] == edit and decided["reason"] == "partial refund agreed"
    assert isinstance(decided["at"], float)
    [recheck] = [p for p in events(store_url, run_id, "policy_decision") if p.get("recheck")]
    assert recheck["decision"] == "allow" and recheck["args"] == edit
    assert len(events(store_url, run_id, "tool_started")) == 1
    with Store(store_url) as store:
        record = store.get_approval(approval_id)
        assert record.status == "edited" and record.decided_by == "bob"
        assert record.edited_args == edit and record.consumed_at is not None
        assert record.args_hash == args_hash(ASKED)  # bound to what the agent asked for
        assert verify_chain(run_id, store.events(run_id)) is None
        seen = store.count_events(run_id)

    # the same decision again, from yet another process: refused, nothing runs
    again = tether(store_url, ledger, "approve", approval_id, "--by", "mallory")
    assert again.returncode == 2 and "already decided" in again.stderr, again.stderr
    rejected = tether(store_url, ledger, "reject", approval_id, "--reason", "too late")
    assert rejected.returncode == 2 and "already decided" in rejected.stderr
    with Store(store_url) as store:
        assert store.consume_approval(approval_id) is False  # consumed once, by the run
        assert store.get_approval(approval_id).decided_by == "bob"

    # resuming the finished run, in a new process, executes nothing more
    resumed = tether(store_url, ledger, "resume", run_id, "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["status"] == "succeeded"
    assert refunds(ledger) == [(key, "#W100", 80)]
    with Store(store_url) as store:
        assert store.count_events(run_id) == seen


def test_four_eyes_refuses_the_requester(store_url: str, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.db"
    run_id, approval_id = start(store_url, ledger, requested_by="alice")
    with Store(store_url) as store:
        assert store.get_run(run_id).requested_by == "alice"
        runtime = Runtime(store)
        with pytest.raises(UsageError, match="four-eyes rule: alice started run"):
            runtime.approve(approval_id, by="alice", four_eyes=True)
        assert store.get_approval(approval_id).status == "pending"

    own = tether(store_url, ledger, "approve", approval_id, "--four-eyes", "--by", "alice")
    assert own.returncode == 2 and "four-eyes rule" in own.stderr, own.stderr
    assert refunds(ledger) == []
    with Store(store_url) as store:
        assert store.get_approval(approval_id).status == "pending"
        assert store.get_run(run_id).status == "waiting_approval"

    other = tether(
        store_url, ledger, "approve", approval_id, "--four-eyes", "--by", "bob", "--json"
    )
    assert other.returncode == 0, other.stderr
    assert json.loads(other.stdout)["status"] == "succeeded"
    assert [(o, a) for _, o, a in refunds(ledger)] == [("#W100", 150)]
    [decided] = events(store_url, run_id, "approval_decided")
    assert decided["status"] == "approved" and decided["by"] == "bob"


def test_rejection_from_a_new_process_reaches_the_model(store_url: str, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.db"
    run_id, approval_id = start(store_url, ledger)
    proc = tether(
        store_url,
        ledger,
        "reject",
        approval_id,
        "--reason",
        "customer already got a voucher",
        "--by",
        "carol",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["status"] == "succeeded"
    assert result["output"] == "outcome: A human rejected this call: customer already got a voucher"
    assert refunds(ledger) == []
    [decided] = events(store_url, run_id, "approval_decided")
    assert decided["status"] == "rejected" and decided["by"] == "carol"
    late = tether(store_url, ledger, "approve", approval_id)
    assert late.returncode == 2 and "already decided" in late.stderr
    assert refunds(ledger) == []


def test_edit_past_a_rule_is_refused_after_restart(store_url: str, tmp_path: Path) -> None:
    """The edit is checked by the agent's rules before it is recorded: refused, still pending,
    and the human can decide again."""
    ledger = tmp_path / "ledger.db"
    run_id, approval_id = start(store_url, ledger)
    edit = json.dumps({"order_id": "#W100", "amount": 900})
    proc = tether(store_url, ledger, "approve", approval_id, "--edit", edit, "--json")
    said = " ".join(proc.stderr.split())  # (as one line: the console wraps long messages)
    assert proc.returncode == 2 and "Traceback" not in said
    assert "refund-cap: refunds over $500 need finance" in said and "still pending" in said
    assert refunds(ledger) == []
    assert events(store_url, run_id, "approval_decided") == []
    proc = tether(store_url, ledger, "approve", approval_id, "--edit",
                  json.dumps({"order_id": "#W100", "amount": 90}), "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["status"] == "succeeded"
    assert [amount for _, _, amount in refunds(ledger)] == [90]


def test_concurrent_resumes_of_one_approved_run_pay_once(store_url: str, tmp_path: Path) -> None:
    """Four workers pick up the same approved run at once: the run's lease lets one drive it;
    the others are refused before anything is journaled, or find the run finished."""
    ledger = tmp_path / "ledger.db"
    run_id, approval_id = start(store_url, ledger)
    decided = tether(store_url, ledger, "approve", approval_id, "--by", "bob", "--no-resume")
    assert decided.returncode == 0, decided.stderr
    assert refunds(ledger) == []
    procs = [spawn_tether(store_url, ledger, "resume", run_id, "--json") for _ in range(4)]
    outs: list[tuple[int, str, str]] = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        outs.append((p.returncode, out, err))
    assert all(code in (0, 2) for code, _, _ in outs), outs
    assert any(code == 0 for code, _, _ in outs), outs
    for code, _, err in outs:
        if code == 2:  # another worker held the run's lease
            assert f"run {run_id} is being driven by" in " ".join(err.split()), err
    assert [(o, a) for _, o, a in refunds(ledger)] == [("#W100", 150)]
    with Store(store_url) as store:
        run = store.get_run(run_id)
        assert verify_chain(run_id, store.events(run_id)) is None
    # one driver at a time: no worker ever found the refund started but unfinished
    assert run.status == "succeeded", (run.status, run.reason)
