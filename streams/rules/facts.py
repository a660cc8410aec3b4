"""Facts derived from a profile at a moment: rolling windows, recency, RFM, lifecycle, engagement, and the
person's predicted scores when they have some.

Segments are conditions on these facts; the HTTP profile view shows them. Every fact is a function of
(profile, scores, now), so the same person read at the same time always gives the same answer.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import msgspec

from schemas.profile import Profile
from schemas.rules import ProfileConfig
from streams.rules.person import PersonScores
from streams.rules.profiles import decayed

Fact = float | int | str | bool | None

WINDOWS = (7, 30, 90)
ONE_DAY = timedelta(days=1)
MEASURES = ("views", "adds", "orders", "revenue")

# Days since the last order -> recency score; order count and lifetime revenue -> frequency and
# monetary scores. Fixed thresholds keep the score a pure function of one profile.
RECENCY_DAYS = ((7, 5), (30, 4), (90, 3), (180, 2))
FREQUENCY_ORDERS = ((10, 5), (5, 4), (3, 3), (2, 2))
MONETARY_REVENUE = ((1000.0, 5), (500.0, 4), (200.0, 3), (50.0, 2))

# Facts measured in days since a profile timestamp: name -> profile field.
DAYS_SINCE = {
    "days_since_last_seen": "last_seen",
    "days_since_first_seen": "first_seen",
    "days_since_last_visit": "last_visit_at",
    "days_since_last_login": "last_login_at",
    "days_since_last_order": "last_order_at",
    "days_since_last_email_open": "last_email_open_at",
    "days_since_last_email_click": "last_email_click_at",
    "days_since_negative_reply": "last_negative_reply_at",  # a property of the profile: unset when none
}


def days_between(earlier: datetime | None, later: datetime) -> float | None:
    """The days from `earlier` to `later`; None without `earlier`."""
    return None if earlier is None else round((later - earlier) / ONE_DAY, 6)


def window_sums(profile: Profile, now: datetime, days: int) -> dict[str, float]:
    """Sums of the day buckets within the last `days` days, today included."""
    today = now.date()
    # ISO dates order as strings do: the bucket keys are compared without parsing them.
    first_day, last_day = (today - timedelta(days=days - 1)).isoformat(), today.isoformat()
    totals = {"views": 0.0, "adds": 0.0, "orders": 0.0, "revenue": 0.0}
    for day, counts in profile.days.items():
        if first_day <= day <= last_day:
            totals["views"] += counts.views
            totals["adds"] += counts.adds
            totals["orders"] += counts.orders
            totals["revenue"] += counts.revenue
    return totals


def _score(value: float, thresholds: tuple[tuple[float, int], ...], higher_is_better: bool = True) -> int:
    for threshold, score in thresholds:
        if (value >= threshold) if higher_is_better else (value <= threshold):
            return score
    return 1


def rfm(profile: Profile, now: datetime) -> tuple[int, int, int]:
    """The person's recency, frequency and monetary scores as of `now`."""
    since_order = days_between(profile.last_order_at, now)
    recency = 1 if since_order is None else _score(since_order, RECENCY_DAYS, higher_is_better=False)
    return recency, _score(profile.order_count, FREQUENCY_ORDERS), _score(profile.revenue, MONETARY_REVENUE)


def lifecycle_stage(profile: Profile, now: datetime, config: ProfileConfig) -> str:
    """Where the person is in their lifecycle as of `now`: new, active, at_risk or churned."""
    if profile.last_seen is None or profile.first_seen is None:
        return "new"
    quiet_for = now - profile.last_seen
    if quiet_for >= config.lifecycle.churned_after:
        return "churned"
    if quiet_for >= config.lifecycle.at_risk_after:
        return "at_risk"
    if now - profile.first_seen < config.lifecycle.new_for:
        return "new"
    return "active"


