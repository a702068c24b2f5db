"""Rules see the conversation, humans' answers and the calls that never ran; replay agrees.

A rule that reads state outside ``observe`` diverges on replay, and the report names the rule and
the exception.
"""

from __future__ import annotations

from typing import Any

from tether import Agent, ScriptedModel, call, tool
from tether.builtins import ask_human
from tether.engine import Runtime
from tether.journal import Store
from tether.policy import CallOutcome, Decision, Proposal, rule
from tether.replay import replay_run

SEEN: list[dict[str, Any]] = []


@tool(effect="write")
def change_address(order_id: str, address: str) -> str:
    """Ship an order elsewhere."""
    return f"{order_id} now ships to {address}"


@rule("customer-confirmed", tools=["change_address"])
def customer_confirmed(p: Proposal) -> Decision | None:
    """Only once the customer said yes to exactly this address."""
    SEEN.append(
        {
            "answers": list(p.answers),
            "refused": [(c.tool, c.outcome, c.reason) for c in p.refused],
            "user": p.said("user"),
            "tool_messages": [m.content for m in p.messages if m.role == "tool"],
        }
    )
    if len(p.denied()) >= 2:
        return Decision.escalate("asked twice without a confirmation")
    confirmed = p.answers and p.answers[-1].strip().lower() == f"yes, {p.args['address']}".lower()
    if not confirmed:
        return Decision.deny("ask the customer to confirm the new address first")
    return None


def agent() -> Agent:
    return Agent(name="desk", instructions="-", tools=[change_address, ask_human],
                 policy=[customer_confirmed])  # fmt: skip


async def test_a_rule_reads_answers_and_refused_calls_and_replay_agrees(store: Store) -> None:
    SEEN.clear()
    script = [
        call("change_address", order_id="#1", address="1 Elm St"),
        call("ask_human", question="Ship #1 to 1 Elm St?"),
        call("change_address", order_id="#1", address="1 Elm St"),
        "Done.",
    ]
    rt = Runtime(store, model=ScriptedModel(script))
    a = agent()
    result = await rt.run(a, "Please ship order #1 to 1 Elm St")
    assert result.status == "waiting_input"
    rt.answer(result.run_id, "Yes, 1 Elm St")
    result = await rt.resume(result.run_id, a)
    assert result.ok and result.output == "Done."

    first, second = SEEN
    assert first["answers"] == [] and first["refused"] == []
    assert first["user"] == ["Please ship order #1 to 1 Elm St"]
    assert second["answers"] == ["Yes, 1 Elm St"]
    assert second["refused"] == [
        ("change_address", CallOutcome.DENIED,
         "customer-confirmed: ask the customer to confirm the new address first"),
    ]  # fmt: skip
    assert "The human answered: Yes, 1 Elm St" in second["tool_messages"]

    SEEN.clear()
    report = await replay_run(store, result.run_id, a)
    assert report.matched, report.divergence
    assert [s["answers"] for s in SEEN] == [[], ["Yes, 1 Elm St"]]


@tool(effect="irreversible")
def refund(order_id: str, amount: float) -> str:
    """Refund money."""
    return f"refunded {amount}"


@rule("no-second-try", tools=["refund"])
def no_second_try(p: Proposal) -> Decision | None:
    """A refund a human rejected is not proposed again in another form."""
    if any(c.outcome is CallOutcome.REJECTED and c.tool == "refund" for c in p.refused):
        return Decision.escalate(f"a human rejected a refund: {p.refused[-1].reason}")
    return None


async def test_a_rule_sees_calls_a_human_rejected(store: Store) -> None:
    a = Agent(name="refunds", instructions="-", tools=[refund], policy=[no_second_try])
    script = [call("refund", order_id="#1", amount=50), call("refund", order_id="#1", amount=49),
              "ok"]  # fmt: skip
    rt = Runtime(store, model=ScriptedModel(script))
    result = await rt.run(a, "refund #1")
    assert result.status == "waiting_approval"
    rt.reject(store.list_approvals()[0].id, reason="already refunded by phone", by="bo")
    result = await rt.resume(result.run_id, a)
    assert result.status == "escalated"
    assert result.reason == "no-second-try: a human rejected a refund: already refunded by phone"


@rule("order-open", tools=["refund"])
def order_open(p: Proposal) -> Decision | None:
    """Reads the order straight from deps: not journaled, so replay cannot serve it."""
    if p.deps.get(p.args["order_id"]) != "open":
        return Decision.deny("order is closed")
    return None


async def test_replay_names_the_rule_that_raised(store: Store) -> None:
    a = Agent(name="refunds", instructions="-", tools=[refund], policy=[order_open],
              autonomy={"refund": "auto"})  # fmt: skip
    rt = Runtime(store, model=ScriptedModel([call("refund", order_id="#1", amount=5), "ok"]),
                 deps={"#1": "open"})  # fmt: skip
    result = await rt.run(a, "refund #1")
    assert result.ok
    report = await replay_run(store, result.run_id, a)
    assert not report.matched and report.divergence is not None
    what = report.divergence["what"]
    assert what.startswith("decisions differ: rule 'order-open' raised AttributeError: ")
    assert "p.observe" in what
    assert report.divergence["rule"] == "order-open"
