"""Where scores and recommendations go: a table in ClickHouse each, with the model version, and a compacted
topic each, the scores keyed by the person (schemas.scores, the contract the worker joins from) and the
recommendations keyed by the product (schemas.recommendations, the map every worker reads whole).

A person erased while the models were training is left out of the scores: their events are gone by then, but the
run read them before (the sink's erasures table names them by hash, sinks.clickhouse.erasure.erasure_hashes). The
recommendations name nobody (each pair is bought by at least MIN_SUPPORT people) and are left as they are.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from kafka import KafkaProducer

from schemas.connections import kafka_python_options
from schemas.recommendations import Recommendation
from schemas.scores import Score
from schemas.settings import Settings
from sinks.clickhouse.erasure import erasure_hashes
from sinks.clickhouse.rows import RowOptions

SCORE_COLUMNS = (
    "person_id",
    "model_version",
    "scored_at",
    "horizon_days",
    "p_alive",
    "churn_risk",
    "expected_orders",
    "predicted_clv",
    "purchase_propensity",
    "expected_next_order_at",
)
RECOMMENDATION_COLUMNS = ("product_id", "model_version", "computed_at", "recommended")
# Scores (or products) per insert: large enough for ClickHouse, small enough to keep a 100k-customer run's
# memory flat.
INSERT_BATCH = 50_000

# The products whose latest stored row has recommendations: what the topic holds, as published runs left it.
HELD_PRODUCTS_SQL = """
SELECT product_id FROM recommendations
GROUP BY product_id
HAVING argMax(notEmpty(recommended), (inserted_at, computed_at)) = 1
"""


def not_erased(client: Any, scores: Sequence[Score], options: RowOptions) -> list[Score]:
    """The scores of people who were not erased."""
    erased = {str(hashed) for (hashed,) in client.query("SELECT DISTINCT person_hash FROM erasures").result_rows}
    if not erased:
        return list(scores)
    return [score for score in scores if erased.isdisjoint(erasure_hashes(score.person_id, options))]


def store_scores(client: Any, scores: Sequence[Score]) -> int:
    """Insert the scores; a rerun of the same version collapses to one row per person on merge."""
    for start in range(0, len(scores), INSERT_BATCH):
        rows = [[getattr(score, column) for column in SCORE_COLUMNS] for score in scores[start : start + INSERT_BATCH]]
        client.insert("scores", rows, column_names=list(SCORE_COLUMNS))
    return len(scores)


def publish_scores(settings: Settings, scores: Sequence[Score]) -> int:
    """Send every score to the scores topic, keyed by the person, and wait for the broker to hold them all."""
    return _publish(settings, settings.scores_topic, ((score.key, score.to_json()) for score in scores))


def dropped_products(client: Any, recommendations: Sequence[Recommendation]) -> list[str]:
    """The products the topic holds recommendations for (their latest stored row has some) that this run has
    none for: each gets a tombstone, so a worker forgets what no longer holds."""
    current = {recommendation.product_id for recommendation in recommendations}
    held = {str(product) for (product,) in client.query(HELD_PRODUCTS_SQL).result_rows}
    return sorted(held - current)


def store_recommendations(
    client: Any, recommendations: Sequence[Recommendation], dropped: Sequence[str], version: str, at: datetime
) -> int:
    """Insert each product's recommendations, and an empty row for each dropped product (the tombstone it is
    sent, so the next run does not send it again); the number of rows."""
    rows: list[list[Any]] = [[r.product_id, r.model_version, r.computed_at, r.recommended] for r in recommendations]
    rows.extend([product, version, at, []] for product in dropped)
    for start in range(0, len(rows), INSERT_BATCH):
        client.insert("recommendations", rows[start : start + INSERT_BATCH], column_names=list(RECOMMENDATION_COLUMNS))
    return len(rows)


def publish_recommendations(
    settings: Settings, recommendations: Sequence[Recommendation], dropped: Sequence[str]
) -> int:
    """Send each product's recommendations to the recommendations topic, keyed by the product, and a tombstone
    for each dropped product; wait for the broker to hold them all. The number of records."""
    records = [(r.key, r.to_json()) for r in recommendations] + [(product.encode(), None) for product in dropped]
    return _publish(settings, settings.recommendations_topic, records)


def _publish(settings: Settings, topic: str, records: Iterable[tuple[bytes, bytes | None]]) -> int:
    producer = KafkaProducer(**kafka_python_options(settings), acks="all", linger_ms=20)
    sent = 0
    try:
        for key, value in records:
            producer.send(topic, key=key, value=value)
            sent += 1
        producer.flush(timeout=120)
    finally:
        producer.close()
    return sent
