"""Varied shopper traffic and what a core made of it, recorded so a later core can be held to it.

`tests/unit/rules/data/core_before_plain_data.json.gz` holds this traffic and the outputs of the core as it
was before its state became plain data (pydantic models): every trigger, suppression and segment change as
published, each profile after every message and every final state as JSON, and the final states in the
stored form of that core's codec. `test_recorded_core.py` replays the same messages through the current core
and compares. The file was written by running this module with the old core on the import path:

    python -m tests.unit.rules.recorded_core tests/unit/rules/data/core_before_plain_data.json.gz

It touches only what both cores share: parse_event, apply_event, absorb, advance_time, PersonState.new and
SourcePosition, so the same code drives either.
"""

from __future__ import annotations

import gzip
import hashlib
import random
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from schemas.events import parse_event
from schemas.rules import load_rules
from streams.rules.engine import Outcome, absorb, advance_time, apply_event
from streams.rules.person import PersonState, SourcePosition

T0 = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
TIMEZONES = ["UTC", "Asia/Shanghai", "America/New_York", "Europe/Berlin", "Mars/Olympus", "Asia/Kolkata"]
PRODUCTS = [f"sku-{number}" for number in range(8)]
TRACKED = [
    ("Product Viewed", 12), ("Product Added", 9), ("Product Removed", 2), ("Cart Viewed", 1),
    ("Checkout Started", 3), ("Order Completed", 3), ("Email Delivered", 4), ("Email Opened", 2),
    ("Email Clicked", 1), ("Email Bounced", 1), ("Email Unsubscribed", 1), ("SMS Delivered", 1),
    ("SMS Clicked", 1), ("SMS Replied", 2), ("Signed Up", 1), ("Logged In", 2), ("Wishlist Shared", 1),
]  # fmt: skip


def _track(rng: random.Random, name: str, person: dict[str, Any]) -> dict[str, Any]:
    product = rng.choice(PRODUCTS)
    cart = rng.choice(["c1", "c2", "c3", None])
    properties: dict[str, Any]
    if name in ("Product Viewed", "Product Added", "Product Removed"):
        properties = {"product_id": product, "name": f"Item {product}", "price": rng.choice([9.99, 20.0, 149.5])}
        if name == "Product Added":
            properties["quantity"] = rng.randint(1, 3)
            properties["url"] = f"https://shop.example/p/{product}"
        if name == "Product Viewed":
            properties["category"] = rng.choice(["shoes", "hats"])
        if cart is not None and name != "Product Viewed":
            properties["cart_id"] = cart
    elif name in ("Cart Viewed", "Checkout Started"):
        properties = {"cart_id": cart} if cart else {}
    elif name == "Order Completed":
        properties = {"order_id": f"o-{rng.getrandbits(32)}", rng.choice(["revenue", "total"]): rng.choice([10, 99.9])}
        if cart is not None:
            properties["cart_id"] = cart
        properties["products"] = [{"product_id": rng.choice(PRODUCTS), "price": 5.0} for _ in range(rng.randint(0, 3))]
    elif name == "SMS Replied":
        properties = {"body": rng.choice(["STOP", "start", "hello", " Unsubscribe "])}
    elif name.startswith(("Email", "SMS")):
        properties = {"trigger_id": f"t{rng.randrange(100)}"}
    else:
        properties = {"method": "password"} if rng.random() < 0.5 else {}
    return {"type": "track", "event": name, "properties": properties}


def _identify(rng: random.Random, person: dict[str, Any]) -> dict[str, Any]:
    traits: dict[str, Any] = {}
    if rng.random() < 0.9:
        traits["email"] = f"{person['id']}@shop.example" if rng.random() < 0.9 else f"new-{person['id']}@x.example"
    if rng.random() < 0.7:
        traits["phone"] = f"+1555{rng.randrange(10**7):07d}"
    for trait, chance, values in (
        ("timezone", 0.6, TIMEZONES),
        ("locale", 0.4, ["en-US", "zh-CN", "de-DE"]),
        ("name", 0.5, ["Ana", "Ben", "陈"]),
        ("birthday", 0.3, ["1990-11-09", "--02-29", "1985-11-03", "bad"]),
        ("email_consent", 0.6, ["opted_in", "opted_out"]),
        ("sms_consent", 0.5, ["opted_in", "opted_out"]),
        ("plan", 0.3, ["gold", "free", 3, None]),
    ):
        if rng.random() < chance:
            traits[trait] = rng.choice(values)
    return {"type": "identify", "traits": traits}


