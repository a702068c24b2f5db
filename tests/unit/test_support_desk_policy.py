"""The retail policy rules: ground truth passes, every mutation is blocked by the intended rule."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from examples.support_desk import data  # noqa: E402

pytestmark = pytest.mark.skipif(not data.available(), reason="τ²-bench retail data not found")

if data.available():
    from examples.support_desk.mutations import MutationReport, run_mutation_suite
    from examples.support_desk.policy import RULES, blocks, customer, evaluate
    from examples.support_desk.store import Store
    from examples.support_desk.tools import TOOLS_BY_NAME

    from tether.policy import DecisionKind, PastCall, Proposal, Rule, combine, default_decision


@pytest.fixture(scope="module")
def report() -> MutationReport:
    return run_mutation_suite()


@pytest.fixture(scope="module")
def store() -> Store:
    return Store.fresh()


def _proposal(
    store: Store,
    tool: str,
    args: dict[str, Any],
    history: tuple[PastCall, ...] = (),
    run_input: Any = None,
) -> Proposal:
    return Proposal(
        tool=tool,
        effect=TOOLS_BY_NAME[tool].effect,
        args=args,
        agent="support-desk",
        run_id="r",
        run_input=run_input,
        history=history,
        deps=store,
    )


def _final(decisions: list[Any], p: Proposal) -> DecisionKind:
    return combine([*decisions, default_decision(p.effect)]).kind


def test_rules_are_exported_and_named() -> None:
    assert all(isinstance(r, Rule) for r in RULES)
    names = [r.name for r in RULES]
    assert len(names) == len(set(names))
    assert {
        "authenticate-first",
        "one-customer",
        "own-records-only",
        "order-status",
        "cancel-reason",
        "same-product-items",
        "payment-method",
        "confirm-writes",
    } <= set(names)


def test_no_ground_truth_call_is_blocked(report: MutationReport) -> None:
    assert report.ground_truth_checked == sum(
        len(t["evaluation_criteria"]["actions"]) for t in data.load_tasks()
    )
    assert report.false_blocks == 0, report.false_block_details


def test_every_mutation_is_blocked(report: MutationReport) -> None:
    print(f"tried={report.tried} blocked={report.blocked} false_blocks={report.false_blocks}")
    assert report.tried >= 500
    assert report.blocked == report.tried, report.missed[:20]
    kinds = {
        "other_user_order",
        "other_user_profile",
        "wrong_status",
        "other_product_item",
        "poor_gift_card",
        "other_user_payment",
        "skipped_auth",
        "invalid_reason",
        "refund_elsewhere",
        "repeat_change",
    }
    assert set(report.tried_by_kind) == kinds
    assert all(report.tried_by_kind[k] >= 5 for k in kinds), report.tried_by_kind


def test_mutations_are_blocked_by_the_intended_rule(report: MutationReport) -> None:
    assert report.blocked_by_other_rule == []


def test_calls_the_reference_rejects_are_blocked_too(report: MutationReport) -> None:
    # an exchange of a pending order, and one a gift card cannot pay for
    assert sorted(report.correct_blocks) == [
        "task 105 106_0 exchange_delivered_order_items",
        "task 64 64_6 exchange_delivered_order_items",
    ]


SENDER = {"user_id": "yusuf_rossi_9620"}  # the help desk authenticated the ticket's sender


def test_writes_wait_for_confirmation_and_reads_run(store: Store) -> None:
    login = (PastCall("find_user_id_by_email", {"email": "x"}, True, "yusuf_rossi_9620"),)
    read = _proposal(store, "get_order_details", {"order_id": "#W2378156"}, login, SENDER)
    assert evaluate(read) == []
    write = _proposal(
        store,
        "return_delivered_order_items",
        {"order_id": "#W2378156", "item_ids": ["1151293680"], "payment_method_id": "x"},
        login,
        SENDER,
    )
    decisions = evaluate(write)
    assert blocks(decisions)  # "x" is not one of the customer's payment methods
    ok = _proposal(
        store,
        "exchange_delivered_order_items",
        {
            "order_id": "#W2378156",
            "item_ids": ["1151293680", "4983901480"],
            "new_item_ids": ["7706410293", "7747408585"],
            "payment_method_id": "credit_card_9513926",
        },
        login,
        SENDER,
    )
    decisions = evaluate(ok)
    assert [d.rule for d in decisions] == ["confirm-writes"]
    assert _final(decisions, ok) is DecisionKind.APPROVE
    assert "#W2378156" in decisions[0].reason


def test_a_customer_found_by_a_lookup_is_unverified(store: Store) -> None:
    """An unknown sender naming a customer: reads and writes of that account wait for a human,
    under the unverified-identity rule (its reason wins over confirm-writes')."""
    looked_up = {"first_name": "Yusuf", "last_name": "Rossi", "zip": "19122"}
    found = (PastCall("find_user_id_by_name_zip", looked_up, True, "yusuf_rossi_9620"),)
    ticket = {"customer_email": "someone@elsewhere.example"}
    for tool, args in (
        ("get_user_details", {"user_id": "yusuf_rossi_9620"}),
        ("get_order_details", {"order_id": "#W2378156"}),
        ("exchange_delivered_order_items", {
            "order_id": "#W2378156", "item_ids": ["1151293680", "4983901480"],
            "new_item_ids": ["7706410293", "7747408585"],
            "payment_method_id": "credit_card_9513926"}),
    ):  # fmt: skip
        p = _proposal(store, tool, args, found, ticket)
        decisions = evaluate(p)
        final = combine([*decisions, default_decision(p.effect)])
        assert final.kind is DecisionKind.APPROVE and final.rule == "unverified-identity", tool
        assert final.reason.startswith("UNVERIFIED IDENTITY: customer yusuf_rossi_9620")
        assert "someone@elsewhere.example is not a known customer" in final.reason
    # the sender the help desk vouches for is verified, with or without a look-up
    for history in ((), found):
        p = _proposal(store, "get_user_details", {"user_id": "yusuf_rossi_9620"}, history, SENDER)
        assert evaluate(p) == []


def test_identity_from_run_input_email_or_user_id(store: Store) -> None:
    by_email = _proposal(
        store,
        "get_user_details",
        {"user_id": "noah_brown_6181"},
        (),
        {"customer_email": "noah.brown7922@example.com"},
    )
    assert customer(by_email) == "noah_brown_6181"
    assert evaluate(by_email) == []

    class Ticket:
        user_id = "noah_brown_6181"

    assert customer(_proposal(store, "get_user_details", {"user_id": "x"}, (), Ticket())) == (
        "noah_brown_6181"
    )
    text_result = (PastCall("find_user_id_by_email", {}, True, '"noah_brown_6181"'),)
    assert customer(_proposal(store, "calculate", {"expression": "1"}, text_result)) == (
        "noah_brown_6181"
    )


def test_a_second_customer_escalates(store: Store) -> None:
    history = (
        PastCall("find_user_id_by_email", {}, True, "noah_brown_6181"),
        PastCall("find_user_id_by_name_zip", {}, True, "yusuf_rossi_9620"),
    )
    p = _proposal(store, "get_order_details", {"order_id": "#W2378156"}, history)
    kinds = {d.rule: d.kind for d in evaluate(p)}
    assert kinds["one-customer"] is DecisionKind.ESCALATE


def test_failed_login_does_not_authenticate(store: Store) -> None:
    history = (PastCall("find_user_id_by_email", {}, False, "User not found"),)
    p = _proposal(store, "get_user_details", {"user_id": "noah_brown_6181"}, history)
    assert [d.rule for d in evaluate(p)] == ["authenticate-first"]
    public = _proposal(store, "get_product_details", {"product_id": "9523456873"}, history)
    assert evaluate(public) == []


def test_unknown_order_is_left_to_the_tool(store: Store) -> None:
    login = (PastCall("find_user_id_by_email", {}, True, "noah_brown_6181"),)
    p = _proposal(store, "get_order_details", {"order_id": "#9502126"}, login)
    assert not blocks(evaluate(p))
