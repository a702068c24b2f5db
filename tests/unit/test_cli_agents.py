"""Continuing a run imports only agent code the operator allowed, never whatever the run's
row names: a store writer cannot make an approver's process run code of its choosing."""

from __future__ import annotations

import json

import pytest

from tests.conftest import tether
from tether.journal.store import Store

REF = "examples.quickstart.agent:agent"
ALLOWED = {"TETHER_AGENTS": f"some.other:agent, {REF}"}


def start_waiting_run(db: str) -> tuple[str, str]:
    out = tether(db, "run", REF, "--input", "Refund order #1001 please", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    return result["run_id"], result["waiting_for"]["approval_id"]


def forge_agent_ref(db: str, run_id: str, ref: str) -> None:
    store = Store(db)
    store.update_run(run_id, agent_ref=ref)
    store.close()


def pending_ids(db: str) -> list[str]:
    return [a["id"] for a in json.loads(tether(db, "approvals", "--json").stdout)]


@pytest.mark.parametrize("command", ["approve", "reject", "resume", "replay"])
def test_a_forged_agent_ref_is_refused_without_importing_it(store_url: str, command: str) -> None:
    run_id, approval_id = start_waiting_run(store_url)
    forge_agent_ref(store_url, run_id, "os:abort")  # importing and calling it aborts the process
    target = run_id if command in ("resume", "replay") else approval_id
    extra = ["--reason", "no"] if command == "reject" else []
    out = tether(store_url, command, target, *extra, env=ALLOWED)
    assert out.returncode == 2, (out.returncode, out.stderr)  # -6 when os.abort ran
    assert "'os:abort', which is not an allowed agent" in out.stderr
    assert "TETHER_AGENTS" in out.stderr and "Traceback" not in out.stderr
    assert pending_ids(store_url) == [approval_id]  # nothing was decided


def test_the_recorded_agent_needs_the_operators_allow_list(store_url: str) -> None:
    _run_id, approval_id = start_waiting_run(store_url)
    refused = tether(store_url, "approve", approval_id)
    assert refused.returncode == 2 and f"add '{REF}' to TETHER_AGENTS" in refused.stderr
    assert pending_ids(store_url) == [approval_id]
    allowed = tether(store_url, "approve", approval_id, "--json", env=ALLOWED)
    assert allowed.returncode == 0, allowed.stderr
    assert json.loads(allowed.stdout)["status"] == "succeeded"


def test_the_operators_agent_option_replaces_the_recorded_one(store_url: str) -> None:
    run_id, approval_id = start_waiting_run(store_url)
    forge_agent_ref(store_url, run_id, "os:abort")
    out = tether(store_url, "approve", approval_id, "--agent", REF, "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["status"] == "succeeded"
