"""One training run: read the history before a moment, fit the models, score every customer as of it.

The lifetime-value models learn from the whole history before `at`. The propensity classifier needs labelled
examples, so it learns from the features as of one horizon earlier and what each person did in the horizon
that ended at `at`, and then scores the features as of `at`. People who never ordered are no customers yet
and get no score.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from schemas.scores import DEFAULT_HORIZON_DAYS, Score
from sinks.predictions.clv import ClvPrediction, fit_clv
from sinks.predictions.features import History, propensity_matrix, read_histories, read_outcomes, rfm
from sinks.predictions.propensity import fit_propensity


@dataclass(frozen=True)
class Trained:
    """What a run produced: the scores, and the pieces the back-test compares with the baselines."""

    model_version: str
    at: datetime
    horizon_days: int
    people: list[History]
    clv: ClvPrediction
    propensity: np.ndarray[Any, np.dtype[np.float64]]
    scores: list[Score]


def model_version(at: datetime, horizon_days: int) -> str:
    """Names the run by its models, the end of its history and its horizon: a rerun on the same data is the
    same version."""
    return f"mbgnbd-gg-hgb-{at.astimezone(UTC):%Y%m%dT%H%M%SZ}-h{horizon_days}"


def train(client: Any, at: datetime, horizon_days: int = DEFAULT_HORIZON_DAYS) -> Trained:
    """Fit on ClickHouse's history before `at` and score every customer as of `at`."""
    people = read_histories(client, at)
    clv = fit_clv(rfm(people, at)).predict(rfm(people, at), horizon_days)
    earlier_at = at - timedelta(days=horizon_days)
    earlier = read_histories(client, earlier_at)
    then = read_outcomes(client, earlier_at, at)
    ordered = np.array([person.person_id in then for person in earlier], dtype=np.bool_)
    model = fit_propensity(propensity_matrix(earlier, earlier_at), ordered)
    propensity = model.predict(propensity_matrix(people, at))
    version = model_version(at, horizon_days)
    scores = [score(person, version, at, horizon_days, clv, propensity, index) for index, person in enumerate(people)]
    return Trained(version, at, horizon_days, people, clv, propensity, scores)


def score(
    person: History,
    version: str,
    at: datetime,
    horizon_days: int,
    clv: ClvPrediction,
    propensity: np.ndarray[Any, np.dtype[np.float64]],
    index: int,
) -> Score:
    """The score of the person at `index` of the predictions."""
    p_alive = float(clv.p_alive[index])
    days = float(clv.next_order_days[index])
    return Score(
        person_id=person.person_id,
        model_version=version,
        scored_at=at,
        horizon_days=horizon_days,
        p_alive=p_alive,
        churn_risk=1.0 - p_alive,
        expected_orders=float(clv.expected_orders[index]),
        predicted_clv=float(clv.predicted_value[index]),
        purchase_propensity=float(np.clip(propensity[index], 0.0, 1.0)),
        expected_next_order_at=None if math.isnan(days) else at + timedelta(days=days),
    )
