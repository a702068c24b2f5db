"""The retail tools of the τ²-bench retail domain, as tether tools.

Every tool takes a :class:`~tether.ToolContext` whose ``deps`` is the
:class:`~examples.support_desk.store.Store` (or an object with a ``store`` attribute holding
one). Failures raise :class:`~tether.ToolError` with the reference message ("Order not found",
"Non-delivered order cannot be exchanged", ...).

Effects, decided by what each call does in the world:

* ``read`` -- look-ups and arithmetic; nothing changes.
* ``write`` -- address changes: nothing is charged and the previous value can simply be written
  back, so they are reversible.
* ``irreversible`` -- calls that move money or use up a one-time option: cancelling refunds the
  payment and a cancelled order cannot be reopened; changing the payment method charges one
  method and refunds another; modifying items charges or refunds the difference and may be done
  only once; return and exchange start a refund/fulfilment process and may be done only once.

All writes are idempotent: the result is stored under ``ctx.idempotency_key`` in the same
transaction as the change, so a retried call returns the first result instead of acting twice.
A call with ``ctx.simulated`` set runs every check and returns the would-be result, then rolls
back.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from examples.support_desk import domain
from examples.support_desk.data import Record
from examples.support_desk.domain import DomainError
from examples.support_desk.store import Store, Tx
from tether import Tool, ToolContext, ToolError, tool

# ----------------------------------------------------------------------------- helpers


def store_of(ctx: ToolContext) -> Store:
    """The store behind a tool call: ``ctx.deps`` itself or ``ctx.deps.store``."""
    deps = ctx.deps
    if isinstance(deps, Store):
        return deps
    inner = getattr(deps, "store", None)
    if isinstance(inner, Store):
        return inner
    raise ToolError("The support desk store is not configured")


@contextmanager
def _reading(ctx: ToolContext) -> Iterator[Tx]:
    with store_of(ctx).transaction(write=False) as tx:
        yield tx


def _get(tx: Tx, table: str, key: str, message: str, *, for_update: bool = False) -> Record:
    record = tx.get(table, key, for_update=for_update)
    if record is None:
        raise ToolError(message)
    return record


def _change(ctx: ToolContext, apply: Callable[[Tx], Record]) -> Record:
    """Run ``apply`` in one write transaction, once per idempotency key."""
    store = store_of(ctx)
    key = ctx.idempotency_key
    try:
        with store.transaction(commit=not ctx.simulated) as tx:
            if key:
                earlier = tx.recall(key)
                if earlier is not None:
                    previous: Record = earlier
                    return previous
            result = apply(tx)
            if key and not ctx.simulated:
                tx.remember(key, result)
            return result
    except DomainError as exc:
        raise ToolError(str(exc)) from None


def _order_and_user(tx: Tx, order_id: str) -> tuple[Record, Record]:
    order = _get(tx, "orders", order_id, "Order not found", for_update=True)
    user = _get(tx, "users", order["user_id"], "User not found", for_update=True)
    return order, user


def _product_lookup(tx: Tx) -> Callable[[str], Record | None]:
    return lambda product_id: tx.get("products", product_id)


# ----------------------------------------------------------------------------- reads


@tool(effect="read")
def find_user_id_by_email(ctx: ToolContext, email: str) -> str:
    """Find a user id by email address. Use it to authenticate the customer."""
    with _reading(ctx) as tx:
        user_id = tx.user_id_by_email(email)
    if user_id is None:
        raise ToolError("User not found")
    return user_id


@tool(effect="read")
def find_user_id_by_name_zip(ctx: ToolContext, first_name: str, last_name: str, zip: str) -> str:
    """Find a user id by first name, last name and zip code. Use it to authenticate."""
    with _reading(ctx) as tx:
        user_id = tx.user_id_by_name_zip(first_name, last_name, zip)
    if user_id is None:
        raise ToolError("User not found")
    return user_id


@tool(effect="read")
def get_user_details(ctx: ToolContext, user_id: str) -> Record:
    """Get a user's profile: name, address, email, payment methods and order ids."""
    with _reading(ctx) as tx:
        return _get(tx, "users", user_id, "User not found")


