"""What is in each of a person's carts, from Product Added, Product Removed and Order Completed."""

from __future__ import annotations

from collections.abc import Mapping

from schemas.events import Event, EventName, OrderProperties, ProductProperties
from schemas.limits import DEFAULT_LIMITS, Limits
from schemas.triggers import CartItem
from streams.rules.bounds import short_text

DEFAULT_CART = "default"

Carts = Mapping[str, Mapping[str, CartItem]]


def cart_id_of(properties: Mapping[str, object]) -> str:
    """The cart an event is about: its cart_id, or the default cart."""
    value = properties.get("cart_id")
    return str(value) if value else DEFAULT_CART


def carts_after_event(carts: Carts, event: Event, limits: Limits = DEFAULT_LIMITS) -> dict[str, dict[str, CartItem]]:
    """The carts after `event`. An abandoned cart that is never bought or emptied must not grow the state
    for ever: past limits.carts the least recently touched cart goes, past limits.cart_items the least
    recently added product."""
    updated = {cart_id: dict(items) for cart_id, items in carts.items()}
    if event.type != "track":
        return updated
    if event.event == EventName.PRODUCT_ADDED:
        product = event.typed_properties(ProductProperties)
        cart_id = cart_id_of(event.properties)
        cart = updated.pop(cart_id, {})
        updated[cart_id] = cart  # now the most recently touched
        while len(updated) > limits.carts:
            del updated[next(iter(updated))]
        existing = cart.pop(product.product_id, None)
        cart[product.product_id] = CartItem(
            product_id=product.product_id,
            name=short_text(product.name, limits),
            price=product.price,
            quantity=min(product.quantity + (existing.quantity if existing else 0), int(limits.number_magnitude)),
            url=short_text(product.url, limits),
            image_url=short_text(product.image_url, limits),
        )
        while len(cart) > limits.cart_items:
            del cart[next(iter(cart))]
    elif event.event == EventName.PRODUCT_REMOVED:
        product = event.typed_properties(ProductProperties)
        cart_id = cart_id_of(event.properties)
        cart = updated.get(cart_id, {})
        cart.pop(product.product_id, None)
        if not cart:
            updated.pop(cart_id, None)
    elif event.event == EventName.ORDER_COMPLETED:
        order = event.typed_properties(OrderProperties)
        if order.cart_id is None:
            updated.clear()  # an order that names no cart settles every cart
        else:
            updated.pop(order.cart_id, None)
    return updated


def cart_context(items: Mapping[str, CartItem]) -> dict[str, object]:
    """A cart as a trigger's context and the profile view show it: its items and their total value."""
    value = round(sum((item.price or 0.0) * item.quantity for item in items.values()), 2)
    return {"items": [_item_fields(item) for item in items.values()], "value": value}


def _item_fields(item: CartItem) -> dict[str, object]:
    """What a sender shows of a product: its fields that are set."""
    fields = {name: getattr(item, name) for name in item.__struct_fields__}
    return {name: value for name, value in fields.items() if value is not None}
