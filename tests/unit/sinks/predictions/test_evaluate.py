"""The back-test's arithmetic: the metrics, the baselines, and a verdict that says when a model loses."""

from __future__ import annotations

from datetime import UTC, date, datetime

import numpy as np
import pytest

from sinks.predictions.evaluate import (
    Comparison,
    Evaluation,
    auc,
    brier,
    mae,
    own_average,
    recency_rule,
    reliability,
    table,
)
from sinks.predictions.features import History

LABELS = np.array([True, True, False, False])


def test_auc_ranks_and_says_chance_when_one_class_is_missing() -> None:
    assert auc(LABELS, np.array([0.9, 0.8, 0.2, 0.1])) == 1.0
    assert auc(LABELS, np.array([0.1, 0.2, 0.8, 0.9])) == 0.0
    assert auc(np.array([True, True]), np.array([0.3, 0.4])) == 0.5


def test_brier_and_mae() -> None:
    assert brier(LABELS, np.array([1.0, 1.0, 0.0, 0.0])) == 0.0
    assert brier(LABELS, np.array([0.5, 0.5, 0.5, 0.5])) == 0.25
    assert mae(np.array([1.0, 3.0]), np.array([2.0, 1.0])) == 1.5


def test_reliability_bins_count_predictions_and_how_often_they_came_true() -> None:
    bins = reliability(np.array([True, False, True, True]), np.array([0.05, 0.08, 0.95, 1.0]))
    assert [(b.low, b.count, round(b.predicted, 3), b.observed) for b in bins] == [
        (0.0, 2, 0.065, 0.5),
        (0.9, 2, 0.975, 1.0),
    ]


def test_the_recency_rule_is_last_periods_share_of_buyers_by_days_since_the_last_order() -> None:
    earlier_days = np.array([5.0, 10.0, 200.0, 250.0, 400.0])
    earlier_ordered = np.array([True, False, False, False, True])
    # 3 days: the 0-15 bucket (1 of 2 ordered); 220: the 180-365 bucket (0 of 2); 45: no one, the overall 2/5.
    rates = recency_rule(earlier_days, earlier_ordered, np.array([3.0, 220.0, 45.0]))
    assert rates.tolist() == [0.5, 0.0, 0.4]


def test_own_average_is_orders_and_value_per_period_since_the_first_order() -> None:
    person = History("ann", 4, date(2026, 1, 1), date(2026, 2, 1), 200.0, 50.0, datetime(2026, 2, 1, tzinfo=UTC))
    orders, value = own_average([person], datetime(2026, 3, 2, tzinfo=UTC), 30)
    assert (orders.tolist(), value.tolist()) == ([2.0], [100.0])  # 60 days: two periods of 30


@pytest.mark.parametrize(
    ("model", "baseline", "lower_is_better", "beats"),
    [(0.8, 0.7, False, True), (0.7, 0.8, False, False), (0.1, 0.2, True, True), (0.2, 0.2, True, False)],
)
def test_a_model_beats_its_baseline_only_when_strictly_better(
    model: float, baseline: float, lower_is_better: bool, beats: bool
) -> None:
    assert Comparison("x", model, baseline, lower_is_better).beats_baseline is beats


def test_the_table_says_which_models_do_not_beat_their_baseline() -> None:
    evaluation = Evaluation(
        cutoff=datetime(2026, 3, 1, tzinfo=UTC),
        horizon_days=90,
        people=10,
        churned=0.4,
        comparisons=[Comparison("churn AUC", 0.6, 0.7, False), Comparison("orders MAE", 0.5, 0.9, True)],
        reliability={"churn risk": reliability(LABELS, np.array([0.9, 0.8, 0.2, 0.1]))},
    )
    lines = table(evaluation).splitlines()
    assert "10 customers, 40.0% did not order" in lines[0]
    assert lines[2].split() == ["churn", "AUC", "0.6000", "0.7000", "DOES", "NOT", "beat", "the", "baseline"]
    assert lines[3].split() == ["orders", "MAE", "0.5000", "0.9000", "beats", "the", "baseline"]
    assert "  0.1-0.2: 0.100 -> 0.000 (1)" in lines  # a bin holds its lower edge
