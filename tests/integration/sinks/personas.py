"""Simulated persona histories written into chDB's events table as the sink writes them
(sinks.clickhouse.rows.event_row)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from sinks.clickhouse.rows import EVENTS, RowOptions, event_row
from streams.simulator.shoppers import SimulatedPerson, persona_population

START = datetime(2025, 6, 1, tzinfo=UTC)
END = datetime(2026, 6, 1, tzinfo=UTC)


def store_personas(client: Any, options: RowOptions, people: int, seed: int = 1) -> list[SimulatedPerson]:
    """`people` shoppers' histories between START and END in the events table; returns the people."""
    population = list(persona_population(seed, people, START, END))
    rows = []
    for person in population:
        for _, document in person.events:
            row = event_row(orjson.dumps(document), "events", 0, len(rows), options, END)
            assert row is not None, document
            rows.append(row)
    client.insert("events", rows, column_names=list(EVENTS.columns))
    return population
