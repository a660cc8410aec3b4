"""Realistic shopper traffic for demos and benchmarks: browse, add to cart, sometimes check out and buy.

`shopper_session` is pure (seeded random, injected start time); `Simulator` plays sessions onto Kafka.
"""

from __future__ import annotations

import heapq
import random
import time
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from kafka import KafkaProducer

from schemas.connections import kafka_python_options
from schemas.events import EventName
from schemas.settings import Settings
from streams.timers import utc_now

CATALOG: tuple[dict[str, Any], ...] = tuple(
    {
        "product_id": f"sku-{number:04d}",
        "name": name,
        "category": category,
        "price": price,
        "url": f"https://shop.example/p/sku-{number:04d}",
    }
    for number, (name, category, price) in enumerate(
        [
            ("Trail running shoes", "shoes", 119.0),
            ("Merino wool socks", "apparel", 18.5),
            ("Rain shell jacket", "apparel", 189.0),
            ("Insulated water bottle", "gear", 29.9),
            ("Headlamp 400 lumen", "gear", 44.0),
            ("Yoga mat", "fitness", 39.0),
            ("Espresso beans 1kg", "grocery", 24.0),
            ("Wireless earbuds", "electronics", 79.0),
            ("Linen shirt", "apparel", 59.0),
            ("Hiking backpack 28l", "gear", 99.0),
        ],
        start=1,
    )
)


@dataclass(frozen=True)
class PlannedEvent:
    after: timedelta
    document: dict[str, Any]


def _track(person_id: str, name: EventName, properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "track", "event": name.value, "userId": person_id, "properties": properties}


def shopper_session(
    rng: random.Random,
    person_id: str,
    *,
    buy_probability: float = 0.4,
    step: timedelta = timedelta(seconds=2),
) -> list[PlannedEvent]:
    """One visit: a page view, a few products viewed, maybe a cart, maybe a checkout and an order."""
    plan: list[PlannedEvent] = []
    elapsed = timedelta(0)

    def add(document: dict[str, Any]) -> None:
        nonlocal elapsed
        plan.append(PlannedEvent(elapsed, document))
        elapsed += step * rng.uniform(0.5, 1.5)

    add(
        {
            "type": "identify",
            "userId": person_id,
            "traits": {
                "email": f"{person_id}@shop.example",
                "phone": f"+1555{zlib.crc32(person_id.encode()) % 10**7:07d}",
            },
        }
    )
    add({"type": "page", "name": "Home", "userId": person_id, "properties": {"path": "/"}})
    viewed = rng.sample(CATALOG, k=rng.randint(1, 4))
    for product in viewed:
        add(_track(person_id, EventName.PRODUCT_VIEWED, dict(product)))
    if rng.random() < 0.6:
        cart_id = f"cart-{uuid.UUID(int=rng.getrandbits(128)).hex[:12]}"
        added = viewed[: rng.randint(1, len(viewed))]
        for product in added:
            add(_track(person_id, EventName.PRODUCT_ADDED, {**product, "cart_id": cart_id, "quantity": 1}))
        if rng.random() < buy_probability:
            products = [{**product, "quantity": 1} for product in added]
            value = round(sum(product["price"] for product in added), 2)
            add(
                _track(
                    person_id,
                    EventName.CHECKOUT_STARTED,
                    {"cart_id": cart_id, "value": value, "products": products},
                )
            )
            order_id = f"order-{uuid.UUID(int=rng.getrandbits(128)).hex[:12]}"
            add(
                _track(
                    person_id,
                    EventName.ORDER_COMPLETED,
                    {"order_id": order_id, "cart_id": cart_id, "revenue": value, "products": products},
                )
            )
    return plan


def stamp(document: dict[str, Any], moment: datetime, rng: random.Random) -> dict[str, Any]:
    """The document as sent: a message id and the time it happened."""
    return {
        **document,
        "messageId": str(uuid.UUID(int=rng.getrandbits(128))),
        "timestamp": moment.isoformat(),
    }


def interleaved_sessions(
    rng: random.Random, sessions: int, shoppers: int, start: datetime, session_gap: timedelta
) -> Iterator[tuple[datetime, dict[str, Any]]]:
    """Events of overlapping sessions in time order, each with its event time."""
    queue: list[tuple[datetime, int, dict[str, Any]]] = []
    sequence = 0
    for number in range(sessions):
        begins = start + session_gap * number
        person_id = f"shopper-{rng.randrange(shoppers):06d}"
        for planned in shopper_session(rng, person_id):
            heapq.heappush(queue, (begins + planned.after, sequence, planned.document))
            sequence += 1
        while queue and queue[0][0] <= begins:
            moment, _, document = heapq.heappop(queue)
            yield moment, stamp(document, moment, rng)
    while queue:
        moment, _, document = heapq.heappop(queue)
        yield moment, stamp(document, moment, rng)


class Simulator:
    """Plays shopper sessions onto the events topic in real time, keyed by person."""

    def __init__(self, settings: Settings, sessions_per_second: float, shoppers: int, seed: int | None) -> None:
        self.settings = settings
        self.sessions_per_second = sessions_per_second
        self.shoppers = shoppers
        self.rng = random.Random(seed)

    def run(self, duration_seconds: float) -> int:
        import orjson

        producer = KafkaProducer(**kafka_python_options(self.settings), linger_ms=5)
        sessions = max(1, int(duration_seconds * self.sessions_per_second))
        start = utc_now()
        started = time.monotonic()
        sent = 0
        try:
            for moment, document in interleaved_sessions(
                self.rng, sessions, self.shoppers, start, timedelta(seconds=1 / self.sessions_per_second)
            ):
                wait = (moment - start).total_seconds() - (time.monotonic() - started)
                if wait > 0:
                    producer.flush()
                    time.sleep(wait)
                key = str(document["userId"]).encode()
                producer.send(self.settings.events_topic, key=key, value=orjson.dumps(document))
                sent += 1
        finally:
            producer.flush()
            producer.close()
        return sent