@tool(effect="read")
def get_order_details(ctx: ToolContext, order_id: str) -> Record:
    """Get an order: status, items, address, fulfilments and payment history.

    Order ids look like '#W0000000'.
    """
    with _reading(ctx) as tx:
        return _get(tx, "orders", order_id, "Order not found")


@tool(effect="read")
def get_product_details(ctx: ToolContext, product_id: str) -> Record:
    """Get a product type and all its variant items (options, availability, price).

    Product ids and item ids are different things.
    """
    with _reading(ctx) as tx:
        return _get(tx, "products", product_id, "Product not found")


@tool(effect="read")
def get_item_details(ctx: ToolContext, item_id: str) -> Record:
    """Get one variant item by item id, with the id and name of its product."""
    with _reading(ctx) as tx:
        for product in tx.all("products").values():
            variant = product["variants"].get(item_id)
            if variant is not None:
                return {**variant, "product_id": product["product_id"], "name": product["name"]}
    raise ToolError("Item not found")


@tool(effect="read")
def list_all_product_types(ctx: ToolContext) -> dict[str, str]:
    """List every product type: its name and product id."""
    with _reading(ctx) as tx:
        products = tx.all("products")
    return dict(sorted((p["name"], p["product_id"]) for p in products.values()))


_OPERATORS: dict[type[ast.AST], Callable[..., float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}


def _evaluate(node: ast.AST) -> float:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return float(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_evaluate(node.left), _evaluate(node.right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_evaluate(node.operand))
    raise ToolError("Invalid expression")


@tool(effect="read")
def calculate(expression: str) -> str:
    """Evaluate an arithmetic expression (numbers, + - * /, parentheses), rounded to cents."""
    if not expression or set(expression) - set("0123456789+-*/(). "):
        raise ToolError("Invalid characters in expression")
    if len(expression) > 500:
        raise ToolError("Expression too long")
    try:
        value = _evaluate(ast.parse(expression, mode="eval"))
    except SyntaxError:
        raise ToolError("Invalid expression") from None
    except ZeroDivisionError:
        raise ToolError("Division by zero") from None
    return str(round(value, 2))


# ----------------------------------------------------------------------------- writes


@tool(effect="irreversible", idempotent=True)
def cancel_pending_order(ctx: ToolContext, order_id: str, reason: str) -> Record:
    """Cancel a pending order. Reason: 'no longer needed' or 'ordered by mistake'.

    Irreversible: every payment is refunded (gift cards at once, other methods in 5-7 business
    days) and a cancelled order cannot be reopened. Needs the customer's explicit confirmation.
    """

    def apply(tx: Tx) -> Record:
        order, user = _order_and_user(tx, order_id)
        domain.require_status(order, domain.PENDING, "Non-pending order cannot be cancelled")
        if reason not in domain.CANCEL_REASONS:
            raise DomainError("Invalid reason")
        refunds = [
            domain.transaction("refund", entry["amount"], entry["payment_method_id"])
            for entry in order["payment_history"]
            if entry["transaction_type"] == "payment"
        ]
        for refund in refunds:
            domain.adjust_balance(user, refund["payment_method_id"], refund["amount"])
        order["payment_history"].extend(refunds)
        order["status"] = domain.CANCELLED
        order["cancel_reason"] = reason
        tx.put("users", user)
        tx.put("orders", order)
        return order

    return _change(ctx, apply)


def _address(
    address1: str, address2: str, city: str, state: str, country: str, zip_code: str
) -> dict[str, str]:
    return {
        "address1": address1,
        "address2": address2,
        "city": city,
        "country": country,
        "state": state,
        "zip": zip_code,
    }


@tool(effect="write", idempotent=True)
def modify_pending_order_address(
    ctx: ToolContext,
    order_id: str,
    address1: str,
    address2: str,
    city: str,
    state: str,
    country: str,
    zip: str,
) -> Record:
    """Change the shipping address of a pending order.

    A write, not irreversible: nothing is charged and the old address can be set back.
    Needs the customer's explicit confirmation.
    """

    def apply(tx: Tx) -> Record:
        order = _get(tx, "orders", order_id, "Order not found", for_update=True)
        domain.require_status(order, domain.PENDING, "Non-pending order cannot be modified")
        order["address"] = _address(address1, address2, city, state, country, zip)
        tx.put("orders", order)
        return order

    return _change(ctx, apply)


@tool(effect="irreversible", idempotent=True)
def modify_pending_order_payment(ctx: ToolContext, order_id: str, payment_method_id: str) -> Record:
    """Pay a pending order with another of the customer's payment methods.

    Irreversible: the new method is charged and the original one refunded. A gift card must
    cover the whole order. Needs the customer's explicit confirmation.
    """

    def apply(tx: Tx) -> Record:
        order, user = _order_and_user(tx, order_id)
        domain.require_status(order, domain.PENDING, "Non-pending order cannot be modified")
        method = domain.payment_method(user, payment_method_id)
        history = order["payment_history"]
        if len(history) != 1 or history[0]["transaction_type"] != "payment":
            raise DomainError("There should be exactly one payment for a pending order")
        old_method_id = history[0]["payment_method_id"]
        if old_method_id == payment_method_id:
            raise DomainError("The new payment method should be different from the current one")
        amount = history[0]["amount"]
        domain.require_gift_card_covers(
            method, amount, "Insufficient gift card balance to pay for the order"
        )
        history.append(domain.transaction("payment", amount, payment_method_id))
        history.append(domain.transaction("refund", amount, old_method_id))
        domain.adjust_balance(user, payment_method_id, -amount)
        domain.adjust_balance(user, old_method_id, amount)
        tx.put("users", user)
        tx.put("orders", order)
        return order

    return _change(ctx, apply)


@tool(effect="irreversible", idempotent=True)
def modify_pending_order_items(
    ctx: ToolContext,
    order_id: str,
    item_ids: list[str],
    new_item_ids: list[str],
    payment_method_id: str,
) -> Record:
    """Swap items of a pending order for other options of the same product (once per order).

    ``item_ids[i]`` becomes ``new_item_ids[i]``; the price difference is charged to, or
    refunded to, ``payment_method_id``. Irreversible: money moves and the order can then be
    neither modified nor cancelled. Collect every item first; needs explicit confirmation.
    """

    def apply(tx: Tx) -> Record:
        order, user = _order_and_user(tx, order_id)
        domain.require_status(order, domain.PENDING, "Non-pending order cannot be modified")
        change = domain.replacement(order, item_ids, new_item_ids, _product_lookup(tx))
        method = domain.payment_method(user, payment_method_id)
        compat = store_of(ctx).reference_compat
        difference = change.raw_difference if compat else change.price_difference
        domain.require_gift_card_covers(
            method, difference, "Insufficient gift card balance to pay for the new item"
        )
        if difference != 0:
            kind = "payment" if difference > 0 else "refund"
            entry = domain.transaction(kind, abs(difference), payment_method_id)
            if compat:
                entry["amount"] = abs(difference)
            order["payment_history"].append(entry)
            domain.adjust_balance(user, payment_method_id, -difference)
        new_items = list(change.new_items)
        if compat and new_items:
            last = new_items[-1]
            new_items = [
                {**item, "price": last["price"], "options": dict(last["options"])}
                for item in new_items
            ]
        replaced: set[int] = set()
        for item_id, new_item in zip(item_ids, new_items, strict=True):
            for index, item in enumerate(order["items"]):
                if index not in replaced and item["item_id"] == item_id:
                    order["items"][index] = new_item
                    replaced.add(index)
                    break
        order["status"] = domain.PENDING_ITEMS_MODIFIED
        tx.put("users", user)
        tx.put("orders", order)
        return order

    return _change(ctx, apply)


@tool(effect="irreversible", idempotent=True)
def return_delivered_order_items(
    ctx: ToolContext, order_id: str, item_ids: list[str], payment_method_id: str
) -> Record:
    """Request the return of items of a delivered order (once per order).

    The refund goes to the original payment method or to one of the customer's gift cards.
    Irreversible: the order becomes 'return requested' and the refund process starts.
    Needs explicit confirmation of the order id and items.
    """

    def apply(tx: Tx) -> Record:
        order, user = _order_and_user(tx, order_id)
        domain.require_status(order, domain.DELIVERED, "Non-delivered order cannot be returned")
        method = domain.payment_method(user, payment_method_id)
        original = domain.original_payment_method_id(order)
        if not domain.is_gift_card(method) and payment_method_id != original:
            raise DomainError(
                "Payment method should be either the original payment method or a gift card"
            )
        domain.require_items_in_order(order, item_ids)
        order["status"] = domain.RETURN_REQUESTED
        order["return_items"] = sorted(item_ids)
        order["return_payment_method_id"] = payment_method_id
        tx.put("orders", order)
        return order

    return _change(ctx, apply)


@tool(effect="irreversible", idempotent=True)
def exchange_delivered_order_items(
    ctx: ToolContext,
    order_id: str,
    item_ids: list[str],
    new_item_ids: list[str],
    payment_method_id: str,
) -> Record:
    """Exchange items of a delivered order for other options of the same product (once).

    The price difference is settled with ``payment_method_id``; a gift card must cover it.
    Irreversible: the order becomes 'exchange requested' and cannot be exchanged again.
    Collect every item first; needs explicit confirmation.
    """

    def apply(tx: Tx) -> Record:
        order, user = _order_and_user(tx, order_id)
        domain.require_status(order, domain.DELIVERED, "Non-delivered order cannot be exchanged")
        change = domain.replacement(order, item_ids, new_item_ids, _product_lookup(tx))
        method = domain.payment_method(user, payment_method_id)
        domain.require_gift_card_covers(
            method,
            change.price_difference,
            "Insufficient gift card balance to pay for the price difference",
        )
        order["status"] = domain.EXCHANGE_REQUESTED
        order["exchange_items"] = sorted(item_ids)
        order["exchange_new_items"] = sorted(new_item_ids)
        order["exchange_payment_method_id"] = payment_method_id
        order["exchange_price_difference"] = change.price_difference
        tx.put("orders", order)
        return order

    return _change(ctx, apply)


@tool(effect="write", idempotent=True)
def modify_user_address(
    ctx: ToolContext,
    user_id: str,
    address1: str,
    address2: str,
    city: str,
    state: str,
    country: str,
    zip: str,
) -> Record:
    """Change the customer's default address.

    A write, not irreversible: the previous address can be written back.
    Needs the customer's explicit confirmation.
    """

    def apply(tx: Tx) -> Record:
        user = _get(tx, "users", user_id, "User not found", for_update=True)
        user["address"] = _address(address1, address2, city, state, country, zip)
        tx.put("users", user)
        return user

    return _change(ctx, apply)


@tool(effect="write", idempotent=True)
def transfer_to_human_agents(summary: str) -> str:
    """Hand the conversation to a human agent, with a summary of the customer's issue.

    Use it only when the request cannot be handled with the other tools. A write: it changes
    who owns the conversation, but nothing in the store.
    """
    if not summary.strip():
        raise ToolError("A summary is required")
    return "Transfer successful"


READ_TOOLS: tuple[Tool, ...] = (
    find_user_id_by_email,
    find_user_id_by_name_zip,
    get_user_details,
    get_order_details,
    get_product_details,
    get_item_details,
    list_all_product_types,
    calculate,
)

WRITE_TOOLS: tuple[Tool, ...] = (
    cancel_pending_order,
    modify_pending_order_address,
    modify_pending_order_payment,
    modify_pending_order_items,
    return_delivered_order_items,
    exchange_delivered_order_items,
    modify_user_address,
    transfer_to_human_agents,
)

TOOLS: tuple[Tool, ...] = READ_TOOLS + WRITE_TOOLS

TOOLS_BY_NAME: dict[str, Tool] = {t.name: t for t in TOOLS}


def tool_named(name: str) -> Tool:
    """The tool called ``name``; ``KeyError`` if there is none."""
    return TOOLS_BY_NAME[name]
