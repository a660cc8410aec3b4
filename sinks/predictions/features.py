"""What the models know of each person as of a moment: aggregates of the events table, one row per person.

Two statements read the raw events (deduplicated with FINAL, so a replayed message counts once): the orders
per person, by day (the buy-till-you-die models count days with an order, not orders), and the activity that
hints at intent (views, email opens, the last event). `histories` joins them into `History` values, which the
pure functions below turn into the models' inputs. Everything is in days, at day granularity, as of `at`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

# An order's value, as the orders table reads it (sinks/clickhouse/migrations/005_events_by_message.sql).
ORDER_VALUE = (
    "coalesce(JSONExtract(properties, 'revenue', 'Nullable(Float64)'), "
    "JSONExtract(properties, 'total', 'Nullable(Float64)'), JSONExtract(properties, 'value', 'Nullable(Float64)'), 0)"
)
BEFORE = "timestamp < fromUnixTimestamp64Milli({at_ms:Int64}, 'UTC')"

# Per person: days with an order, the first and last of them, the value of all and of the first day's orders.
ORDERS_SQL = f"""
SELECT person_id, count() AS days, min(day) AS first_day, max(day) AS last_day, sum(day_value) AS total,
       argMin(day_value, day) AS first_day_total
FROM (
    SELECT person_id, toDate(timestamp) AS day, sum({ORDER_VALUE}) AS day_value
    FROM events FINAL
    WHERE event = 'Order Completed' AND {BEFORE}
    GROUP BY person_id, day
)
GROUP BY person_id
"""

# Per person: the last event, and product views and email opens in the last 30 and 90 days.
SINCE_30_DAYS = "timestamp >= fromUnixTimestamp64Milli({at_ms:Int64} - 30 * 86400000, 'UTC')"
SINCE_90_DAYS = "timestamp >= fromUnixTimestamp64Milli({at_ms:Int64} - 90 * 86400000, 'UTC')"
ACTIVITY_SQL = f"""
SELECT person_id, max(timestamp) AS last_event,
       countIf(event = 'Product Viewed' AND {SINCE_30_DAYS}) AS views_30d,
       countIf(event = 'Email Opened' AND {SINCE_30_DAYS}) AS opens_30d,
       countIf(event = 'Email Opened' AND {SINCE_90_DAYS}) AS opens_90d
FROM events FINAL
WHERE {BEFORE}
GROUP BY person_id
"""

# Per person: days with an order and their value in [from, until): what happened after a cut-off.
OUTCOME_SQL = f"""
SELECT person_id, uniqExact(toDate(timestamp)) AS days, sum({ORDER_VALUE}) AS total
FROM events FINAL
WHERE event = 'Order Completed' AND timestamp >= fromUnixTimestamp64Milli({{from_ms:Int64}}, 'UTC') AND {BEFORE}
GROUP BY person_id
"""


@dataclass(frozen=True)
class History:
    """One customer's history as of a moment (only people with at least one order are customers)."""

    person_id: str
    order_days: int
    first_order: date
    last_order: date
    value: float  # of all their orders
    first_day_value: float  # of the orders of their first day (Gamma-Gamma leaves it out)
    last_event: datetime
    views_30d: int = 0
    opens_30d: int = 0
    opens_90d: int = 0


@dataclass(frozen=True)
class Outcome:
    """What a person did in the window after the cut-off: how many days they ordered on, and the value."""

    order_days: int
    value: float


# The columns of `propensity_matrix`, in order.
PROPENSITY_FEATURES = (
    "frequency",
    "recency_days",
    "age_days",
    "days_since_order",
    "days_since_event",
    "mean_value",
    "orders_per_month",
    "views_30d",
    "opens_30d",
    "opens_90d",
)


def epoch_ms(moment: datetime) -> int:
    """A moment as milliseconds since the epoch."""
    return int(moment.astimezone(UTC).timestamp() * 1000)


