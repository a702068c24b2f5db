"""Exact replay, fork, diff and tamper detection."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from tests.conftest import edit_stored_payload, stored_event_types, tether
from tests.unit.test_engine import EXECUTED, make_agent
from tether import ScriptedModel, call
from tether.engine import Runtime
from tether.journal import Store
from tether.policy import Decision, Proposal, rule
from tether.replay import diff_runs, fork_run, replay_run

REF = "examples.quickstart.agent:agent"


async def recorded_run(store: Store) -> str:
    script = [
        call("lookup", order_id="A"),
        call("update_address", order_id="A", address="1 Elm"),
        call("refund", order_id="A", amount=20),
        "all done",
    ]
    rt = Runtime(store, model=ScriptedModel(script))
    agent = make_agent()
    result = await rt.run(agent, "refund A")
    edited = {"order_id": "A", "amount": 15}
    rt.approve(store.list_approvals()[0].id, by="alice", edit=edited, agent=agent)
    result = await rt.resume(result.run_id, agent)
    assert result.ok and EXECUTED == [("update_address", "1 Elm"), ("refund", 15.0)]
    EXECUTED.clear()
    return result.run_id


async def test_exact_replay_matches_and_calls_nothing_live(sqlite_store: Store) -> None:
    run_id = await recorded_run(sqlite_store)
    report = await replay_run(sqlite_store, run_id, make_agent())
    assert report.matched, report.divergence
    assert report.steps_compared == 4
    assert EXECUTED == []  # tools were served from the journal


async def test_changed_instructions_are_reported_at_step_one(sqlite_store: Store) -> None:
    run_id = await recorded_run(sqlite_store)
    changed = dataclasses.replace(make_agent(), instructions="a new prompt")
    report = await replay_run(sqlite_store, run_id, changed)
    assert not report.matched and report.divergence
    assert report.divergence["step"] == 1
    assert report.divergence["original"]["content"] == "test agent"
    assert report.divergence["replayed"]["content"] == "a new prompt"


async def test_changed_policy_is_reported_at_the_right_step(sqlite_store: Store) -> None:
    run_id = await recorded_run(sqlite_store)

    @rule("no-address-changes", tools=["update_address"])
    def block(p: Proposal) -> Decision | None:
        return Decision.deny("address changes are frozen")

    agent = make_agent()
    changed = dataclasses.replace(agent, policy=[*agent.policy, block])
    report = await replay_run(sqlite_store, run_id, changed)
    assert not report.matched and report.divergence
    assert report.divergence["step"] == 2  # the update_address call was the second step
    assert report.divergence["replayed"][2] == "deny"


async def test_fork_never_executes_side_effects_and_diff_shows_divergence(
    sqlite_store: Store,
) -> None:
    run_id = await recorded_run(sqlite_store)
    live = ScriptedModel(
        [
            call("refund", order_id="A", amount=99),
            call("update_address", order_id="A", address="2 Oak"),
            "forked",
        ]
    )
    new_id = await fork_run(
        sqlite_store,
        run_id,
        from_step=2,
        agent=make_agent(),
        model=live,
        instructions="be generous",
    )
    assert EXECUTED == []  # neither the write nor the irreversible call ran
    fork = sqlite_store.get_run(new_id)
    assert fork.parent_run_id == run_id and fork.fork_step == 2 and fork.status == "succeeded"
    finished = [e.payload for e in sqlite_store.events(new_id) if e.type == "tool_finished"]
    assert finished[0].get("simulated") is None  # step 1's read came from the journal
    assert all(p.get("simulated") for p in finished[1:])
    report = diff_runs(sqlite_store, run_id, new_id)
    assert not report.same and report.first_divergent_step == 2


async def test_fork_reuses_the_recorded_result_of_an_identical_call(sqlite_store: Store) -> None:
    run_id = await recorded_run(sqlite_store)
    live = ScriptedModel([call("update_address", order_id="A", address="1 Elm"), "same"])
    new_id = await fork_run(sqlite_store, run_id, from_step=2, agent=make_agent(), model=live)
    finished = [e.payload for e in sqlite_store.events(new_id) if e.type == "tool_finished"]
    assert finished[-1]["content"] == "updated" and not finished[-1].get("simulated")
    assert EXECUTED == []


@pytest.fixture
def cli_run(tmp_path: Path) -> tuple[Path, str]:
    db = tmp_path / "r.db"
    out = tether(db, "run", REF, "--input", "refund #1001", "--json")
    run_id = json.loads(out.stdout)["run_id"]
    approval = json.loads(tether(db, "approvals", "--json").stdout)[0]["id"]
    assert tether(db, "approve", approval, "--json", "--agent", REF).returncode == 0
    return db, run_id


def test_cli_replay_fork_diff(cli_run: tuple[Path, str], tmp_path: Path) -> None:
    db, run_id = cli_run
    out = tether(db, "replay", run_id, "--agent", REF)
    assert out.returncode == 0 and "replay matched" in out.stdout
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("Refund only half.")
    fork = tether(
        db,
        "replay",
        run_id,
        "--from-step",
        "2",
        "--instructions",
        str(prompt),
        "--json",
        env={"TETHER_AGENTS": REF},
    )
    assert fork.returncode == 0, fork.stderr
    fork_id = json.loads(fork.stdout)["id"]
    diff = json.loads(tether(db, "diff", run_id, fork_id, "--json").stdout)
    assert diff["same"] is False and diff["first_divergent_step"] == 2
    step2 = next(s for s in diff["steps"] if s["step"] == 2)
    assert any("21.25" in json.dumps(item) for item in step2["b"])  # the half refund was proposed
    assert any(item[0] == "result" and item[2] is True for item in step2["b"])  # ...and simulated
    shown = tether(db, "diff", run_id, fork_id)
    assert "first divergence at step 2" in shown.stdout


def test_tampering_is_named_by_verify(cli_run: tuple[Path, str]) -> None:
    db, run_id = cli_run
    assert tether(db, "verify", "--all").returncode == 0
    types = stored_event_types(db, run_id)
    seq = min(s for s, t in types.items() if t == "tool_finished")
    assert edit_stored_payload(db, run_id, seq, lambda payload: payload.replace("42.5", "4.25"))
    out = tether(db, "verify", run_id)
    assert out.returncode == 1
    assert f"run {run_id} event #{seq}" in out.stdout and "edited" in out.stdout
    everything = tether(db, "verify", "--all", "--json")
    assert json.loads(everything.stdout)["problems"][0]["seq"] == seq