class ProfileFacts:
    """The facts of one profile at one moment, each worked out only when read.

    Segments are re-checked after every event and their conditions usually name a handful of the thirty
    facts, so a check pays for those alone. A window's sums and the RFM scores are kept once worked out,
    as several facts share each of them.
    """

    __slots__ = ("_rfm", "_windows", "config", "now", "profile", "scores")

    def __init__(
        self, profile: Profile, now: datetime, config: ProfileConfig, scores: PersonScores | None = None
    ) -> None:
        self.profile = profile
        self.now = now
        self.config = config
        self.scores = scores
        self._windows: dict[int, dict[str, float]] = {}
        self._rfm: tuple[int, int, int] | None = None

    def get(self, name: str, /) -> Fact:
        compute = _FACTS.get(name)
        return None if compute is None else compute(self)  # like a dict of the facts would

    def as_dict(self) -> dict[str, Fact]:
        return {name: compute(self) for name, compute in _FACTS.items()}

    def window_sum(self, measure: str, window: int) -> float:
        sums = self._windows.get(window)
        if sums is None:
            sums = self._windows[window] = window_sums(self.profile, self.now, window)
        return round(sums[measure], 2)

    def rfm_scores(self) -> tuple[int, int, int]:
        if self._rfm is None:
            self._rfm = rfm(self.profile, self.now)
        return self._rfm

    def engagement(self) -> float:
        profile = self.profile
        return round(decayed(profile.engagement, profile.engagement_at, self.now, self.config.engagement_half_life), 4)


def _window_fact(measure: str, window: int) -> Callable[[ProfileFacts], Fact]:
    return lambda facts: facts.window_sum(measure, window)


def _days_since_fact(field: str) -> Callable[[ProfileFacts], Fact]:
    return lambda facts: days_between(getattr(facts.profile, field), facts.now)


def _score_fact(field: str) -> Callable[[ProfileFacts], Fact]:
    return lambda facts: None if facts.scores is None else getattr(facts.scores, field)


def _expected_next_order_days(facts: ProfileFacts) -> Fact:
    """Days until the order the models expect next; negative once it is overdue."""
    scores = facts.scores
    if scores is None or scores.expected_next_order_at is None:
        return None
    return round((scores.expected_next_order_at - facts.now) / ONE_DAY, 6)


def _scores_age_days(facts: ProfileFacts) -> Fact:
    return None if facts.scores is None else days_between(facts.scores.scored_at, facts.now)


def _last_reply_sentiment(profile: Profile) -> str | None:
    replies = profile.replies
    return None if isinstance(replies, msgspec.UnsetType) else replies.sentiment.value


def _rfm_score(facts: ProfileFacts) -> str:
    recency, frequency, monetary = facts.rfm_scores()
    return f"{recency}{frequency}{monetary}"


# Every fact: name -> how to work it out. This order is the order the profile view lists them in.
_FACTS: dict[str, Callable[[ProfileFacts], Fact]] = {
    "event_count": lambda facts: facts.profile.event_count,
    "order_count": lambda facts: facts.profile.order_count,
    "lifetime_revenue": lambda facts: facts.profile.revenue,
    "unopened_emails": lambda facts: facts.profile.unopened_emails,
    "identified": lambda facts: facts.profile.identified,
    "has_email": lambda facts: facts.profile.email is not None,
    "has_phone": lambda facts: facts.profile.phone is not None,
    "email_consent": lambda facts: facts.profile.consent.get("email"),
    "sms_consent": lambda facts: facts.profile.consent.get("sms"),
    "last_reply_sentiment": lambda facts: _last_reply_sentiment(facts.profile),
    "engagement": ProfileFacts.engagement,
    "lifecycle_stage": lambda facts: lifecycle_stage(facts.profile, facts.now, facts.config),
    **{f"{measure}_{window}d": _window_fact(measure, window) for window in WINDOWS for measure in MEASURES},
    **{fact: _days_since_fact(field) for fact, field in DAYS_SINCE.items()},
    "rfm_recency": lambda facts: facts.rfm_scores()[0],
    "rfm_frequency": lambda facts: facts.rfm_scores()[1],
    "rfm_monetary": lambda facts: facts.rfm_scores()[2],
    "rfm_score": _rfm_score,
    "churn_risk": _score_fact("churn_risk"),
    "predicted_clv": _score_fact("predicted_clv"),
    "purchase_propensity": _score_fact("purchase_propensity"),
    "expected_next_order_days": _expected_next_order_days,
    "scores_age_days": _scores_age_days,
}


def profile_facts(
    profile: Profile, now: datetime, config: ProfileConfig, scores: PersonScores | None = None
) -> dict[str, Fact]:
    """Every fact of `profile` (and the person's scores) at `now`."""
    return ProfileFacts(profile, now, config, scores).as_dict()
