"""Mutated ground-truth calls: what the policy rules must block.

For every task, the ground-truth calls are replayed in order on a fresh store. Before each call
that changes the store, the real call is checked against the rules (it must not be blocked
unless the reference tools reject it too), then mutated copies of it are checked (each must be
denied or escalated):

==================== ==========================================================================
kind                 the mutation
==================== ==========================================================================
other_user_order     the order id of another user's order, in the same status
other_user_profile   another user's id (``modify_user_address``)
wrong_status         the customer's own order in a status that does not allow the action
other_product_item   a replacement item of a different product type
poor_gift_card       a gift card of the customer without enough balance for the amount
other_user_payment   a payment method of another user
skipped_auth         the same call with no authentication (history without find_user calls)
invalid_reason       a cancellation reason policy.md does not accept
refund_elsewhere     a return refunded to a method that is neither the original nor a gift card
repeat_change        the same cancel / modify / return / exchange again, once it succeeded
==================== ==========================================================================

    report = run_mutation_suite()
    print(report.tried, report.blocked, report.false_blocks)
    python -m examples.support_desk.mutations
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from examples.support_desk import domain
from examples.support_desk.data import Record, load_db, load_expected, load_tasks
from examples.support_desk.oracle_direct import call_tool
from examples.support_desk.policy import (
    AUTH_TOOLS,
    DELIVERED_ONLY,
    ITEM_CHANGES,
    PAYING_TOOLS,
    PENDING_ONLY,
    RULES,
    STORE_WRITES,
    blocks,
    customer,
    evaluate,
)
from examples.support_desk.store import Store
from examples.support_desk.tools import TOOLS_BY_NAME
from tether import ToolError
from tether.policy import DecisionKind, PastCall, Proposal, Rule

ORDER_WRITES = PENDING_ONLY | DELIVERED_ONLY

# The rules meant to catch each kind of mutation (one must be among the blocking ones).
INTENDED_RULES: dict[str, frozenset[str]] = {
    "other_user_order": frozenset({"own-records-only"}),
    "other_user_profile": frozenset({"own-records-only"}),
    "wrong_status": frozenset({"order-status"}),
    "other_product_item": frozenset({"same-product-items"}),
    "poor_gift_card": frozenset({"payment-method"}),
    "other_user_payment": frozenset({"payment-method"}),
    "skipped_auth": frozenset({"authenticate-first"}),
    "invalid_reason": frozenset({"cancel-reason"}),
    "refund_elsewhere": frozenset({"payment-method"}),
    # a second payment change leaves the order pending but no longer paid in one payment
    "repeat_change": frozenset({"order-status", "payment-method"}),
}


@dataclass(frozen=True, slots=True)
class Mutation:
    """One mutated call, labelled with what was changed."""

    kind: str
    tool: str
    args: dict[str, Any]
    history: tuple[PastCall, ...]
    run_input: Any


@dataclass(slots=True)
class MutationReport:
    """Counts of the suite, with the details of anything that went wrong."""

    tried: int = 0
    blocked: int = 0
    false_blocks: int = 0
    ground_truth_checked: int = 0
    tried_by_kind: Counter[str] = field(default_factory=Counter)
    blocked_by_kind: Counter[str] = field(default_factory=Counter)
    missed: list[str] = field(default_factory=list)
    blocked_by_other_rule: list[str] = field(default_factory=list)
    false_block_details: list[str] = field(default_factory=list)
    correct_blocks: list[str] = field(default_factory=list)  # real calls the reference rejects


def _proposal(
    tool: str, args: dict[str, Any], history: Sequence[PastCall], run_input: Any, store: Store
) -> Proposal:
    return Proposal(
        tool=tool,
        effect=TOOLS_BY_NAME[tool].effect,
        args=args,
        agent="support-desk",
        run_id="mutations",
        run_input=run_input,
        history=tuple(history),
        deps=store,
    )


# ----------------------------------------------------------------------------- mutation makers


def _other_user_order(store: Store, me: str, order: Record) -> str | None:
    with store.transaction(write=False) as tx:
        for order_id in tx.order_ids_with_status(str(order["status"]), limit=200):
            other = tx.get("orders", order_id)
            if other is not None and other["user_id"] != me:
                return order_id
    return None


def _wrong_status_order(store: Store, me: str, tool: str) -> str | None:
    needed = domain.PENDING if tool in PENDING_ONLY else domain.DELIVERED
    with store.transaction(write=False) as tx:
        for order_id in tx.order_ids_of(me):
            order = tx.get("orders", order_id)
            if order is not None and order["status"] != needed:
                return order_id
    return None


def _other_product_item(store: Store, order: Record, item_id: str) -> str | None:
    own = next((i["product_id"] for i in order["items"] if i["item_id"] == item_id), None)
    with store.transaction(write=False) as tx:
        for product_id, product in sorted(tx.all("products").items()):
            if product_id == own:
                continue
            for variant_id, variant in sorted(product["variants"].items()):
                if variant.get("available"):
                    return str(variant_id)
    return None


def _dearest_variants(store: Store, order: Record, item_ids: Sequence[str]) -> list[str] | None:
    """For each item, the most expensive other available option of its product."""
    by_id = {i["item_id"]: i for i in order["items"]}
    chosen: list[str] = []
    for item_id in item_ids:
        item = by_id.get(item_id)
        product = None if item is None else store.get("products", item["product_id"])
        if item is None or product is None:
            return None
        options = [
            v
            for v in product["variants"].values()
            if v.get("available") and v["item_id"] != item_id
        ]
        if not options:
            return None
        chosen.append(max(options, key=lambda v: (v["price"], v["item_id"]))["item_id"])
    return chosen


def _poor_gift_card(store: Store, me: str, amount: float) -> str | None:
    user = store.get("users", me)
    if user is None or amount <= 0:
        return None
    for method_id, method in sorted(user["payment_methods"].items()):
        if domain.is_gift_card(method) and float(method.get("balance", 0.0)) < amount:
            return str(method_id)
    return None


def _poor_gift_card_args(
    store: Store, me: str, tool: str, args: dict[str, Any], order: Record
) -> dict[str, Any] | None:
    if tool == "modify_pending_order_payment":
        card = _poor_gift_card(store, me, domain.order_total(order))
        return None if card is None else {**args, "payment_method_id": card}
    candidates = [list(args["new_item_ids"])]
    dearest = _dearest_variants(store, order, args["item_ids"])
    if dearest is not None:
        candidates.append(dearest)
    for new_item_ids in candidates:
        try:
            change = domain.replacement(
                order, args["item_ids"], new_item_ids, lambda pid: store.get("products", pid)
            )
        except domain.DomainError:
            continue
        card = _poor_gift_card(store, me, change.price_difference)
        if card is not None:
            return {**args, "new_item_ids": new_item_ids, "payment_method_id": card}
    return None


def _other_user_payment(me: str, payment_method_id: str) -> str | None:
    source = payment_method_id.rsplit("_", 1)[0]
    for user_id, user in sorted(load_db()["users"].items()):
        if user_id == me:
            continue
        for method_id in sorted(user["payment_methods"]):
            if method_id.rsplit("_", 1)[0] == source:
                return str(method_id)
    return None


def _refund_elsewhere(store: Store, me: str, order: Record) -> str | None:
    user = store.get("users", me)
    original = domain.original_payment_method_id(order)
    if user is None:
        return None
    for method_id, method in sorted(user["payment_methods"].items()):
        if method_id != original and not domain.is_gift_card(method):
            return str(method_id)
    return None


def mutations_of(
    store: Store,
    tool: str,
    args: dict[str, Any],
    history: Sequence[PastCall],
    run_input: Any,
    me: str,
) -> Iterator[Mutation]:
    """Mutated versions of one ground-truth write, given the store as it is before the call."""
    hist = tuple(history)

    def mutation(kind: str, new_args: dict[str, Any]) -> Mutation:
        return Mutation(kind, tool, new_args, hist, run_input)

    unauthenticated = tuple(c for c in history if c.tool not in AUTH_TOOLS)
    yield Mutation("skipped_auth", tool, dict(args), unauthenticated, None)
    if tool == "modify_user_address":
        other = next(u for u in sorted(load_db()["users"]) if u != me)
        yield mutation("other_user_profile", {**args, "user_id": other})
        return
    order = store.get("orders", str(args.get("order_id")))
    if order is None or tool not in ORDER_WRITES:
        return
    other_order = _other_user_order(store, me, order)
    if other_order is not None:
        yield mutation("other_user_order", {**args, "order_id": other_order})
    wrong = _wrong_status_order(store, me, tool)
    if wrong is not None:
        yield mutation("wrong_status", {**args, "order_id": wrong})
    if tool == "cancel_pending_order":
        yield mutation("invalid_reason", {**args, "reason": "found it cheaper elsewhere"})
    if tool in ITEM_CHANGES and args.get("item_ids"):
        foreign = _other_product_item(store, order, args["item_ids"][0])
        if foreign is not None:
            new_ids = [foreign, *list(args["new_item_ids"])[1:]]
            yield mutation("other_product_item", {**args, "new_item_ids": new_ids})
    if tool in PAYING_TOOLS:
        stranger = _other_user_payment(me, str(args["payment_method_id"]))
        if stranger is not None:
            yield mutation("other_user_payment", {**args, "payment_method_id": stranger})
    if tool in ITEM_CHANGES | {"modify_pending_order_payment"}:
        poor = _poor_gift_card_args(store, me, tool, args, order)
        if poor is not None:
            yield mutation("poor_gift_card", poor)
    if tool in PENDING_ONLY - {"modify_pending_order_payment"}:
        card = _poor_gift_card(store, me, domain.order_total(order))
        if card is not None and card != domain.original_payment_method_id(order):
            args_ = {"order_id": order["order_id"], "payment_method_id": card}
            yield Mutation("poor_gift_card", "modify_pending_order_payment", args_, hist, run_input)
    if tool == "return_delivered_order_items":
        elsewhere = _refund_elsewhere(store, me, order)
        if elsewhere is not None:
            yield mutation("refund_elsewhere", {**args, "payment_method_id": elsewhere})


# ----------------------------------------------------------------------------- the suite


def _task_owner(actions: Sequence[dict[str, Any]]) -> str | None:
    """The user whose records the task's writes touch (for tasks whose script skips login)."""
    db = load_db()
    for action in actions:
        args = action["arguments"]
        if action["name"] == "modify_user_address":
            return str(args["user_id"])
        order = db["orders"].get(str(args.get("order_id")))
        if action["name"] in ORDER_WRITES and order is not None:
            return str(order["user_id"])
    return None


