"""Simulated personas: the same seed gives the same shoppers, and the personas differ as they claim."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, datetime
from statistics import mean
from typing import Any
from zoneinfo import ZoneInfo

from streams.simulator.shoppers import PERSONAS, persona_history, persona_population

START = datetime(2025, 6, 1, tzinfo=UTC)
END = datetime(2026, 6, 1, tzinfo=UTC)


History = list[tuple[datetime, dict[str, Any]]]


def named(event: str, person_events: History) -> History:
    return [(moment, document) for moment, document in person_events if document.get("event") == event]


def test_the_same_seed_gives_the_same_people_and_another_seed_others() -> None:
    first = [(person.person_id, person.events) for person in persona_population(3, 50, START, END)]
    assert first == [(person.person_id, person.events) for person in persona_population(3, 50, START, END)]
    assert first != [(person.person_id, person.events) for person in persona_population(4, 50, START, END)]
    # A person's history does not depend on how many others are simulated.
    assert first[:10] == [(person.person_id, person.events) for person in persona_population(3, 10, START, END)]


def test_every_event_lies_in_the_window_in_time_order_and_is_stamped() -> None:
    for person in persona_population(1, 200, START, END):
        moments = [moment for moment, _ in person.events]
        assert moments == sorted(moments) and all(START <= moment < END for moment in moments)
        assert all(document["timestamp"] == moment.isoformat() for moment, document in person.events)
        assert len({document["messageId"] for _, document in person.events}) == len(person.events)


def test_the_personas_differ_in_orders_spend_dropping_out_and_the_hour_they_open() -> None:
    orders: dict[str, list[int]] = defaultdict(list)
    values: dict[str, list[float]] = defaultdict(list)
    quiet_last_quarter: dict[str, list[bool]] = defaultdict(list)
    hours: dict[str, list[int]] = defaultdict(list)
    for person in persona_population(7, 3000, START, END):
        name = person.persona.name
        placed = named("Order Completed", person.events)
        orders[name].append(len(placed))
        values[name].extend(float(document["properties"]["revenue"]) for _, document in placed)
        quiet_last_quarter[name].append(all((END - moment).days > 90 for moment, _ in placed))
        zone = ZoneInfo(str(person.events[0][1]["context"]["timezone"]))
        hours[name].extend(moment.astimezone(zone).hour for moment, _ in named("Email Opened", person.events))
    assert mean(orders["loyal"]) > 2 * mean(orders["regular"]) > 2 * mean(orders["occasional"])
    assert mean(values["loyal"]) > mean(values["regular"]) > mean(values["occasional"])
    # Most of the lapsing have stopped buying by the last quarter; most of the loyal have not.
    assert mean(quiet_last_quarter["lapsing"]) > 0.6 > 0.3 > mean(quiet_last_quarter["loyal"])
    for persona in PERSONAS:
        usual = max(set(hours[persona.name]), key=hours[persona.name].count)
        assert usual == persona.open_hour, persona.name


def test_a_history_is_a_function_of_its_random_source() -> None:
    persona = PERSONAS[0]
    assert persona_history(random.Random(5), "p", persona, START, END) == persona_history(
        random.Random(5), "p", persona, START, END
    )
