"""The back-test: train on the history before a cut-off, score the window after it, and set every figure
beside a naive baseline computed in the same run.

What is compared, for the customers known at the cut-off:

* churn (no order in the window): the model's churn risk (1 - P(alive)) against the recency rule;
* propensity (an order in the window): the classifier against the recency rule;
* orders and value in the window: BG/NBD and Gamma-Gamma against the person's own average so far.

The recency rule is the one a marketer writes by hand, made a probability: the share of people last seen
ordering that many days before the previous cut-off who ordered in the period after it. AUC (how well a score
ranks), Brier score and reliability bins (whether its probabilities mean what they say), MAE (per person).
A model that does not beat its baseline is reported as such: nothing here picks the better of the two.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.metrics import brier_score_loss, roc_auc_score

from schemas.scores import DEFAULT_HORIZON_DAYS
from sinks.predictions.features import History, days_since_order, read_histories, read_outcomes, rfm
from sinks.predictions.training import train

Floats = npt.NDArray[np.float64]

# Days since the last order, the buckets of the recency rule.
RECENCY_EDGES = (15.0, 30.0, 60.0, 90.0, 180.0, 365.0)
RELIABILITY_BINS = 10


@dataclass(frozen=True)
class Comparison:
    """One figure of the model beside the baseline's; `lower_is_better` for errors."""

    name: str
    model: float
    baseline: float
    lower_is_better: bool

    @property
    def beats_baseline(self) -> bool:
        return self.model < self.baseline if self.lower_is_better else self.model > self.baseline


@dataclass(frozen=True)
class ReliabilityBin:
    """One bin of a reliability diagram: predicted probabilities against the share observed."""

    low: float
    high: float
    count: int
    predicted: float  # mean predicted probability in the bin
    observed: float  # share of positives in the bin


@dataclass(frozen=True)
class Evaluation:
    """A back-test's result: each model beside its baselines, and how reliable its probabilities were."""

    cutoff: datetime
    horizon_days: int
    people: int
    churned: float  # share without an order in the window
    comparisons: list[Comparison]
    reliability: dict[str, list[ReliabilityBin]]


def auc(labels: npt.NDArray[np.bool_], scores: Floats) -> float:
    """Area under the ROC curve; 0.5 (no better than chance) when only one class is present."""
    if labels.all() or not labels.any():
        return 0.5
    return float(roc_auc_score(labels, scores))


def brier(labels: npt.NDArray[np.bool_], probabilities: Floats) -> float:
    """The Brier score of the probabilities against the labels (lower is better)."""
    return float(brier_score_loss(labels.astype(np.int8), np.clip(probabilities, 0.0, 1.0)))


def mae(actual: Floats, predicted: Floats) -> float:
    """The mean absolute error of the predictions; 0 when there are none."""
    return float(np.mean(np.abs(actual - predicted))) if actual.size else 0.0


def reliability(
    labels: npt.NDArray[np.bool_], probabilities: Floats, bins: int = RELIABILITY_BINS
) -> list[ReliabilityBin]:
    """Equal-width bins of predicted probability: how many fell in each, and how often they came true."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    placed = np.clip(np.digitize(probabilities, edges[1:-1]), 0, bins - 1)
    found = []
    for number in range(bins):
        inside = placed == number
        if inside.any():
            found.append(
                ReliabilityBin(
                    float(edges[number]),
                    float(edges[number + 1]),
                    int(inside.sum()),
                    float(probabilities[inside].mean()),
                    float(labels[inside].mean()),
                )
            )
    return found


def recency_rule(earlier_days: Floats, earlier_ordered: npt.NDArray[np.bool_], days: Floats) -> Floats:
    """The probability of an order in the window for each of `days` (since the last order), read off the
    share who ordered among those with as many days one period earlier; the overall share where a bucket was
    empty."""
    overall = float(earlier_ordered.mean()) if earlier_ordered.size else 0.0
    earlier_bucket = np.digitize(earlier_days, RECENCY_EDGES)
    bucket = np.digitize(days, RECENCY_EDGES)
    rates = np.full(len(RECENCY_EDGES) + 1, overall)
    for number in range(len(RECENCY_EDGES) + 1):
        inside = earlier_bucket == number
        if inside.any():
            rates[number] = float(earlier_ordered[inside].mean())
    return np.asarray(rates[bucket], dtype=np.float64)


def own_average(people: Sequence[History], at: datetime, horizon_days: int) -> tuple[Floats, Floats]:
    """Orders (days with one) and value per horizon, on average since each person's first order."""
    summary = rfm(people, at)
    periods = np.maximum(summary.age, 1.0) / horizon_days
    orders = (summary.frequency + 1) / periods
    value = np.array([person.value for person in people], dtype=np.float64) / periods
    return orders, value