def traffic(seed: int = 14, people: int = 80, messages: int = 4000) -> list[dict[str, Any]]:
    """Messages in arrival order: events (some late, some repeated, some linking an anonymous visitor) and
    clock ticks ({"tick": iso moment})."""
    rng = random.Random(seed)
    names, weights = zip(*TRACKED, strict=True)
    persons = [
        {"id": f"p{index}", "anonymous": f"anon-{index}", "known": rng.random() < 0.7} for index in range(people)
    ]
    moment = T0
    sent: list[dict[str, Any]] = []
    out: list[dict[str, Any]] = []
    while len(out) < messages:
        moment += timedelta(seconds=rng.expovariate(1 / 600))
        if rng.random() < 0.05:
            out.append({"tick": (moment + timedelta(minutes=rng.choice([0, 5, 45, 60 * 30]))).isoformat()})
            continue
        if sent and rng.random() < 0.03:
            out.append(rng.choice(sent))  # the same message again (a retry through another collector)
            continue
        person = rng.choice(persons)
        roll = rng.random()
        if roll < 0.08:
            document = _identify(rng, person)
        elif roll < 0.1:
            document = {"type": rng.choice(["page", "screen"]), "name": "Home", "properties": {"path": "/"}}
        elif roll < 0.11 and not person["known"]:
            document = {"type": "alias", "previousId": person["anonymous"]}
            person["known"] = True
        else:
            document = _track(rng, rng.choices(names, weights)[0], person)
        if person["known"]:
            document["userId"] = person["id"]
            if rng.random() < 0.2:
                document["anonymousId"] = person["anonymous"]
        else:
            document["anonymousId"] = person["anonymous"]
        if document["type"] == "alias":
            document["userId"] = person["id"]
        late = timedelta(minutes=rng.choice([0, 0, 0, 0, 3, 90, 60 * 26])) if rng.random() < 0.2 else timedelta()
        document["timestamp"] = (moment - late).isoformat()
        document["messageId"] = f"m{len(out)}"
        if rng.random() < 0.2:
            document["context"] = {"timezone": rng.choice(TIMEZONES), "locale": "fr-FR", "channel": "app"}
        sent.append(document)
        out.append(document)
    out.append({"tick": (moment + timedelta(days=40)).isoformat()})
    return out


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:20]


def replay(
    messages: list[dict[str, Any]], dump_profile: Callable[[Any], bytes], dump_state: Callable[[Any], bytes]
) -> tuple[list[list[Any]], dict[str, PersonState]]:
    """Every message through the core as one partition's runner would; what came out of each, and the
    final states. `dump_profile` and `dump_state` write a profile and a state as plain JSON."""
    rules = load_rules(None)
    states: dict[str, PersonState] = {}
    outputs: list[list[Any]] = []

    def record(index: int, person: str, step: Outcome) -> None:
        states[person] = step.state
        outputs.append(
            [
                index,
                person,
                step.applied,
                step.repeated,
                list(step.links),
                [trigger.to_json().decode() for trigger in step.triggers],
                [suppression.to_json().decode() for suppression in step.suppressed],
                [change.to_json().decode() for change in step.segment_changes],
                _digest(dump_profile(step.state.profile)),
            ]
        )

    for index, message in enumerate(messages):
        if "tick" in message:
            now = datetime.fromisoformat(message["tick"])
            position = SourcePosition(topic="clock", partition=0, offset=int(now.timestamp() * 1_000_000))
            for person in sorted(states):
                due = states[person].next_deadline()
                if due is not None and due <= now:
                    record(index, person, advance_time(states[person], now, position, rules))
            continue
        event = parse_event(orjson.dumps(message))
        person = event.person_id
        state = states.get(person) or PersonState.new(person)
        step = apply_event(state, event, SourcePosition(topic="events", partition=0, offset=index), rules)
        record(index, person, step)
        for anonymous in step.links:
            if anonymous in states:
                merged = absorb(
                    states[person],
                    states[anonymous],
                    SourcePosition(topic="identity", partition=0, offset=index),
                    rules,
                )
                record(index, person, merged)
    return outputs, states


def main(target: Path) -> None:
    messages = traffic()
    outputs, states = replay(
        messages, lambda profile: profile.model_dump_json().encode(), lambda state: state.model_dump_json().encode()
    )
    document = {
        "messages": messages,
        "outputs": outputs,
        "states_json": {person: state.model_dump_json() for person, state in states.items()},
        "states_stored": {person: state.to_json().decode() for person, state in states.items()},
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(gzip.compress(orjson.dumps(document), mtime=0))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