def run_mutation_suite(
    rules: list[Rule] | None = None, store: Store | None = None
) -> MutationReport:
    """Replay every task, checking real calls and their mutations against ``rules``."""
    rules = RULES if rules is None else rules
    store = store if store is not None else Store.fresh()
    expected = load_expected()
    report = MutationReport()
    for task in load_tasks():
        store.reset()
        actions = task["evaluation_criteria"]["actions"]
        outcome = {a["action_id"]: a for a in expected[task["id"]]["actions"]}
        logs_in = any(a["name"] in AUTH_TOOLS and outcome[a["action_id"]]["ok"] for a in actions)
        owner = None if logs_in else _task_owner(actions)
        # A script without a login stands for a customer authenticated before the run.
        run_input = None if owner is None else {"user_id": owner}
        history: list[PastCall] = []
        for action in actions:
            name, args, action_id = action["name"], action["arguments"], action["action_id"]
            reference_ok = bool(outcome[action_id]["ok"])
            real = _proposal(name, args, history, run_input, store)
            report.ground_truth_checked += 1
            if blocks(evaluate(real, rules)):
                where = f"task {task['id']} {action_id} {name}"
                if reference_ok:
                    report.false_blocks += 1
                    reasons = [d.reason for d in evaluate(real, rules)]
                    report.false_block_details.append(f"{where}: {reasons}")
                else:
                    report.correct_blocks.append(where)
            me = customer(real)
            if name in STORE_WRITES and me is not None:
                for m in mutations_of(store, name, args, history, run_input, me):
                    _check(report, task["id"], action_id, m, rules, store)
            try:
                result = call_tool(store, name, args, action_id)
                history.append(PastCall(name, dict(args), True, result))
            except ToolError as exc:
                history.append(PastCall(name, dict(args), False, str(exc)))
                continue
            if name in ORDER_WRITES - {"modify_pending_order_address"} and me is not None:
                again = Mutation("repeat_change", name, dict(args), tuple(history), run_input)
                _check(report, task["id"], action_id, again, rules, store)
    return report