def evaluate(client: Any, cutoff: datetime, horizon_days: int = DEFAULT_HORIZON_DAYS) -> Evaluation:
    """Train on the history before `cutoff` and compare with what happened in the horizon after it."""
    trained = train(client, cutoff, horizon_days)
    people = trained.people
    after = read_outcomes(client, cutoff, cutoff + timedelta(days=horizon_days))
    ordered = np.array([person.person_id in after for person in people], dtype=np.bool_)
    churned = ~ordered
    actual_orders = np.array([after[p.person_id].order_days if p.person_id in after else 0 for p in people], float)
    actual_value = np.array([after[p.person_id].value if p.person_id in after else 0.0 for p in people], float)

    earlier_at = cutoff - timedelta(days=horizon_days)
    earlier = read_histories(client, earlier_at)
    then = read_outcomes(client, earlier_at, cutoff)
    earlier_ordered = np.array([person.person_id in then for person in earlier], dtype=np.bool_)
    rule = recency_rule(days_since_order(earlier, earlier_at), earlier_ordered, days_since_order(people, cutoff))
    baseline_orders, baseline_value = own_average(people, cutoff, horizon_days)

    churn_risk = 1.0 - trained.clv.p_alive
    comparisons = [
        Comparison("churn AUC", auc(churned, churn_risk), auc(churned, 1.0 - rule), lower_is_better=False),
        Comparison("churn Brier", brier(churned, churn_risk), brier(churned, 1.0 - rule), lower_is_better=True),
        Comparison("propensity AUC", auc(ordered, trained.propensity), auc(ordered, rule), lower_is_better=False),
        Comparison("propensity Brier", brier(ordered, trained.propensity), brier(ordered, rule), lower_is_better=True),
        Comparison(
            "orders MAE",
            mae(actual_orders, trained.clv.expected_orders),
            mae(actual_orders, baseline_orders),
            lower_is_better=True,
        ),
        Comparison(
            "value MAE",
            mae(actual_value, trained.clv.predicted_value),
            mae(actual_value, baseline_value),
            lower_is_better=True,
        ),
    ]
    return Evaluation(
        cutoff=cutoff,
        horizon_days=horizon_days,
        people=len(people),
        churned=float(churned.mean()) if people else 0.0,
        comparisons=comparisons,
        reliability={
            "churn risk": reliability(churned, churn_risk),
            "churn recency rule": reliability(churned, 1.0 - rule),
            "propensity": reliability(ordered, trained.propensity),
            "propensity recency rule": reliability(ordered, rule),
        },
    )


EVALUATION_COLUMNS = (
    "evaluated_at", "cutoff", "horizon_days", "people", "figure", "model", "baseline", "lower_is_better",
    "beats_baseline",
)  # fmt: skip


def store_evaluation(client: Any, evaluation: Evaluation, evaluated_at: datetime) -> int:
    """Each figure of the back-test beside its baseline into `model_evaluations`, as one run at
    `evaluated_at`; returns how many figures were stored."""
    rows = [
        [evaluated_at, evaluation.cutoff, evaluation.horizon_days, evaluation.people, comparison.name,
         comparison.model, comparison.baseline, comparison.lower_is_better, comparison.beats_baseline]
        for comparison in evaluation.comparisons
    ]  # fmt: skip
    if rows:
        client.insert("model_evaluations", rows, column_names=list(EVALUATION_COLUMNS))
    return len(rows)


def table(evaluation: Evaluation) -> str:
    """The figures as a plain-text table, the reliability bins after it."""
    lines = [
        f"back-test: trained before {evaluation.cutoff.isoformat()}, scored the {evaluation.horizon_days} days after; "
        f"{evaluation.people} customers, {evaluation.churned:.1%} did not order",
        f"{'figure':<18} {'model':>10} {'baseline':>10}  verdict",
    ]
    for comparison in evaluation.comparisons:
        verdict = "beats the baseline" if comparison.beats_baseline else "DOES NOT beat the baseline"
        lines.append(f"{comparison.name:<18} {comparison.model:>10.4f} {comparison.baseline:>10.4f}  {verdict}")
    lines.append("baselines: recency rule (churn, propensity); own average per period so far (orders, value)")
    for name, bins in evaluation.reliability.items():
        lines.append(f"reliability of {name} (predicted -> observed, people):")
        lines.extend(
            f"  {item.low:.1f}-{item.high:.1f}: {item.predicted:.3f} -> {item.observed:.3f} ({item.count})"
            for item in bins
        )
    return "\n".join(lines)
