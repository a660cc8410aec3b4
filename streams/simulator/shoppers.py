"""Realistic shopper traffic for demos and benchmarks: browse, add to cart, sometimes check out and buy.

`shopper_session` is pure (seeded random, injected start time); `Simulator` plays sessions onto Kafka.

`persona_history` is a shopper's whole past in the manner of a persona (`PERSONAS`): how often they buy,
how much they spend, how soon they stop buying, and the hour of their local day they open emails. The
personas differ so that what the models learn from history can be checked against what comes after it
(`nudgeflow models evaluate`); each person's history depends only on the seed and the person's number.
"""

from __future__ import annotations

import heapq
import random
import time
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

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
    """One event of a planned session, `after` its start."""

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


@dataclass(frozen=True)
class Persona:
    """How a kind of shopper behaves; each person of the kind varies around these (see `persona_history`).

    Purchases follow the buy-till-you-die story: orders arrive at a steady rate while the person is a
    customer, and after each order they stop for good with probability `dropout`."""

    name: str
    share: float  # of the population
    orders_per_year: float  # while still a customer
    order_value: float  # mean revenue of an order
    dropout: float  # chance of never buying again after an order
    open_hour: int  # hour of the local day they open emails
    open_rate: float  # chance of opening one newsletter while still a customer


PERSONAS: tuple[Persona, ...] = (
    Persona("loyal", 0.15, orders_per_year=16.0, order_value=95.0, dropout=0.02, open_hour=8, open_rate=0.7),
    Persona("regular", 0.30, orders_per_year=6.0, order_value=60.0, dropout=0.08, open_hour=12, open_rate=0.45),
    Persona("occasional", 0.30, orders_per_year=2.0, order_value=40.0, dropout=0.2, open_hour=20, open_rate=0.25),
    Persona("lapsing", 0.25, orders_per_year=8.0, order_value=70.0, dropout=0.45, open_hour=22, open_rate=0.3),
)

TIMEZONES = ("America/New_York", "Europe/Berlin", "Asia/Shanghai", "America/Los_Angeles")
NEWSLETTER_EVERY = timedelta(days=14)
# After they stop buying, people still open the odd email: this share of their former rate.
LAPSED_OPEN_FACTOR = 0.15


def person_rng(seed: int, number: int) -> random.Random:
    """The random source of one person: their history does not depend on how many others are simulated."""
    return random.Random(f"{seed}:{number}")


def choose_persona(rng: random.Random, personas: tuple[Persona, ...] = PERSONAS) -> Persona:
    """A persona drawn at random by its share."""
    return rng.choices(personas, weights=[persona.share for persona in personas])[0]


def persona_history(
    rng: random.Random, person_id: str, persona: Persona, start: datetime, end: datetime
) -> list[tuple[datetime, dict[str, Any]]]:
    """Everything one shopper sent between `start` and `end`, in time order: a sign-up with their traits,
    orders (each after a product view), a few browsing visits, and opens of a fortnightly newsletter at
    about their persona's local hour. Pure: the same rng state gives the same history."""
    # Each person varies around the persona: the rate gamma-distributed and the dropout beta-distributed
    # (BG/NBD's own assumptions), the mean order value gamma-distributed (Gamma-Gamma's).
    rate_per_day = rng.gammavariate(4.0, persona.orders_per_year / 4.0) / 365.0
    dropout = rng.betavariate(persona.dropout * 12.0, (1.0 - persona.dropout) * 12.0)
    mean_value = rng.gammavariate(6.0, persona.order_value / 6.0)
    zone = ZoneInfo(rng.choice(TIMEZONES))
    span = (end - start).total_seconds()
    joined = start + timedelta(seconds=rng.uniform(0.0, span * 0.75))
    events: list[tuple[datetime, dict[str, Any]]] = []

    def add(moment: datetime, document: dict[str, Any]) -> None:
        if start <= moment < end:
            document = {**document, "context": {"timezone": zone.key}}
            events.append((moment, stamp(document, moment, rng)))

    add(
        joined,
        {
            "type": "identify",
            "userId": person_id,
            "traits": {"email": f"{person_id}@shop.example", "persona": persona.name},
        },
    )
    # Orders: the first at sign-up, then at the person's rate until they drop out after one.
    moment = joined
    stopped_at = end
    while moment < end:
        product = rng.choice(CATALOG)
        value = round(rng.gammavariate(8.0, mean_value / 8.0), 2)
        add(
            moment - timedelta(hours=rng.uniform(0.5, 48.0)), _track(person_id, EventName.PRODUCT_VIEWED, dict(product))
        )
        order_id = f"order-{uuid.UUID(int=rng.getrandbits(128)).hex[:12]}"
        add(
            moment,
            _track(
                person_id,
                EventName.ORDER_COMPLETED,
                {"order_id": order_id, "revenue": value, "products": [{**product, "quantity": 1}]},
            ),
        )
        if rng.random() < dropout:
            stopped_at = moment
            break
        moment += _gap(rng, rate_per_day, end - moment)
    # Visits without an order, as often as orders while a customer.
    moment = joined + _gap(rng, rate_per_day, end - joined)
    while moment < stopped_at:
        add(moment, _track(person_id, EventName.PRODUCT_VIEWED, dict(rng.choice(CATALOG))))
        moment += _gap(rng, rate_per_day, end - moment)
    # The newsletter goes out every fortnight at the same instant; each opens it at about their own hour.
    letter = start + NEWSLETTER_EVERY
    while letter < end:
        chance = persona.open_rate * (1.0 if letter < stopped_at else LAPSED_OPEN_FACTOR)
        if letter >= joined and rng.random() < chance:
            local = letter.astimezone(zone)
            hour = (persona.open_hour + round(rng.gauss(0.0, 0.7))) % 24
            opened = local.replace(hour=hour, minute=rng.randrange(60), second=rng.randrange(60), microsecond=0)
            if opened < local:
                opened += timedelta(days=1)
            add(opened.astimezone(UTC), _track(person_id, EventName.EMAIL_OPENED, {"campaign_id": "newsletter"}))
        letter += NEWSLETTER_EVERY
    events.sort(key=lambda pair: pair[0])
    return events


def _gap(rng: random.Random, rate_per_day: float, longest: timedelta) -> timedelta:
    """Days to the next arrival of a Poisson process, cut just past `longest` (a rare person's rate is tiny)."""
    return timedelta(days=min(rng.expovariate(rate_per_day), longest.total_seconds() / 86_400 + 1.0))


@dataclass(frozen=True)
class SimulatedPerson:
    """One simulated shopper and their events."""

    person_id: str
    persona: Persona
    events: list[tuple[datetime, dict[str, Any]]]


def persona_population(seed: int, people: int, start: datetime, end: datetime) -> Iterator[SimulatedPerson]:
    """`people` shoppers of the personas, each with their history between `start` and `end`."""
    for number in range(people):
        rng = person_rng(seed, number)
        persona = choose_persona(rng)
        person_id = f"persona-{number:07d}"
        yield SimulatedPerson(person_id, persona, persona_history(rng, person_id, persona, start, end))


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
