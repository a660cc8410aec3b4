"""Recommendations computed by chDB from a small order history whose co-occurrences are known, and published
by `nudgeflow models train` on the real broker, with a tombstone for a product that lost its own."""

from __future__ import annotations

import argparse
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from schemas.recommendations import MIN_SUPPORT, parse_recommendation
from schemas.settings import Settings
from sinks.clickhouse.rows import EVENTS, RowOptions, event_row
from sinks.predictions.publish import RECOMMENDATION_COLUMNS
from sinks.predictions.recommendations import compute_recommendations, recommendations_version
from streams.cli.models import command_models_train
from tests.integration.conftest import read_topic
from tests.integration.sinks.personas import END, store_personas

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


def known_history() -> list[dict[str, Any]]:
    """Orders whose co-occurrences are known: shoe -> lace, sock; sock -> lace, shoe; nothing else qualifies."""
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
    return documents


def test_pairs_bought_together_or_soon_after_by_enough_people_are_recommended(
    sink_settings: Settings, clickhouse: Any
) -> None:
    documents = known_history()
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


def test_models_train_publishes_each_product_s_recommendations_and_a_tombstone_for_one_that_lost_them(
    sink_settings: Settings, clickhouse: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = sink_settings
    assert END == AT
    store_personas(clickhouse, RowOptions.of(settings), 300, seed=2)  # customers for the scores, and their orders
    store(clickhouse, settings, known_history())
    expected = {r.product_id: r.recommended for r in compute_recommendations(clickhouse, AT)}
    assert (expected["shoe"], expected["sock"]) == (["lace", "sock"], ["lace", "shoe"]) and "belt" not in expected
    # What an earlier run stored and published for a product nobody buys with anything any more.
    earlier = [["belt", "cooc-earlier", AT - timedelta(days=7), ["shoe"]]]
    clickhouse.insert("recommendations", earlier, column_names=list(RECOMMENDATION_COLUMNS))

    assert command_models_train(settings, argparse.Namespace(at=AT, horizon_days=60, no_publish=False)) == 0
    out = capsys.readouterr().out
    assert f"recommendations for {len(expected)} products, 1 dropped" in out
    assert f"published {len(expected) + 1} to {settings.recommendations_topic}" in out
    first = read_topic(settings.kafka_bootstrap, settings.recommendations_topic, lambda m: len(m) > len(expected))
    published = {m.key.decode(): parse_recommendation(m.key, m.value, settings.limits) for m in first}
    assert len(first) == len(published) == len(expected) + 1  # one record per product
    assert published.pop("belt") is None  # its tombstone: the workers forget it
    assert {product: r.recommended for product, r in published.items() if r is not None} == expected
    assert {r.model_version for r in published.values() if r is not None} == {recommendations_version(AT)}

    rows = clickhouse.query(
        "SELECT product_id, recommended FROM recommendations FINAL WHERE model_version = {version:String}",
        parameters={"version": recommendations_version(AT)},
    ).result_rows
    assert {str(product): list(ids) for product, ids in rows} == {**expected, "belt": []}  # the tombstone kept

    # The next run sends the belt no second tombstone; unpublished, a run leaves the topic as it is.
    later = AT + timedelta(days=1)
    assert command_models_train(settings, argparse.Namespace(at=later, horizon_days=60, no_publish=False)) == 0
    assert f"recommendations for {len(expected)} products, 0 dropped" in capsys.readouterr().out
    total = 2 * len(expected) + 1
    again = read_topic(settings.kafka_bootstrap, settings.recommendations_topic, lambda m: len(m) >= total)
    assert Counter(m.key.decode() for m in again) == {**dict.fromkeys(expected, 2), "belt": 1}
    assert command_models_train(settings, argparse.Namespace(at=later, horizon_days=60, no_publish=True)) == 0
    assert f"published 0 to {settings.recommendations_topic}" in capsys.readouterr().out