def histories(order_rows: Iterable[Sequence[Any]], activity_rows: Iterable[Sequence[Any]]) -> list[History]:
    """Pure: the rows of ORDERS_SQL and ACTIVITY_SQL as one History per customer, ordered by person."""
    activity = {str(row[0]): row for row in activity_rows}
    found = []
    for person, days, first, last, value, first_value in order_rows:
        seen = activity.get(str(person))
        last_event = _utc(seen[1]) if seen is not None else datetime.combine(last, datetime.min.time(), UTC)
        found.append(
            History(
                person_id=str(person),
                order_days=int(days),
                first_order=first,
                last_order=last,
                value=float(value),
                first_day_value=float(first_value),
                last_event=last_event,
                views_30d=int(seen[2]) if seen is not None else 0,
                opens_30d=int(seen[3]) if seen is not None else 0,
                opens_90d=int(seen[4]) if seen is not None else 0,
            )
        )
    return sorted(found, key=lambda history: history.person_id)


def outcomes(rows: Iterable[Sequence[Any]]) -> dict[str, Outcome]:
    """Each person's outcome, from rows of person, order days and value."""
    return {str(person): Outcome(int(days), float(value)) for person, days, value in rows}


def read_histories(client: Any, at: datetime) -> list[History]:
    """Every customer's history before `at`, from ClickHouse."""
    parameters = {"at_ms": epoch_ms(at)}
    return histories(
        client.query(ORDERS_SQL, parameters=parameters).result_rows,
        client.query(ACTIVITY_SQL, parameters=parameters).result_rows,
    )


def read_outcomes(client: Any, since: datetime, until: datetime) -> dict[str, Outcome]:
    """Each person's orders in [since, until)."""
    rows = client.query(OUTCOME_SQL, parameters={"from_ms": epoch_ms(since), "at_ms": epoch_ms(until)}).result_rows
    return outcomes(rows)


@dataclass(frozen=True)
class Rfm:
    """The buy-till-you-die summary of customers, in days: repeat days (`frequency`), the age at the last
    one (`recency`), the age now (`age`), and the mean value of the repeat days (0 without any)."""

    frequency: npt.NDArray[np.float64]
    recency: npt.NDArray[np.float64]
    age: npt.NDArray[np.float64]
    monetary: npt.NDArray[np.float64]


def rfm(people: Sequence[History], at: datetime) -> Rfm:
    """Pure: the summary of `people` as of `at` (a day with orders counts once, the first day not at all)."""
    today = at.astimezone(UTC).date()
    frequency = np.array([history.order_days - 1 for history in people], dtype=np.float64)
    recency = np.array([(history.last_order - history.first_order).days for history in people], dtype=np.float64)
    age = np.array([max((today - history.first_order).days, 0) for history in people], dtype=np.float64)
    repeat_value = np.array([history.value - history.first_day_value for history in people], dtype=np.float64)
    monetary = np.divide(repeat_value, frequency, out=np.zeros_like(repeat_value), where=frequency > 0)
    return Rfm(frequency, recency, age, np.maximum(monetary, 0.0))


def propensity_matrix(people: Sequence[History], at: datetime) -> npt.NDArray[np.float64]:
    """Pure: one row of PROPENSITY_FEATURES per person, as of `at`."""
    summary = rfm(people, at)
    days_since_event = np.array(
        [max((at - history.last_event).total_seconds() / 86_400, 0.0) for history in people], dtype=np.float64
    )
    mean_value = np.array([history.value / history.order_days for history in people], dtype=np.float64)
    per_month = (summary.frequency + 1) / np.maximum(summary.age, 1.0) * 30.0
    columns = [
        summary.frequency,
        summary.recency,
        summary.age,
        summary.age - summary.recency,
        days_since_event,
        mean_value,
        per_month,
        np.array([history.views_30d for history in people], dtype=np.float64),
        np.array([history.opens_30d for history in people], dtype=np.float64),
        np.array([history.opens_90d for history in people], dtype=np.float64),
    ]
    return np.column_stack(columns) if people else np.zeros((0, len(PROPENSITY_FEATURES)))


def days_since_order(people: Sequence[History], at: datetime) -> npt.NDArray[np.float64]:
    """Pure: days from each person's last order to `at` (what the recency baselines look at)."""
    today = at.astimezone(UTC).date()
    return np.array([(today - history.last_order).days for history in people], dtype=np.float64)


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
