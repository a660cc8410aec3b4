"""Which predicted scores a person holds after a record of the scores topic (docs/architecture.md,
"Predictions"): the latest by the moment they speak from, whatever order the records arrive in.

The topic is compacted and rewritten by every training run, so a reader can meet an older run's record
after a newer one (a rerun of an earlier cut-off, a replay): the newer never gives way to it. A tombstone
clears them: the person was erased, or has no scores any more.
"""

from __future__ import annotations

from schemas.scores import Score
from streams.rules.person import PersonScores


def person_scores(score: Score) -> PersonScores:
    """What the state keeps of a validated score (the facts' inputs, and which run they came from)."""
    return PersonScores(
        model_version=score.model_version,
        scored_at=score.scored_at,
        horizon_days=score.horizon_days,
        churn_risk=score.churn_risk,
        predicted_clv=score.predicted_clv,
        purchase_propensity=score.purchase_propensity,
        expected_orders=score.expected_orders,
        expected_next_order_at=score.expected_next_order_at,
    )


def scores_after(current: PersonScores | None, score: Score | None) -> PersonScores | None:
    """The person's scores once `score` (None: a tombstone) is read; `current` itself when it stays.

    Later `scoredAt` wins; on the same moment the greater model version. One run that published a person
    twice keeps what was read last, as compaction would. The same record read twice gives equal scores."""
    if score is None:
        return None
    incoming = person_scores(score)
    if current is None:
        return incoming
    if (incoming.scored_at, incoming.model_version) < (current.scored_at, current.model_version):
        return current  # an older run: never replaces a newer one
    return current if incoming == current else incoming
