"""The written retail policy (policy.md) as tether rules.

Each rule reads the proposed call, what the run already did (``p.history``), who the customer is
(``p.run_input``) and the store (``p.deps``: a :class:`~examples.support_desk.store.Store`, or an
object with a ``store`` attribute). A rule returns ``None`` when it has no objection.

==================== ===========================================================================
rule                 policy.md
==================== ===========================================================================
authenticate-first   authenticate the user (email, or name + zip) before anything personal
one-customer         help one user per conversation (a second identity escalates)
own-records-only     only the authenticated user's profile and orders
unverified-identity  a customer found by a look-up, not the ticket's authenticated sender: every
                     read or change of their account waits for a human who verifies them
order-status         cancel/modify only pending orders; return/exchange only delivered ones;
                     items may be modified or exchanged only once per order
cancel-reason        the reason is 'no longer needed' or 'ordered by mistake'
same-product-items   each item becomes an available, different option of the same product
payment-method       the user's own method; a gift card must cover the amount; a refund for a
                     return goes to the original method or a gift card; a new payment method
                     must differ from the current one
confirm-writes       every change waits for the customer's explicit confirmation (approval)
==================== ===========================================================================

Identity: the customer is the one the run input vouches for (``user_id``, or the
``customer_email``/``email`` of the sender the help desk authenticated; the input may be a
mapping or an object with those attributes), or else the user found by the run's successful
``find_user_id_by_*`` calls. Only the first is verified: anyone can type an email address or a
name and zip code into a ticket. So when the sender is unknown, a customer found by a look-up is a
different, flagged flow: each read or change of that account needs a human's approval, with a
reason that says the identity is unverified (it never looks like an ordinary confirmation).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from examples.support_desk import domain
from examples.support_desk.data import Record
from examples.support_desk.domain import DomainError
from examples.support_desk.store import Store
from tether.policy import Decision, DecisionKind, Proposal, Rule, rule

AUTH_TOOLS = frozenset({"find_user_id_by_email", "find_user_id_by_name_zip"})
PUBLIC_TOOLS = AUTH_TOOLS | {
    "get_product_details",
    "get_item_details",
    "list_all_product_types",
    "calculate",
    "transfer_to_human_agents",
}
PENDING_ONLY = frozenset(
    {
        "cancel_pending_order",
        "modify_pending_order_address",
        "modify_pending_order_payment",
        "modify_pending_order_items",
    }
)
DELIVERED_ONLY = frozenset({"return_delivered_order_items", "exchange_delivered_order_items"})
ORDER_TOOLS = PENDING_ONLY | DELIVERED_ONLY | {"get_order_details"}
USER_TOOLS = frozenset({"get_user_details", "modify_user_address"})
ITEM_CHANGES = frozenset({"modify_pending_order_items", "exchange_delivered_order_items"})
PAYING_TOOLS = ITEM_CHANGES | {"modify_pending_order_payment", "return_delivered_order_items"}
STORE_WRITES = PENDING_ONLY | DELIVERED_ONLY | {"modify_user_address"}


# ----------------------------------------------------------------------------- context helpers


def store_of(p: Proposal) -> Store | None:
    """The store a proposal can read, if the run has one."""
    if isinstance(p.deps, Store):
        return p.deps
    inner = getattr(p.deps, "store", None)
    return inner if isinstance(inner, Store) else None


def _user_id_from_result(result: Any) -> str | None:
    if isinstance(result, Mapping):
        value = result.get("user_id")
        return value if isinstance(value, str) else None
    if not isinstance(result, str):
        return None
    text = result.strip()
    if text.startswith('"'):
        try:
            decoded = json.loads(text)
        except ValueError:
            return None
        return decoded if isinstance(decoded, str) else None
    return text or None


def _field(source: Any, name: str) -> Any:
    if isinstance(source, Mapping):
        return source.get(name)
    return getattr(source, name, None)


def identity_from_input(run_input: Any, store: Store | None) -> str | None:
    """The user a run input vouches for: its ``user_id``, or the user of its verified email."""
    if run_input is None or isinstance(run_input, str | bytes):
        return None
    user_id = _field(run_input, "user_id")
    if isinstance(user_id, str) and user_id:
        return user_id
    email = _field(run_input, "customer_email") or _field(run_input, "email")
    if isinstance(email, str) and email and store is not None:
        with store.transaction(write=False) as tx:
            found: str | None = tx.user_id_by_email(email)
            return found
    return None


def identities(p: Proposal) -> list[str]:
    """Every distinct user this run has authenticated, in order."""
    found: list[str] = []
    from_input = p.observe(
        "identity/run-input", lambda: identity_from_input(p.run_input, store_of(p))
    )
    if from_input:
        found.append(from_input)
    for call in p.history:
        if call.tool in AUTH_TOOLS and call.ok:
            user_id = _user_id_from_result(call.result)
            if user_id and user_id not in found:
                found.append(user_id)
    return found


def verified_customer(p: Proposal) -> str | None:
    """The user the run input vouches for (the ticket's authenticated sender), or ``None``."""
    return p.observe("identity/run-input", lambda: identity_from_input(p.run_input, store_of(p)))


def customer(p: Proposal) -> str | None:
    """The authenticated user of the run (the first identity), or ``None``."""
    found = identities(p)
    return found[0] if found else None


def _order(p: Proposal) -> Record | None:
    store = store_of(p)
    order_id = p.args.get("order_id")
    if store is None or not isinstance(order_id, str):
        return None
    # read through the journal, so a replay decides on the state the run saw
    return p.observe(f"orders/{order_id}", lambda: store.get("orders", order_id))


def _products(p: Proposal) -> domain.ProductLookup:
    store = store_of(p)
    if store is None:
        return lambda product_id: None
    return lambda product_id: p.observe(
        f"products/{product_id}", lambda: store.get("products", product_id)
    )


# ----------------------------------------------------------------------------- rules


@rule("authenticate-first")
def authenticate_first(p: Proposal) -> Decision | None:
    """Anything about a user or an order needs an authenticated customer."""
    if p.tool in PUBLIC_TOOLS or customer(p) is not None:
        return None
    return Decision.deny(
        "Authenticate the customer first: find their user id by email, or by name and zip code."
    )


@rule("one-customer")
def one_customer(p: Proposal) -> Decision | None:
    """A second, different authenticated user means the conversation mixes customers."""
    found = identities(p)
    if len(found) > 1 and p.tool != "transfer_to_human_agents":
        return Decision.escalate(
            f"This conversation authenticated more than one customer ({', '.join(found)}); "
            "only one customer can be helped per conversation."
        )
    return None


@rule("own-records-only", tools=sorted(ORDER_TOOLS | USER_TOOLS))
def own_records_only(p: Proposal) -> Decision | None:
    """Profiles and orders of other users are off limits."""
    me = customer(p)
    if me is None:
        return None  # authenticate-first speaks
    if p.tool in USER_TOOLS:
        if p.args.get("user_id") != me:
            return Decision.deny("You can only access the authenticated customer's own profile.")
        return None
    if store_of(p) is None:
        return Decision.deny("Cannot check who owns this order: the store is not available.")
    order = _order(p)
    if order is not None and order.get("user_id") != me:
        return Decision.deny("This order belongs to another customer.")
    return None


def _found_by(p: Proposal, user_id: str) -> str:
    """The look-up that found ``user_id``, as a human reads it."""
    for call in p.history:
        if call.tool in AUTH_TOOLS and call.ok and _user_id_from_result(call.result) == user_id:
            shown = ", ".join(f"{k}={v}" for k, v in sorted(call.args.items()))
            return f"{call.tool}({shown})"
    return "a look-up"


@rule("unverified-identity", tools=sorted(ORDER_TOOLS | USER_TOOLS))
def unverified_identity(p: Proposal) -> Decision | None:
    """A customer the ticket's sender does not vouch for is not trusted with their account.

    Typing someone's email, or their name and zip code, into a ticket is not authentication.
    Every read or change of an account found that way waits for a human who verifies the
    customer; the reason says so, so an approver never mistakes it for a routine confirmation.
    """
    me = customer(p)
    if me is None or verified_customer(p) == me:
        return None  # authenticate-first speaks, or the sender is the customer
    sender = _field(p.run_input, "customer_email") or _field(p.run_input, "email")
    from_whom = f"the sender {sender} is not a known customer" if sender else "no known sender"
    return Decision.approve(
        f"UNVERIFIED IDENTITY: customer {me} was found by {_found_by(p, me)}, not "
        f"authenticated as the ticket's sender ({from_whom}). Verify who is writing before "
        f"allowing: {describe(p)}."
    )


_STATUS_MESSAGES = {
    domain.PENDING_ITEMS_MODIFIED: "its items were already modified, so it can no longer be "
    "modified or cancelled",
    domain.RETURN_REQUESTED: "a return was already requested for it",
    domain.EXCHANGE_REQUESTED: "an exchange was already requested for it",
    domain.CANCELLED: "it is cancelled",
}


@rule("order-status", tools=sorted(PENDING_ONLY | DELIVERED_ONLY))
def order_status(p: Proposal) -> Decision | None:
    """Cancel/modify need a pending order; return/exchange need a delivered one."""
    order = _order(p)
    if order is None:
        return None  # unknown order: the tool reports "Order not found"
    needed = domain.PENDING if p.tool in PENDING_ONLY else domain.DELIVERED
    status = str(order.get("status"))
    if status == needed:
        return None
    why = _STATUS_MESSAGES.get(status, f"its status is '{status}'")
    return Decision.deny(f"Order {order['order_id']} must be {needed} for this, but {why}.")


@rule("cancel-reason", tools=["cancel_pending_order"])
def cancel_reason(p: Proposal) -> Decision | None:
    """Only the two reasons the policy accepts."""
    if p.args.get("reason") in domain.CANCEL_REASONS:
        return None
    return Decision.deny(
        "The cancellation reason must be 'no longer needed' or 'ordered by mistake'."
    )


@rule("same-product-items", tools=sorted(ITEM_CHANGES))
def same_product_items(p: Proposal) -> Decision | None:
    """Each item may only become another available option of the same product."""
    order = _order(p)
    if order is None:
        return None
    item_ids = list(p.args.get("item_ids") or [])
    new_item_ids = list(p.args.get("new_item_ids") or [])
    if not item_ids:
        return Decision.deny("List the items to change.")
    if any(old == new for old, new in zip(item_ids, new_item_ids, strict=False)):
        return Decision.deny("Each new item must be a different option of the same product.")
    try:
        domain.replacement(order, item_ids, new_item_ids, _products(p))
    except DomainError as exc:
        return Decision.deny(
            f"Items can only change to an available option of the same product: {exc}."
        )
    return None


def _amount_to_pay(p: Proposal, order: Record) -> float | None:
    """What the new payment method would pay (``None`` when another rule already objects)."""
    if p.tool == "modify_pending_order_payment":
        return domain.order_total(order)
    try:
        change = domain.replacement(
            order,
            list(p.args.get("item_ids") or []),
            list(p.args.get("new_item_ids") or []),
            _products(p),
        )
    except DomainError:
        return None
    return change.price_difference


def _payment_problem(p: Proposal, order: Record, user: Record) -> str | None:
    method_id = str(p.args.get("payment_method_id"))
    try:
        method = domain.payment_method(user, method_id)
    except DomainError:
        return "The payment method must be one of the customer's own payment methods."
    original = domain.original_payment_method_id(order)
    if p.tool == "return_delivered_order_items":
        if method_id != original and not domain.is_gift_card(method):
            return (
                "A refund goes to the original payment method or to one of the customer's "
                "gift cards."
            )
        return None
    if p.tool == "modify_pending_order_payment":
        if len(order.get("payment_history", [])) != 1:
            return "Only an order paid in a single payment can change its payment method."
        if method_id == original:
            return "The new payment method must differ from the current one."
    amount = _amount_to_pay(p, order)
    if amount is None:
        return None
    try:
        domain.require_gift_card_covers(method, amount, "insufficient")
    except DomainError:
        return (
            f"Gift card {method_id} holds {method.get('balance', 0)}, "
            f"not enough to pay {amount:.2f}."
        )
    return None


@rule("payment-method", tools=sorted(PAYING_TOOLS))
def payment_method(p: Proposal) -> Decision | None:
    """The customer's own method; gift cards must cover what they pay; refunds go back home."""
    order = _order(p)
    store = store_of(p)
    if order is None or store is None:
        return None
    user_id = str(order.get("user_id"))
    user = p.observe(f"users/{user_id}", lambda: store.get("users", user_id))
    if user is None:
        return None
    problem = _payment_problem(p, order, user)
    return None if problem is None else Decision.deny(problem)


def describe(p: Proposal) -> str:
    """The change in one line a customer can say yes to."""
    a = p.args
    if p.tool == "cancel_pending_order":
        return f"cancel order {a.get('order_id')} (reason: {a.get('reason')})"
    if p.tool in {"modify_pending_order_address", "modify_user_address"}:
        keys = ("address1", "address2", "city", "state", "zip", "country")
        where = ", ".join(str(a.get(k)) for k in keys)
        if p.tool == "modify_user_address":
            return f"change the default address of {a.get('user_id')} to {where}"
        return f"ship order {a.get('order_id')} to {where}"
    if p.tool == "modify_pending_order_payment":
        return f"pay order {a.get('order_id')} with {a.get('payment_method_id')}"
    if p.tool in ITEM_CHANGES:
        verb = "modify" if p.tool == "modify_pending_order_items" else "exchange"
        pairs = zip(a.get("item_ids", []), a.get("new_item_ids", []), strict=False)
        swaps = ", ".join(f"{old} -> {new}" for old, new in pairs)
        return (
            f"{verb} items of order {a.get('order_id')}: {swaps}; "
            f"price difference settled with {a.get('payment_method_id')}"
        )
    if p.tool == "return_delivered_order_items":
        return (
            f"return items {', '.join(a.get('item_ids', []))} of order {a.get('order_id')}; "
            f"refund to {a.get('payment_method_id')}"
        )
    return f"{p.tool}({json.dumps(a, sort_keys=True)})"


@rule("confirm-writes", tools=sorted(STORE_WRITES))
def confirm_writes(p: Proposal) -> Decision | None:
    """Every change to the store needs the customer's explicit yes (a human approves)."""
    return Decision.approve(f"The customer must explicitly confirm: {describe(p)}.")


RULES: list[Rule] = [
    authenticate_first,
    one_customer,
    own_records_only,
    order_status,
    cancel_reason,
    same_product_items,
    payment_method,
    unverified_identity,  # before confirm-writes: its reason is the one an approver sees
    confirm_writes,
]


def evaluate(p: Proposal, rules: Sequence[Rule] | None = None) -> list[Decision]:
    """The decisions of every rule (default: :data:`RULES`) that has an opinion on ``p``."""
    decisions = []
    for r in RULES if rules is None else rules:
        d = r.evaluate(p)
        if d is not None:
            decisions.append(d)
    return decisions


def blocks(decisions: Sequence[Decision]) -> bool:
    """True when some decision denies or escalates the call."""
    return any(d.kind in (DecisionKind.DENY, DecisionKind.ESCALATE) for d in decisions)
