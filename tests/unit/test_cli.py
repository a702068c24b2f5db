"""The CLI end to end, as a user runs it: real processes, a real store file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import edit_stored_payload, tether

REF = "examples.quickstart.agent:agent"
ALLOWED = {"TETHER_AGENTS": REF}  # the operator allows the quickstart agent to continue runs


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "cli.db"


def start_waiting_run(db: Path) -> tuple[str, str]:
    out = tether(db, "run", REF, "--input", "Refund order #1001 please", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["status"] == "waiting_approval"
    return result["run_id"], result["waiting_for"]["approval_id"]


def test_run_approve_with_edit_and_refuse_a_second_decision(db: Path) -> None:
    run_id, approval_id = start_waiting_run(db)
    pending = json.loads(tether(db, "approvals", "--json").stdout)
    assert [a["id"] for a in pending] == [approval_id]
    assert pending[0]["args"] == {"order_id": "#1001", "amount": 42.5, "reason": "arrived damaged"}
    edit = json.dumps({"order_id": "#1001", "amount": 40, "reason": "partial refund"})
    out = tether(
        db, "approve", approval_id[:10], "--edit", edit, "--by", "alice", "--json", env=ALLOWED
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["output"] == "Done: refunded $40.00 for #1001 (partial refund)."
    again = tether(db, "approve", approval_id, "--by", "mallory")
    assert again.returncode == 2 and "already decided" in again.stderr
    assert "Traceback" not in again.stderr
    shown = tether(db, "show", run_id[:8])
    assert shown.returncode == 0
    assert "edited by alice" in shown.stdout and "succeeded" in shown.stdout
    runs = json.loads(tether(db, "runs", "--json").stdout)
    assert runs[0]["id"] == run_id and runs[0]["status"] == "succeeded"


def test_reject_reaches_the_agent(db: Path) -> None:
    _run_id, approval_id = start_waiting_run(db)
    out = tether(
        db, "reject", approval_id, "--reason", "order is under investigation", "--json", env=ALLOWED
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["status"] == "succeeded"
    assert "order is under investigation" in result["output"]


def test_show_json_has_every_event(db: Path) -> None:
    run_id, _ = start_waiting_run(db)
    data = json.loads(tether(db, "show", run_id, "--json").stdout)
    types = [e["type"] for e in data["events"]]
    assert types[0] == "run_started" and types[-1] == "approval_requested"
    assert [e["seq"] for e in data["events"]] == list(range(1, len(types) + 1))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "no_such_module:agent", "--input", "x"], "cannot import"),
        (["run", "examples.quickstart.agent", "--input", "x"], "must look like"),
        (["run", "examples.quickstart.agent:nothing", "--input", "x"], "has no attribute"),
        (["run", REF, "--input", "  "], "non-empty input"),
        (["run", REF, "--input", "{bad json"], "does not parse"),
        (["show", "nope"], "no such run"),
        (["approve", "nope"], "not found"),
        (["approve", "nope", "--edit", "[1"], "--edit must be a JSON object"),
        (["answer", "nope", "hello"], "no such run"),
    ],
)
def test_bad_input_gives_a_clear_error(db: Path, args: list[str], message: str) -> None:
    out = tether(db, *args)
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr


def test_corrupt_journal_row_is_reported_not_crashed(db: Path) -> None:
    run_id, approval_id = start_waiting_run(db)
    assert edit_stored_payload(db, run_id, 3, lambda payload: payload[:20])
    tether(db, "approve", approval_id, "--no-resume")
    resumed = tether(db, "resume", run_id, env=ALLOWED)
    assert resumed.returncode == 2
    assert f"run {run_id}: event #3 is corrupt" in resumed.stderr
    assert "Traceback" not in resumed.stderr
    shown = tether(db, "show", run_id)  # the rest of the run is still readable
    assert shown.returncode == 0 and "cannot decode" in shown.stdout
    assert "approval_requested" in shown.stdout
