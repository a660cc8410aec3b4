"""Where scores go: the scores table in ClickHouse, with the model version, and the compacted scores topic,
one record per person keyed by the person (schemas.scores, the contract the worker joins from).

A person erased while the models were training is left out of both: their events are gone by then, but the
run read them before (the sink's erasures table names them by hash, sinks.clickhouse.erasure.erasure_hashes).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kafka import KafkaProducer

from schemas.connections import kafka_python_options
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
# Scores per insert: large enough for ClickHouse, small enough to keep a 100k-customer run's memory flat.
INSERT_BATCH = 50_000


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
    producer = KafkaProducer(**kafka_python_options(settings), acks="all", linger_ms=20)
    try:
        for score in scores:
            producer.send(settings.scores_topic, key=score.key, value=score.to_json())
        producer.flush(timeout=120)
    finally:
        producer.close()
    return len(scores)
