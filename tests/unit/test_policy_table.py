"""Rules, effects and autonomy combine as docs/policy.md's table says: one test per cell.

The table is read from the docs, so the docs and the pipeline cannot drift apart. Each cell runs
the real :class:`~tether.policy.pipeline.PolicyEngine` on a real store; one end-to-end run shows
the cell that matters most (an irreversible call a rule allows) through the runtime.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.conftest import ROOT
from tether import Agent, ScriptedModel, call, tool
from tether.engine import Runtime
from tether.journal import Store
from tether.policy import Decision, DecisionKind, Proposal, Rule, rule
from tether.policy.pipeline import PolicyEngine
from tether.tools import Effect

AUTONOMY = {"not set": None, "auto": "auto", "approve": "approve", "shadow": "shadow"}
OWN = {"rule allows": "allow", "rule approves": "approve", "rule denies": "deny",
       "rule escalates": "escalate"}  # fmt: skip
VERDICTS = ["no rule speaks", "rule allows", "rule approves", "rule denies", "rule escalates"]


def table() -> list[tuple[str, str, str, str]]:
    """(effect, autonomy, rule verdict, outcome) for every cell of the docs' table."""
    text = (ROOT / "docs" / "policy.md").read_text()
    section = text.split("## How decisions combine", 1)[1].split("\n## ", 1)[0]
    lines = section.splitlines()
    rows = [line for line in lines if re.match(r"\| (read|write|irreversible) ", line)]
    cells = []
    for line in rows:
        effect, autonomy, *outcomes = [c.strip() for c in line.strip("|").split("|")]
        assert len(outcomes) == len(VERDICTS), line
        cells += [(effect, autonomy, v, o) for v, o in zip(VERDICTS, outcomes, strict=True)]
    return cells


CELLS = table()


def test_the_table_is_complete() -> None:
    keys = {(e, a, v) for e, a, v, _ in CELLS}
    assert len(CELLS) == len(keys) == 3 * 4 * 5


def rule_saying(verdict: str) -> Rule | None:
    if verdict not in OWN:
        return None
    kind = DecisionKind(OWN[verdict])

    @rule("the-rule")
    def speak(p: Proposal) -> Decision | None:
        return Decision(kind, "the rule says so")

    return speak


@tool(effect="read")
def look() -> str:
    """A read."""
    return "looked"


@tool(effect="write")
def change() -> str:
    """A write."""
    return "changed"


@tool(effect="irreversible")
def destroy() -> str:
    """An irreversible action."""
    return "destroyed"


TOOLS = {Effect.READ: look, Effect.WRITE: change, Effect.IRREVERSIBLE: destroy}


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PolicyEngine]:
    store = Store(str(tmp_path_factory.mktemp("table") / "tether.db"))
    yield PolicyEngine(store)
    store.close()


@pytest.mark.parametrize(
    ("effect", "autonomy", "verdict", "outcome"),
    CELLS,
    ids=[f"{e}-{a.replace(' ', '_')}-{v.replace(' ', '_')}" for e, a, v, _ in CELLS],
)
def test_cell(engine: PolicyEngine, effect: str, autonomy: str, verdict: str, outcome: str) -> None:
    t = TOOLS[Effect(effect)]
    speaker = rule_saying(verdict)
    level = AUTONOMY[autonomy]
    agent = Agent(
        name="table",
        instructions="-",
        tools=[t],
        policy=[] if speaker is None else [speaker],
        autonomy={} if level is None else {t.name: level},
    )
    proposal = Proposal(tool=t.name, effect=t.effect, args={}, agent="table", run_id="r")
    verdict_ = engine.decide(agent, proposal)
    assert verdict_.kind == outcome
    if OWN.get(verdict) == outcome:
        assert verdict_.decision.rule == "the-rule"  # the journal names the rule that decided


@rule("small-is-fine", tools=["destroy"])
def small(p: Proposal) -> Decision | None:
    return Decision.allow("nothing of value")


async def test_an_irreversible_call_a_rule_allows_still_waits_for_a_human(store: Store) -> None:
    agent = Agent(name="table", instructions="-", tools=[destroy], policy=[small])
    rt = Runtime(store, model=ScriptedModel([call("destroy"), "gone"]))
    result = await rt.run(agent, "go")
    assert result.status == "waiting_approval"
    (approval,) = store.list_approvals()
    assert "small-is-fine allows it" in approval.reason


async def test_with_autonomy_auto_a_rule_allows_an_irreversible_call(store: Store) -> None:
    agent = Agent(
        name="table",
        instructions="-",
        tools=[destroy],
        policy=[small],
        autonomy={"destroy": "auto"},
    )
    rt = Runtime(store, model=ScriptedModel([call("destroy"), "gone"]))
    result = await rt.run(agent, "go")
    assert result.ok and result.output == "gone"
    decided = [e.payload for e in store.events(result.run_id) if e.payload.get("decision")]
    assert [(d["decision"], d["rule"]) for d in decided] == [("allow", "small-is-fine")]
    assert store.list_approvals(status=None) == []