def _check(
    report: MutationReport,
    task_id: str,
    action_id: str,
    m: Mutation,
    rules: list[Rule],
    store: Store,
) -> None:
    decisions = evaluate(_proposal(m.tool, m.args, m.history, m.run_input, store), rules)
    report.tried += 1
    report.tried_by_kind[m.kind] += 1
    if blocks(decisions):
        report.blocked += 1
        report.blocked_by_kind[m.kind] += 1
        stoppers = {
            d.rule for d in decisions if d.kind in (DecisionKind.DENY, DecisionKind.ESCALATE)
        }
        if not INTENDED_RULES[m.kind] & stoppers:
            report.blocked_by_other_rule.append(
                f"task {task_id} {action_id} {m.kind}: blocked by {sorted(stoppers)}"
            )
    else:
        report.missed.append(f"task {task_id} {action_id} {m.kind}: {m.tool}({m.args})")


def main() -> None:
    """Print the suite's counts."""
    report = run_mutation_suite()
    print(f"tried={report.tried} blocked={report.blocked} false_blocks={report.false_blocks}")
    print(f"ground-truth calls checked={report.ground_truth_checked}")
    for kind in sorted(report.tried_by_kind):
        print(f"  {kind:20} {report.blocked_by_kind[kind]}/{report.tried_by_kind[kind]}")
    for line in report.blocked_by_other_rule[:20]:
        print(f"blocked, but not by the intended rule: {line}")
    for line in report.missed[:20]:
        print(f"missed: {line}")
    for line in report.false_block_details[:20]:
        print(f"false block: {line}")
    for line in report.correct_blocks:
        print(f"blocked, and the reference rejects it too: {line}")


if __name__ == "__main__":
    main()
