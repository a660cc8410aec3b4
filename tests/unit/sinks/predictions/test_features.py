"""What the models are given: ClickHouse's aggregate rows turned into each customer's summary, as of a moment."""

from __future__ import annotations

from datetime import UTC, date, datetime

import numpy as np

from sinks.predictions.features import (
    PROPENSITY_FEATURES,
    days_since_order,
    histories,
    outcomes,
    propensity_matrix,
    rfm,
)

AT = datetime(2026, 3, 1, 12, tzinfo=UTC)
# person, days with an order, first day, last day, value of all, value of the first day (ORDERS_SQL)
ORDER_ROWS = [
    ("zoe", 1, date(2026, 2, 1), date(2026, 2, 1), 40.0, 40.0),
    ("ann", 3, date(2026, 1, 1), date(2026, 2, 20), 100.0, 20.0),
]
# person, last event, views in 30 days, opens in 30 days, opens in 90 days (ACTIVITY_SQL)
ACTIVITY_ROWS = [
    ("ann", datetime(2026, 2, 28, 12), 4, 1, 3),  # noqa: DTZ001 (a driver may hand back naive UTC)
    ("max", datetime(2026, 2, 27, tzinfo=UTC), 9, 9, 9),  # browsed but never ordered: no customer
]


def test_customers_are_the_people_with_an_order_ordered_by_id_with_their_activity() -> None:
    people = histories(ORDER_ROWS, ACTIVITY_ROWS)
    assert [person.person_id for person in people] == ["ann", "zoe"]
    ann, zoe = people
    assert (ann.views_30d, ann.opens_30d, ann.opens_90d) == (4, 1, 3)
    assert ann.last_event == datetime(2026, 2, 28, 12, tzinfo=UTC)  # ClickHouse's naive UTC made aware
    # Without any activity row, the last event is the last order's day.
    assert (zoe.views_30d, zoe.last_event) == (0, datetime(2026, 2, 1, tzinfo=UTC))


def test_the_summary_counts_repeat_days_and_averages_their_value_only() -> None:
    summary = rfm(histories(ORDER_ROWS, ACTIVITY_ROWS), AT)
    assert summary.frequency.tolist() == [2.0, 0.0]  # ann: two days after her first; zoe: none
    assert summary.recency.tolist() == [50.0, 0.0]  # days from the first to the last order day
    assert summary.age.tolist() == [59.0, 28.0]  # days from the first order day to the day of `at`
    assert summary.monetary.tolist() == [40.0, 0.0]  # (100 - 20) / 2; none without repeat days


def test_the_propensity_features_in_their_named_order() -> None:
    matrix = propensity_matrix(histories(ORDER_ROWS, ACTIVITY_ROWS), AT)
    assert matrix.shape == (2, len(PROPENSITY_FEATURES))
    ann = dict(zip(PROPENSITY_FEATURES, matrix[0].tolist(), strict=True))
    assert ann["days_since_order"] == 9.0
    assert ann["days_since_event"] == 1.0
    assert round(ann["mean_value"], 4) == round(100 / 3, 4)
    assert round(ann["orders_per_month"], 4) == round(3 / 59 * 30, 4)
    assert (ann["views_30d"], ann["opens_30d"], ann["opens_90d"]) == (4.0, 1.0, 3.0)
    assert propensity_matrix([], AT).shape == (0, len(PROPENSITY_FEATURES))


def test_days_since_order_and_outcomes() -> None:
    people = histories(ORDER_ROWS, ACTIVITY_ROWS)
    assert np.array_equal(days_since_order(people, AT), np.array([9.0, 28.0]))
    after = outcomes([("ann", 2, 75.5)])
    assert (after["ann"].order_days, after["ann"].value, "zoe" in after) == (2, 75.5, False)
