"""Predicted scores of one person: what `nudgeflow models train` publishes on the compacted `scores` topic.

The contract between the models and the stream (docs/architecture.md, "Predictions"):

* one record per person, keyed by the person id (UTF-8), equal to the record's `personId`; compaction keeps
  the latest, so a reader that starts from the beginning holds every person's current scores;
* a record without a value (a tombstone) means the person has no scores any more (erased): forget them;
* the value is JSON in camelCase like every other topic (`Score.to_json`); fields may be added in later
  versions, so a reader ignores what it does not know, and never relies on their order;
* the probabilities are in [0, 1], the amounts non-negative and finite, the ids bounded by `limits.id_length`;
  a record that does not validate (`parse_score`) is refused with the reason, never half-applied.

`churnRisk` is `1 - pAlive` (the BG/NBD probability that the person has stopped buying); `expectedOrders` and
`predictedClv` cover the `horizonDays` after `scoredAt`; `predictedClv` is in the shop's order currency (the
`revenue` of its Order Completed events); `purchasePropensity` is the probability of at least one order in the
same horizon; `expectedNextOrderAt` is unset when the model expects no order within the horizon.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from schemas.events import UtcDatetime, WireModel
from schemas.limits import LimitExceeded, Limits, check_id, decode_validated

# A score is a few hundred bytes; its two ids may each be as long as `limits.id_length` allows (4096 at most).
SCORE_BYTES = 16 * 1024

# `churnRisk` and `pAlive` are written from one number; this much rounding apart is still one number.
COMPLEMENT_TOLERANCE = 1e-6

# The horizon a training run covers unless told otherwise (`nudgeflow models train --horizon-days`).
DEFAULT_HORIZON_DAYS = 90

# A horizon longer than ten years predicts nothing a rule could act on.
LONGEST_HORIZON_DAYS = 3650


class Score(WireModel):
    """One person's scores from one model version."""

    # Unknown fields are dropped, not kept: a newer writer may add some, and a reader holds only what it knows.
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True)

    person_id: str = Field(min_length=1, description="the person, as keyed on every topic")
    model_version: str = Field(min_length=1, description="which training run wrote this (models and cut-off)")
    scored_at: UtcDatetime = Field(description="the moment the scores speak from: the end of the history used")
    horizon_days: int = Field(ge=1, le=LONGEST_HORIZON_DAYS, description="days after scoredAt the figures cover")
    p_alive: float = Field(ge=0, le=1, allow_inf_nan=False, description="probability the person still buys")
    churn_risk: float = Field(ge=0, le=1, allow_inf_nan=False, description="1 - pAlive")
    expected_orders: float = Field(ge=0, allow_inf_nan=False, description="orders expected within the horizon")
    predicted_clv: float = Field(ge=0, allow_inf_nan=False, description="value of those orders, order currency")
    purchase_propensity: float = Field(
        ge=0, le=1, allow_inf_nan=False, description="probability of at least one order within the horizon"
    )
    expected_next_order_at: UtcDatetime | None = Field(
        default=None, description="when the next order is expected; unset when none is within the horizon"
    )

    @model_validator(mode="after")
    def _consistent(self) -> Score:
        if abs(self.churn_risk + self.p_alive - 1) > COMPLEMENT_TOLERANCE:
            raise ValueError(f"churnRisk {self.churn_risk} is not 1 - pAlive ({self.p_alive})")
        if self.expected_next_order_at is not None and not (
            self.scored_at <= self.expected_next_order_at <= self.scored_at + timedelta(days=self.horizon_days)
        ):
            raise ValueError("expectedNextOrderAt lies outside the horizon after scoredAt")
        return self

    @property
    def key(self) -> bytes:
        return self.person_id.encode()


class InvalidScore(ValueError):
    """A record of the scores topic that cannot be used, with the reason (for the dead letter)."""


def parse_score(key: bytes | None, raw: bytes | None, limits: Limits) -> Score | None:
    """The score in a record of the scores topic, None for a tombstone, or InvalidScore with the reason.

    The key must be the person the score is about: a record keyed by one person cannot set another's facts."""
    if raw is None:
        return None
    score = decode_validated(raw, Score.model_validate, SCORE_BYTES, InvalidScore, "score")
    try:
        check_id("personId", score.person_id, limits)
        check_id("modelVersion", score.model_version, limits)
        for name in ("expected_orders", "predicted_clv"):
            value = getattr(score, name)
            if value > limits.number_magnitude:
                raise LimitExceeded(to_camel(name), f"number {value!r} outside ±{limits.number_magnitude:g}")
    except LimitExceeded as error:
        raise InvalidScore(f"over a limit: {error}") from None
    if key is None or key.decode(errors="replace") != score.person_id:
        raise InvalidScore("the record's key is not its personId")
    return score
