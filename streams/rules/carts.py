"""What is in each of a person's carts, from Product Added, Product Removed and Order Completed."""

from __future__ import annotations

from collections.abc import Mapping

from schemas.events import Event, EventName, OrderProperties, ProductProperties
from schemas.triggers import CartItem

DEFAULT_CART = "default"
# Carts kept per person, most recently touched first out last: an abandoned cart that is never bought or
# emptied must not grow the state for ever.
MAX_CARTS = 5

Carts = Mapping[str, Mapping[str, CartItem]]


def cart_id_of(properties: Mapping[str, object]) -> str:
    value = properties.get("cart_id")
    return str(value) if value else DEFAULT_CART


def carts_after_event(carts: Carts, event: Event) -> dict[str, dict[str, CartItem]]:
    updated = {cart_id: dict(items) for cart_id, items in carts.items()}
    if event.type != "track":
        return updated
    if event.event == EventName.PRODUCT_ADDED:
        product = event.typed_properties(ProductProperties)
        cart_id = cart_id_of(event.properties)
        cart = updated.pop(cart_id, {})
        updated[cart_id] = cart  # now the most recently touched
        while len(updated) > MAX_CARTS:
            del updated[next(iter(updated))]
        existing = cart.get(product.product_id)
        cart[product.product_id] = CartItem(
            product_id=product.product_id,
            name=product.name,
            price=product.price,
            quantity=product.quantity + (existing.quantity if existing else 0),
            url=product.url,
            image_url=product.image_url,
        )
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
    value = round(sum((item.price or 0.0) * item.quantity for item in items.values()), 2)
    return {"items": [item.model_dump(mode="json", exclude_none=True) for item in items.values()], "value": value}
