"""Facts derived from a profile at a moment: rolling windows, recency, RFM, lifecycle, engagement.

Segments are conditions on these facts; the HTTP profile view shows them. Every fact is a function of
(profile, now), so the same profile read at the same time always gives the same answer.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

from schemas.profile import Profile
from schemas.rules import ProfileConfig
from streams.rules.profiles import decayed

Fact = float | int | str | bool | None

WINDOWS = (7, 30, 90)

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
}


def days_between(earlier: datetime | None, later: datetime) -> float | None:
    return None if earlier is None else round((later - earlier) / timedelta(days=1), 6)


def window_sums(profile: Profile, now: datetime, days: int) -> dict[str, float]:
    """Sums of the day buckets within the last `days` days, today included."""
    first_day = now.date() - timedelta(days=days - 1)
    totals = {"views": 0.0, "adds": 0.0, "orders": 0.0, "revenue": 0.0}
    for day, counts in profile.days.items():
        if first_day <= date.fromisoformat(day) <= now.date():
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
    since_order = days_between(profile.last_order_at, now)
    recency = 1 if since_order is None else _score(since_order, RECENCY_DAYS, higher_is_better=False)
    return recency, _score(profile.order_count, FREQUENCY_ORDERS), _score(profile.revenue, MONETARY_REVENUE)


def lifecycle_stage(profile: Profile, now: datetime, config: ProfileConfig) -> str:
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


def profile_facts(profile: Profile, now: datetime, config: ProfileConfig) -> dict[str, Fact]:
    facts: dict[str, Fact] = {
        "event_count": profile.event_count,
        "order_count": profile.order_count,
        "lifetime_revenue": profile.revenue,
        "unopened_emails": profile.unopened_emails,
        "identified": profile.identified,
        "has_email": profile.email is not None,
        "has_phone": profile.phone is not None,
        "email_consent": profile.consent.get("email"),
        "sms_consent": profile.consent.get("sms"),
        "engagement": round(decayed(profile.engagement, profile.engagement_at, now, config.engagement_half_life), 4),
        "lifecycle_stage": lifecycle_stage(profile, now, config),
    }
    for window in WINDOWS:
        for measure, total in window_sums(profile, now, window).items():
            facts[f"{measure}_{window}d"] = round(total, 2)
    for fact, field in DAYS_SINCE.items():
        facts[fact] = days_between(getattr(profile, field), now)
    recency, frequency, monetary = rfm(profile, now)
    facts.update(rfm_recency=recency, rfm_frequency=frequency, rfm_monetary=monetary)
    facts["rfm_score"] = f"{recency}{frequency}{monetary}"
    return facts
