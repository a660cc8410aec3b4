"""The spread of the latest scores in chDB, as the dashboard and `nudgeflow report scores` show it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from schemas.scores import Score
from sinks.analytics.queries import score_distribution
from sinks.analytics.report import REPORTS
from sinks.predictions.publish import store_scores

pytestmark = pytest.mark.integration
SCORED = datetime(2026, 11, 1, tzinfo=UTC)


def score(person: str, version: str, churn: float, value: float, at: datetime = SCORED) -> Score:
    return Score(
        person_id=person, model_version=version, scored_at=at, horizon_days=90, p_alive=1 - churn,
        churn_risk=churn, expected_orders=1.0, predicted_clv=value, purchase_propensity=0.5,
    )  # fmt: skip


def test_the_latest_model_versions_scores_fall_in_their_bands(clickhouse: Any) -> None:
    assert score_distribution(clickhouse).model_version is None
    store_scores(clickhouse, [score("old", "v1", 0.99, 5000.0, datetime(2026, 10, 1, tzinfo=UTC))])
    store_scores(
        clickhouse,
        [score("a", "v2", 0.05, 0.0), score("b", "v2", 0.95, 30.0), score("c", "v2", 1.0, 3000.0),
         score("d", "v2", 0.55, 99.99)],
    )  # fmt: skip
    found = score_distribution(clickhouse)
    assert (found.model_version, found.people) == ("v2", 4)
    churn = {band.low: band.people for band in found.churn_risk}
    assert churn == {0.0: 1, 0.1: 0, 0.2: 0, 0.3: 0, 0.4: 0, 0.5: 1, 0.6: 0, 0.7: 0, 0.8: 0, 0.9: 2}
    value = {band.low: band.people for band in found.predicted_clv if band.people}
    assert value == {0.0: 1, 25.0: 1, 50.0: 1, 2500.0: 1}
    assert found.predicted_clv[-1].high is None
    rows = REPORTS["scores"](clickhouse, SCORED, SCORED)
    assert sum(row["people"] for row in rows if row["score"] == "churn_risk") == 4
