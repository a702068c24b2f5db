"""Replaying the oracle's support-desk runs from their journals.

Every one of the 114 runs replays with every decision the same. A changed agent is caught where
it changes something: new instructions at the first step, a new policy rule at the step whose
call it decides differently.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from examples.support_desk import data  # noqa: E402

from tests.conftest import PG_URL, fresh_pg_url  # noqa: E402

pytestmark = pytest.mark.skipif(not data.available(), reason="τ²-bench retail data not found")

if data.available():
    from examples.support_desk.oracle import OracleModel, TaskResult, oracle_agent, run_task
    from examples.support_desk.policy import RULES

    from tether.journal import Store as Journal
    from tether.journal.events import proposal_of
    from tether.models.faults import FaultModel
    from tether.models.retry import RetryModel
    from tether.policy import Decision, Proposal, rule
    from tether.replay import replay_run


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def recorded(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Journal, dict[str, TaskResult]]]:
    """All 114 oracle runs, kept in one journal: a SQLite file, or PostgreSQL."""
    if request.param == "sqlite":
        journal = Journal(str(tmp_path_factory.mktemp("oracle") / "journal.db"))
    else:
        journal = Journal(fresh_pg_url(PG_URL))

    async def record() -> list[TaskResult]:
        results = []
        for task in data.load_tasks():
            results.append(await run_task(task["id"], journal=journal))
        return results

    results = asyncio.run(record())
    assert all(r.ok for r in results), [r.task_id for r in results if not r.ok]
    yield journal, {r.task_id: r for r in results}
    journal.close()


def _step_of_call(journal: Journal, run_id: str, tool: str) -> int:
    for ev in journal.events(run_id):
        proposed = proposal_of(ev.data)
        if proposed is not None and proposed.tool == tool:
            return ev.step
    raise AssertionError(f"run {run_id} never proposed {tool}")


async def test_every_oracle_run_replays_exactly(
    recorded: tuple[Journal, dict[str, TaskResult]],
) -> None:
    journal, results = recorded
    mismatches = {}
    for task_id, result in results.items():
        report = await replay_run(journal, result.run_id, oracle_agent())
        if not report.matched:
            mismatches[task_id] = report.divergence
        assert report.steps_compared == result.steps or not report.matched
    assert not mismatches, mismatches
    assert len(results) == 114


async def test_changed_instructions_diverge_at_the_first_step(
    recorded: tuple[Journal, dict[str, TaskResult]],
) -> None:
    journal, results = recorded
    agent = oracle_agent()
    changed = dataclasses.replace(agent, instructions=agent.instructions + "\nBe brief.")
    for task_id in ("0", "70", "113"):
        report = await replay_run(journal, results[task_id].run_id, changed)
        assert not report.matched and report.divergence
        assert report.divergence["step"] == 1
        assert report.divergence["what"] == "the prompt differs at message 0"
        assert report.divergence["replayed"]["content"].endswith("Be brief.")


async def test_a_new_rule_diverges_at_the_call_it_denies(
    recorded: tuple[Journal, dict[str, TaskResult]],
) -> None:
    journal, results = recorded

    @rule("no-exchanges", tools=["exchange_delivered_order_items"])
    def no_exchanges(p: Proposal) -> Decision | None:
        return Decision.deny("exchanges are suspended")

    agent = oracle_agent()
    changed = dataclasses.replace(agent, policy=[*RULES, no_exchanges])
    for task_id in ("0", "70", "91"):
        run_id = results[task_id].run_id
        step = _step_of_call(journal, run_id, "exchange_delivered_order_items")
        assert step == {"0": 5, "70": 1, "91": 2}[task_id]  # its place in the ground truth
        report = await replay_run(journal, run_id, changed)
        assert not report.matched and report.divergence
        assert report.divergence["step"] == step
        assert report.divergence["original"][:3] == (
            "decision", "exchange_delivered_order_items", "approve",
        )  # fmt: skip
        assert report.divergence["replayed"] == (
            "decision", "exchange_delivered_order_items", "deny", "no-exchanges",
        )  # fmt: skip
    # a task without exchanges is not affected by the new rule
    report = await replay_run(journal, results["88"].run_id, changed)  # a cancellation
    assert report.matched, report.divergence


async def test_dropping_the_confirmation_rule_diverges_at_the_first_write(
    recorded: tuple[Journal, dict[str, TaskResult]],
) -> None:
    journal, results = recorded
    agent = oracle_agent()
    changed = dataclasses.replace(agent, policy=[r for r in RULES if r.name != "confirm-writes"])
    run_id = results["78"].run_id  # address change (a write), then item change and cancel
    step = _step_of_call(journal, run_id, "modify_pending_order_address")
    report = await replay_run(journal, run_id, changed)
    assert not report.matched and report.divergence
    assert report.divergence["step"] == step
    assert report.divergence["original"] == (
        "decision", "modify_pending_order_address", "approve", "confirm-writes",
    )  # fmt: skip
    assert report.divergence["replayed"][2] == "allow"


async def test_a_run_with_injected_faults_replays_exactly() -> None:
    journal = Journal(":memory:")

    def faulty(oracle: OracleModel) -> RetryModel:
        inner = FaultModel(oracle, 0.3, seed=7)
        return RetryModel(inner, base_delay=0.0, jitter=False)

    result = await run_task("0", journal=journal, model=faulty)
    assert result.ok, result.problems
    kinds = {
        (e.payload["response"].get("meta") or {}).get("fault")
        for e in journal.events(result.run_id)
        if e.type == "model_response"
    }
    assert kinds - {None}, "the seed should inject at least one fault"
    report = await replay_run(journal, result.run_id, oracle_agent())
    assert report.matched, report.divergence
    journal.close()


async def test_a_decision_that_depends_on_an_earlier_write_replays() -> None:
    """Cancel an order, then cancel it again (denied: it is cancelled).

    In the replay the first cancel is served from the journal, so the live store still has the
    order pending; the order-status rule reads it through ``Proposal.observe``, so the replay
    sees the state the run saw and decides the same way.
    """
    from examples.support_desk.guardrails import run_case, task_cases
    from examples.support_desk.oracle import task_by_id

    journal = Journal(":memory:")
    case = next(c for c in task_cases(task_by_id("88")) if c.kind == "repeat_change")
    result = await run_case(case, journal)
    assert result.blocked and result.rule == "order-status"
    report = await replay_run(journal, result.run_id, oracle_agent())
    journal.close()
    assert report.matched, report.divergence
