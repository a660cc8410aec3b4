"""Products often bought together or after one another, computed in ClickHouse from the events table's orders
(docs/architecture.md, "Recommendations"); the result is the contract of schemas.recommendations.

For a product a and another b, `support` is the number of different people who bought b in the same order as a,
or in an order within AFTER_WINDOW_DAYS after one with a. People, not orders, are counted: a shopper (or a bot)
with a thousand orders counts once, like anyone else. The score is the cosine of the two sets of buyers,
support / sqrt(buyers(a) * buyers(b)): in [0, 1], it does not reward the best sellers for being everywhere (as a
plain count does) nor a pair of products three people bought (as lift does, N/3 for them). Pairs below
MIN_SUPPORT are left out; each product keeps its TOP_K best, ties broken by support and then by id.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from schemas.recommendations import AFTER_WINDOW_DAYS, MIN_SUPPORT, TOP_K, Recommendation
from sinks.predictions.features import BEFORE, epoch_ms

# The latest orders kept per person: a person's pairs grow with the square of their purchases, and this many
# orders covers any shopper's year while a bot's millions of orders cost no more than a shopper's.
ORDERS_PER_PERSON = 100

PURCHASES = f"""
SELECT person_id, timestamp AS at, product_id
FROM (
    SELECT person_id, timestamp,
           arrayDistinct(arrayFilter(x -> x != '', arrayMap(p -> JSONExtractString(p, 'product_id'),
               JSONExtractArrayRaw(properties, 'products')))) AS products
    FROM events FINAL
    WHERE event = 'Order Completed' AND {BEFORE}
    ORDER BY person_id, timestamp DESC
    LIMIT {ORDERS_PER_PERSON} BY person_id
)
ARRAY JOIN products AS product_id
"""

RECOMMENDATIONS_SQL = f"""
WITH purchases AS ({PURCHASES}),
buyers AS (SELECT product_id, uniqExact(person_id) AS people FROM purchases GROUP BY product_id),
pairs AS (
    SELECT first.product_id AS product, second.product_id AS other, uniqExact(first.person_id) AS support
    FROM purchases AS first
    INNER JOIN purchases AS second ON first.person_id = second.person_id
    WHERE first.product_id != second.product_id
      AND second.at >= first.at AND second.at <= first.at + INTERVAL {{window_days:UInt32}} DAY
    GROUP BY product, other
    HAVING support >= {{min_support:UInt32}}
)
SELECT pairs.product, pairs.other, pairs.support,
       pairs.support / sqrt(toFloat64(a.people) * toFloat64(b.people)) AS score
FROM pairs
INNER JOIN buyers AS a ON a.product_id = pairs.product
INNER JOIN buyers AS b ON b.product_id = pairs.other
ORDER BY pairs.product, score DESC, pairs.support DESC, pairs.other
LIMIT {{top_k:UInt32}} BY pairs.product
"""


def recommendations_version(at: datetime) -> str:
    """Names the run by its method, window, support and the end of its history: a rerun is the same version."""
    return f"cooc-w{AFTER_WINDOW_DAYS}d-s{MIN_SUPPORT}-{at.astimezone(UTC):%Y%m%dT%H%M%SZ}"


def read_pairs(client: Any, at: datetime) -> list[tuple[str, str, int, float]]:
    """(product, recommended, support, score) rows, best first per product, from the orders before `at`."""
    parameters = {
        "at_ms": epoch_ms(at),
        "window_days": AFTER_WINDOW_DAYS,
        "min_support": MIN_SUPPORT,
        "top_k": TOP_K,
    }
    rows = client.query(RECOMMENDATIONS_SQL, parameters=parameters).result_rows
    return [(str(product), str(other), int(support), float(score)) for product, other, support, score in rows]


def as_recommendations(rows: Iterable[Sequence[Any]], version: str, at: datetime) -> list[Recommendation]:
    """Pure: the rows of read_pairs (grouped by product, best first) as one Recommendation per product."""
    grouped: dict[str, list[str]] = {}
    for product, other, *_ in rows:
        grouped.setdefault(str(product), []).append(str(other))
    return [
        Recommendation(product_id=product, model_version=version, computed_at=at, recommended=others[:TOP_K])
        for product, others in grouped.items()
    ]


def compute_recommendations(client: Any, at: datetime) -> list[Recommendation]:
    """The product recommendations as of `at`, from the pairs read in ClickHouse."""
    return as_recommendations(read_pairs(client, at), recommendations_version(at), at)
