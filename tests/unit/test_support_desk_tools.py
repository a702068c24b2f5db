"""The retail tools replay all 114 ground-truth task scripts to exactly the expected outcome."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from examples.support_desk import data  # noqa: E402

pytestmark = pytest.mark.skipif(not data.available(), reason="τ²-bench retail data not found")

if data.available():
    from examples.support_desk.oracle_direct import call_tool, replay_task, strip_error_prefix
    from examples.support_desk.store import Store
    from examples.support_desk.tools import TOOLS, TOOLS_BY_NAME

    from tether import Effect, ToolContext, ToolError

    TASK_IDS = [t["id"] for t in data.load_tasks()]
else:  # pragma: no cover - data missing
    TASK_IDS = []


@pytest.fixture(scope="module")
def shared_store() -> Iterator[Store]:
    store = Store.fresh()
    yield store
    store.close()


@pytest.fixture
def store() -> Store:
    return Store.fresh()


def _ctx(store: Store, key: str = "k1", simulated: bool = False) -> ToolContext:
    return ToolContext(
        run_id="r",
        agent="support-desk",
        step=1,
        call_id=key,
        idempotency_key=key,
        deps=store,
        simulated=simulated,
    )


@pytest.mark.parametrize("task_id", TASK_IDS)
def test_ground_truth_replay_matches_expected_outcome(shared_store: Store, task_id: str) -> None:
    shared_store.reset()
    report = replay_task(task_id, shared_store)
    assert report.ok, "\n".join(report.problems[:20])


def test_all_tasks_match_and_failures_carry_reference_messages(shared_store: Store) -> None:
    expected = data.load_expected()
    failures = 0
    matching = 0
    for task_id in TASK_IDS:
        shared_store.reset()
        report = replay_task(task_id, shared_store)
        matching += report.ok
        for call in report.calls:
            if not call.expected_ok:
                failures += 1
                assert call.error == call.expected_error
    assert matching == len(TASK_IDS) == 114
    assert failures == sum(not a["ok"] for t in expected.values() for a in t["actions"]) == 18


def test_every_ground_truth_tool_exists_with_matching_argument_names() -> None:
    for task in data.load_tasks():
        for action in task["evaluation_criteria"]["actions"]:
            t = TOOLS_BY_NAME[action["name"]]
            t.validate(action["arguments"])  # extra="forbid": names must match exactly


def test_effects_are_declared_by_what_the_call_does() -> None:
    effects = {t.name: t.effect for t in TOOLS}
    reads = {
        "find_user_id_by_email",
        "find_user_id_by_name_zip",
        "get_user_details",
        "get_order_details",
        "get_product_details",
        "get_item_details",
        "list_all_product_types",
        "calculate",
    }
    assert {n for n, e in effects.items() if e is Effect.READ} == reads
    assert {n for n, e in effects.items() if e is Effect.WRITE} == {
        "modify_pending_order_address",
        "modify_user_address",
        "transfer_to_human_agents",
    }
    assert {n for n, e in effects.items() if e is Effect.IRREVERSIBLE} == {
        "cancel_pending_order",
        "modify_pending_order_payment",
        "modify_pending_order_items",
        "return_delivered_order_items",
        "exchange_delivered_order_items",
    }
    assert all(t.idempotent for t in TOOLS if t.effect is not Effect.READ)
    assert all(t.description for t in TOOLS)


def test_fresh_store_is_fast_and_complete() -> None:
    Store.fresh()  # build the template once
    start = time.perf_counter()
    store = Store.fresh()
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0
    assert {k: len(v) for k, v in store.dump().items()} == {
        "products": 50,
        "users": 500,
        "orders": 1000,
    }
    assert store.dump() == data.load_db()


def test_loading_from_json_is_fast() -> None:
    start = time.perf_counter()
    store = Store.fresh(data.load_db())
    assert time.perf_counter() - start < 1.0
    assert store.count("orders") == 1000


def test_transaction_rolls_back_on_error(store: Store) -> None:
    with pytest.raises(RuntimeError), store.transaction() as tx:
        order = tx.get("orders", "#W2611340", for_update=True)
        assert order is not None
        order["status"] = "cancelled"
        tx.put("orders", order)
        raise RuntimeError("boom")
    assert store.get("orders", "#W2611340") == data.load_db()["orders"]["#W2611340"]


def test_reset_restores_initial_data(store: Store) -> None:
    order_id = _a_pending_order()
    call_tool(store, "cancel_pending_order", {"order_id": order_id, "reason": "no longer needed"})
    assert store.get("orders", order_id)["status"] == "cancelled"  # type: ignore[index]
    store.reset()
    assert store.dump() == data.load_db()


def _a_pending_order(payment_source: str | None = None) -> str:
    db = data.load_db()
    for order_id, order in db["orders"].items():
        if order["status"] != "pending":
            continue
        method_id = order["payment_history"][0]["payment_method_id"]
        if payment_source is None or method_id.startswith(payment_source):
            return order_id
    raise AssertionError("no pending order")


def test_cancel_refunds_a_gift_card_at_once(store: Store) -> None:
    order_id = _a_pending_order("gift_card")
    order = data.load_db()["orders"][order_id]
    payment = order["payment_history"][0]
    user_before = data.load_db()["users"][order["user_id"]]
    balance = user_before["payment_methods"][payment["payment_method_id"]]["balance"]
    result = call_tool(
        store, "cancel_pending_order", {"order_id": order_id, "reason": "ordered by mistake"}
    )
    assert result["status"] == "cancelled"
    assert result["cancel_reason"] == "ordered by mistake"
    assert result["payment_history"][-1] == {
        "transaction_type": "refund",
        "amount": payment["amount"],
        "payment_method_id": payment["payment_method_id"],
    }
    user = store.get("users", order["user_id"])
    assert user is not None
    new_balance = user["payment_methods"][payment["payment_method_id"]]["balance"]
    assert new_balance == round(balance + payment["amount"], 2)


def test_write_is_idempotent_per_key(store: Store) -> None:
    order_id = _a_pending_order("gift_card")
    tool = TOOLS_BY_NAME["cancel_pending_order"]
    args = {"order_id": order_id, "reason": "no longer needed"}
    first = tool.fn(_ctx(store, "same-key"), **args)
    after_first = store.dump()
    second = tool.fn(_ctx(store, "same-key"), **args)
    assert second == first
    assert store.dump() == after_first
    with pytest.raises(ToolError, match="Non-pending order cannot be cancelled"):
        tool.fn(_ctx(store, "another-key"), **args)


def test_simulated_call_checks_but_changes_nothing(store: Store) -> None:
    order_id = _a_pending_order()
    tool = TOOLS_BY_NAME["cancel_pending_order"]
    result = tool.fn(_ctx(store, simulated=True), order_id=order_id, reason="no longer needed")
    assert result["status"] == "cancelled"
    assert store.dump() == data.load_db()
    with pytest.raises(ToolError, match="Invalid reason"):
        tool.fn(_ctx(store, simulated=True), order_id=order_id, reason="because")


async def test_tools_run_through_the_async_invoke_path(store: Store) -> None:
    tool = TOOLS_BY_NAME["find_user_id_by_email"]
    user_id = await tool.invoke(_ctx(store), tool.validate({"email": "noah.brown7922@example.com"}))
    assert user_id == "noah_brown_6181"


def test_reference_error_messages(store: Store) -> None:
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("find_user_id_by_email", {"email": "nobody@example.com"}, "User not found"),
        ("get_order_details", {"order_id": "#W0"}, "Order not found"),
        ("get_product_details", {"product_id": "0"}, "Product not found"),
        ("get_item_details", {"item_id": "0"}, "Item not found"),
        ("calculate", {"expression": "__import__('os')"}, "Invalid characters in expression"),
    ]
    for name, args, message in cases:
        with pytest.raises(ToolError) as err:
            call_tool(store, name, args)
        assert str(err.value) == message
    assert strip_error_prefix("ValueError: Order not found") == "Order not found"


def test_reads_return_records(store: Store) -> None:
    assert call_tool(store, "calculate", {"expression": "(10 + 5.555) * 2"}) == "31.11"
    types = call_tool(store, "list_all_product_types", {})
    assert len(types) == 50 and types["T-Shirt"] == "9523456873"
    item = call_tool(store, "get_item_details", {"item_id": "9612497925"})
    assert item["product_id"] == "9523456873" and item["price"] == 50.88
    assert call_tool(store, "transfer_to_human_agents", {"summary": "x"}) == "Transfer successful"


def test_without_reference_compat_each_item_keeps_its_own_variant() -> None:
    store = Store.fresh(data.load_db(), reference_compat=False)
    args = {
        "order_id": "#W3295833",
        "item_ids": ["8926329222", "5312063289"],
        "new_item_ids": ["7160999700", "6956751343"],
        "payment_method_id": "credit_card_3261838",
    }
    order = call_tool(store, "modify_pending_order_items", args)
    by_id = {item["item_id"]: item for item in order["items"]}
    assert by_id["7160999700"]["price"] == 499.29
    assert by_id["6956751343"]["price"] == 217.06
    assert order["payment_history"][-1]["amount"] == 68.92
    assert order["status"] == "pending (item modified)"


def test_file_store_survives_reopen(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    store = Store.open(url)
    order_id = _a_pending_order()
    call_tool(store, "cancel_pending_order", {"order_id": order_id, "reason": "no longer needed"})
    store.close()
    again = Store.open(url)
    assert again.get("orders", order_id)["status"] == "cancelled"  # type: ignore[index]
    again.close()
    fresh = Store.open(url, reset=True)
    assert fresh.get("orders", order_id)["status"] == "pending"  # type: ignore[index]
    fresh.close()
