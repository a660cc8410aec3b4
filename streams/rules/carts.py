"""Cart abandonment: a Product Added with no Order Completed for that cart within the rule's delay.

Carts are keyed by the event's cart_id (or "default" when the tracker sends none). Each cart is one
occurrence, identified by when it started, so a cart bought and filled again later is a new occurrence
with a new trigger_id.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field

from schemas.events import Event, EventName, OrderProperties, ProductProperties, UtcDatetime
from schemas.rules import CartAbandonmentRule
from schemas.triggers import CartItem, Trigger, make_trigger_id

RULE_NAME = "cart_abandonment"
DEFAULT_CART = "default"


class PendingCart(BaseModel):
    model_config = ConfigDict(frozen=True)

    cart_id: str
    started_at: UtcDatetime
    deadline: UtcDatetime
    items: dict[str, CartItem] = Field(default_factory=dict)
    cause_event_id: str | None = None

    @property
    def value(self) -> float:
        return round(sum((item.price or 0.0) * item.quantity for item in self.items.values()), 2)


Carts = Mapping[str, PendingCart]


def carts_after_event(carts: Carts, event: Event, rule: CartAbandonmentRule) -> dict[str, PendingCart]:
    """The pending carts after one event (the event's time is its timestamp, however late it arrives)."""
    if event.type != "track" or not rule.enabled:
        return dict(carts)
    if event.event == EventName.PRODUCT_ADDED:
        return _add(carts, event, event.typed_properties(ProductProperties), rule.delay)
    if event.event == EventName.PRODUCT_REMOVED:
        return _remove(carts, event.typed_properties(ProductProperties))
    if event.event == EventName.ORDER_COMPLETED:
        return _cancel_by_order(carts, event.timestamp, event.typed_properties(OrderProperties))
    return dict(carts)


def _add(carts: Carts, event: Event, product: ProductProperties, delay: timedelta) -> dict[str, PendingCart]:
    cart_id = product.cart_id or DEFAULT_CART
    item = CartItem(
        product_id=product.product_id,
        name=product.name,
        price=product.price,
        quantity=product.quantity,
        url=product.url,
        image_url=product.image_url,
    )
    current = carts.get(cart_id)
    if current is None:
        updated = PendingCart(
            cart_id=cart_id,
            started_at=event.timestamp,
            deadline=event.timestamp + delay,
            items={item.product_id: item},
            cause_event_id=event.message_id,
        )
    else:
        existing = current.items.get(item.product_id)
        if existing is not None:
            item = item.model_copy(update={"quantity": existing.quantity + item.quantity})
        updated = current.model_copy(
            update={
                # The reminder waits for the last cart activity; a late add never pulls the deadline in.
                "deadline": max(current.deadline, event.timestamp + delay),
                "started_at": min(current.started_at, event.timestamp),
                "items": {**current.items, item.product_id: item},
            }
        )
    return {**carts, cart_id: updated}


def _remove(carts: Carts, product: ProductProperties) -> dict[str, PendingCart]:
    cart_id = product.cart_id or DEFAULT_CART
    current = carts.get(cart_id)
    if current is None or product.product_id not in current.items:
        return dict(carts)
    items = {key: value for key, value in current.items.items() if key != product.product_id}
    remaining = {key: value for key, value in carts.items() if key != cart_id}
    if items:
        remaining[cart_id] = current.model_copy(update={"items": items})
    return remaining


def _cancel_by_order(carts: Carts, ordered_at: datetime, order: OrderProperties) -> dict[str, PendingCart]:
    # An order cancels the carts it could have settled: its own cart, or every cart when it names none,
    # provided the cart existed when the order was placed (a cart started after the order is a new one).
    def settled(cart: PendingCart) -> bool:
        same_cart = order.cart_id is None or order.cart_id == cart.cart_id
        return same_cart and cart.started_at <= ordered_at

    return {cart_id: cart for cart_id, cart in carts.items() if not settled(cart)}


def fire_due_carts(
    carts: Carts, person_id: str, now: datetime, grace: timedelta, rule: CartAbandonmentRule
) -> tuple[dict[str, PendingCart], list[Trigger]]:
    """Carts whose deadline plus grace has passed at `now` become triggers and leave the pending set."""
    remaining: dict[str, PendingCart] = {}
    fired: list[Trigger] = []
    for cart_id, cart in carts.items():
        if cart.deadline + grace > now:
            remaining[cart_id] = cart
            continue
        fired.append(
            Trigger(
                trigger_id=make_trigger_id(RULE_NAME, person_id, cart_id, cart.started_at),
                rule=RULE_NAME,
                person_id=person_id,
                channel=rule.channel,
                template_id=rule.template_id,
                due_at=cart.deadline,
                fired_at=now,
                cause_event_id=cart.cause_event_id,
                context={
                    "cart_id": cart_id,
                    "items": [item.model_dump(mode="json", exclude_none=True) for item in cart.items.values()],
                    "value": cart.value,
                },
            )
        )
    return remaining, fired


def next_cart_deadline(carts: Carts, grace: timedelta) -> datetime | None:
    return min((cart.deadline + grace for cart in carts.values()), default=None)
