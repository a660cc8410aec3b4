"""Recommendations computed by chDB from a small order history whose co-occurrences are known."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from schemas.recommendations import MIN_SUPPORT
from schemas.settings import Settings
from sinks.clickhouse.rows import EVENTS, RowOptions, event_row
from sinks.predictions.recommendations import compute_recommendations

pytestmark = pytest.mark.integration
START = datetime(2026, 1, 1, tzinfo=UTC)
AT = datetime(2026, 6, 1, tzinfo=UTC)


def order(person: str, day: int, *products: str) -> dict[str, Any]:
    return {
        "type": "track",
        "event": "Order Completed",
        "userId": person,
        "messageId": str(uuid.uuid4()),
        "timestamp": (START + timedelta(days=day)).isoformat(),
        "properties": {
            "order_id": str(uuid.uuid4()),
            "revenue": 10.0,
            "products": [{"product_id": p} for p in products],
        },
    }


def store(client: Any, settings: Settings, documents: list[dict[str, Any]]) -> None:
    options = RowOptions.of(settings)
    received = AT + timedelta(days=365)  # the last order lies after AT, as a later one would
    rows = [event_row(orjson.dumps(d), "events", 0, n, options, received) for n, d in enumerate(documents)]
    assert None not in rows
    client.insert("events", rows, column_names=list(EVENTS.columns))


def test_pairs_bought_together_or_soon_after_by_enough_people_are_recommended(
    sink_settings: Settings, clickhouse: Any
) -> None:
    documents = []
    for person in ("u1", "u2", "u3"):
        documents.append(order(person, 0, "shoe", "sock"))  # together: shoe <-> sock, three people
        documents.append(order(person, 10, "lace"))  # ten days after both: shoe -> lace, sock -> lace
    for person in ("u4", "u5", "u6"):
        documents.append(order(person, 0, "shoe"))
        documents.append(order(person, 60, "glove"))  # past the 30-day window: not "after"
    for person in ("u4", "u5"):
        documents.append(order(person, 1, "hat", "scarf"))  # two people: below the minimum support
    documents.extend(order("bot", day, "shoe", "belt") for day in range(50))  # one person, however many orders
    documents.append(order("u1", 200, "tie", "shoe"))  # after AT: not read
    store(clickhouse, sink_settings, documents)

    started = time.perf_counter()
    found = {r.product_id: r for r in compute_recommendations(clickhouse, AT)}
    print(f"\nrecommendations of a {len(documents)}-order history: {time.perf_counter() - started:.3f}s")
    assert MIN_SUPPORT == 3
    # shoe has 7 buyers, sock and lace 3: shoe -> sock and shoe -> lace score 3/sqrt(21) alike (the id breaks
    # the tie); sock -> lace is 3/sqrt(9), above sock -> shoe. lace was bought last: nothing after it.
    assert found["shoe"].recommended == ["lace", "sock"]
    assert found["sock"].recommended == ["lace", "shoe"]
    assert set(found) == {"shoe", "sock"}
    assert {r.model_version for r in found.values()} == {f"cooc-w30d-s3-{AT:%Y%m%dT%H%M%SZ}"}
    assert all(r.computed_at == AT for r in found.values())
