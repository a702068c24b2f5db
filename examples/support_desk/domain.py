"""Pure retail rules on plain records, shared by the tools and the policy.

Nothing here touches a database: functions take order / user / product records (dicts shaped
like db.json) and either return what a change would do or raise :class:`DomainError` with the
message the reference tools use.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from examples.support_desk.data import Record

PENDING = "pending"
PENDING_ITEMS_MODIFIED = "pending (item modified)"
PROCESSED = "processed"
DELIVERED = "delivered"
CANCELLED = "cancelled"
RETURN_REQUESTED = "return requested"
EXCHANGE_REQUESTED = "exchange requested"

CANCEL_REASONS: tuple[str, ...] = ("no longer needed", "ordered by mistake")

ProductLookup = Callable[[str], "Record | None"]


class DomainError(ValueError):
    """A retail rule refused a change; the message is the one shown to the model."""


@dataclass(frozen=True, slots=True)
class Replacement:
    """What swapping some items of an order for other variants would do."""

    price_difference: float  # rounded to cents
    raw_difference: float  # the plain float sum, as the reference tools record it
    new_items: tuple[Record, ...]  # one per replaced item, in the order of ``item_ids``


def money(amount: float) -> float:
    """Round an amount to cents, as every stored amount is."""
    return round(amount + 0.0, 2)


def payment_method(user: Record, payment_method_id: str) -> Record:
    """The user's payment method, or ``DomainError("Payment method not found")``."""
    method: Record | None = (user.get("payment_methods") or {}).get(payment_method_id)
    if method is None:
        raise DomainError("Payment method not found")
    return method


def is_gift_card(method: Record) -> bool:
    return method.get("source") == "gift_card"


def require_status(order: Record, status: str, message: str) -> None:
    if order.get("status") != status:
        raise DomainError(message)


def require_items_in_order(order: Record, item_ids: Sequence[str]) -> None:
    """Every id in ``item_ids`` is in the order, counting repeats."""
    have = Counter(item["item_id"] for item in order.get("items", []))
    for item_id, wanted in Counter(item_ids).items():
        if have[item_id] < wanted:
            raise DomainError(f"{item_id} not found")


def replacement(
    order: Record,
    item_ids: Sequence[str],
    new_item_ids: Sequence[str],
    product: ProductLookup,
) -> Replacement:
    """Check a modify/exchange of items and compute the price difference.

    Each new item must be an available variant of the same product as the item it replaces.
    """
    require_items_in_order(order, item_ids)
    if len(item_ids) != len(new_item_ids):
        raise DomainError("The number of items to be exchanged should match")
    by_id = {item["item_id"]: item for item in order.get("items", [])}
    difference = 0.0
    new_items: list[Record] = []
    for item_id, new_item_id in zip(item_ids, new_item_ids, strict=True):
        old = by_id[item_id]
        prod = product(old["product_id"])
        variant: Record | None = None if prod is None else prod["variants"].get(new_item_id)
        if variant is None or not variant.get("available", False):
            raise DomainError(f"New item {new_item_id} not found or available")
        difference += variant["price"] - old["price"]
        new_items.append(
            {
                "name": old["name"],
                "product_id": old["product_id"],
                "item_id": new_item_id,
                "price": variant["price"],
                "options": dict(variant["options"]),
            }
        )
    return Replacement(money(difference), difference, tuple(new_items))


def require_gift_card_covers(method: Record, amount: float, message: str) -> None:
    """A gift card paying ``amount`` must hold at least that much."""
    if is_gift_card(method) and amount > 0 and float(method.get("balance", 0.0)) < amount:
        raise DomainError(message)


def adjust_balance(user: Record, payment_method_id: str, delta: float) -> None:
    """Add ``delta`` to a gift card's balance (no-op for other payment methods)."""
    method = user["payment_methods"][payment_method_id]
    if is_gift_card(method):
        method["balance"] = money(float(method.get("balance", 0.0)) + delta)


def order_total(order: Record) -> float:
    """Net amount paid for an order (payments minus refunds)."""
    total = 0.0
    for entry in order.get("payment_history", []):
        sign = 1.0 if entry.get("transaction_type") == "payment" else -1.0
        total += sign * float(entry.get("amount", 0.0))
    return money(total)


def original_payment_method_id(order: Record) -> str | None:
    """The payment method of the order's first payment."""
    for entry in order.get("payment_history", []):
        if entry.get("transaction_type") == "payment":
            method_id: str = entry["payment_method_id"]
            return method_id
    return None


def transaction(kind: str, amount: float, payment_method_id: str) -> dict[str, Any]:
    """A payment-history entry."""
    return {
        "transaction_type": kind,
        "amount": money(amount),
        "payment_method_id": payment_method_id,
    }
