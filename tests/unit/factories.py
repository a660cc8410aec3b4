"""Events for tests, written the way a tracker sends them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.events import Event

T0 = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def track(
    event_name: str, minutes: float, person: str = "p1", message_id: str | None = None, **properties: Any
) -> Event:
    return Event.model_validate(
        {
            "type": "track",
            "event": event_name,
            "userId": person,
            "messageId": message_id or f"{person}-{event_name}-{minutes}",
            "timestamp": at(minutes).isoformat(),
            "properties": properties,
        }
    )


def added(
    minutes: float, product: str = "sku-1", cart: str | None = "c1", person: str = "p1", price: float = 10.0
) -> Event:
    return track(
        "Product Added",
        minutes,
        person,
        product_id=product,
        cart_id=cart,
        price=price,
        name=f"Item {product}",
    )


def ordered(minutes: float, cart: str | None = "c1", person: str = "p1", revenue: float = 10.0) -> Event:
    properties: dict[str, Any] = {"order_id": f"o-{minutes}", "revenue": revenue}
    if cart is not None:
        properties["cart_id"] = cart
    return track("Order Completed", minutes, person, **properties)
