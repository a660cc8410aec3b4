"""How one event changes a person's profile. Everything uses the event's own time, so a late event lands
in the right day bucket and never moves "last seen" backwards."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import msgspec
from msgspec.structs import replace

from schemas.consent import CONSENT_TRAITS, sms_keyword_consent
from schemas.events import ENGAGEMENT_HOUR_EVENTS, Event, EventName, OrderProperties, ProductProperties
from schemas.limits import DEFAULT_LIMITS, Limits
from schemas.profile import ConsentState, DayCounts, Profile, Replies, ReplySentiment, SeenRange
from schemas.rules import ProfileConfig
from streams.rules.bounds import bounded_traits

WINDOW_DAYS = 90

# How much each kind of activity says about interest; decays with the configured half-life.
ENGAGEMENT_WEIGHTS: dict[str, float] = {
    EventName.PRODUCT_VIEWED: 1.0,
    EventName.PRODUCT_ADDED: 3.0,
    EventName.CHECKOUT_STARTED: 5.0,
    EventName.ORDER_COMPLETED: 10.0,
    EventName.EMAIL_OPENED: 2.0,
    EventName.EMAIL_CLICKED: 3.0,
    EventName.SMS_CLICKED: 3.0,
    EventName.LOGGED_IN: 1.0,
    EventName.SIGNED_UP: 2.0,
}
PASSIVE_EVENTS = {EventName.EMAIL_DELIVERED, EventName.SMS_DELIVERED, EventName.EMAIL_BOUNCED}


def channel_of(event: Event) -> str:
    """Where the person was: email and SMS feedback by event name, else the tracker's channel."""
    name = event.event or ""
    if name.startswith("Email "):
        return "email"
    if name.startswith("SMS "):
        return "sms"
    if event.context.channel in ("web", "app", "email", "sms"):
        return event.context.channel
    return "app" if event.type == "screen" else "web"


def decayed(score: float, since: datetime | None, until: datetime, half_life: timedelta) -> float:
    """`score` measured at `since`, as it stands at `until` (works both ways for late events)."""
    if since is None:
        return score
    return float(score * 0.5 ** ((until - since) / half_life))


def _later(current: datetime | None, moment: datetime) -> datetime:
    return moment if current is None else max(current, moment)


def _earlier(current: datetime | None, moment: datetime) -> datetime:
    return moment if current is None else min(current, moment)


EMPTY_DAY = DayCounts()
DAYS_KEPT_BEFORE_LATEST = timedelta(days=WINDOW_DAYS - 1)


def _add_to_day(
    days: dict[str, DayCounts],
    moment: datetime,
    *,
    views: int = 0,
    adds: int = 0,
    orders: int = 0,
    revenue: float | None = None,
) -> dict[str, DayCounts]:
    day = moment.date()
    key = day.isoformat()
    current = days.get(key, EMPTY_DAY)
    updated = DayCounts(
        views=current.views + views,
        adds=current.adds + adds,
        orders=current.orders + orders,
        revenue=current.revenue if revenue is None else round(current.revenue + revenue, 2),
    )
    # ISO dates order as strings do: the keys are compared without parsing each of them.
    oldest_kept = (date.fromisoformat(max([key, *days])) - DAYS_KEPT_BEFORE_LATEST).isoformat()
    kept = {existing: counts for existing, counts in days.items() if existing >= oldest_kept}
    if key >= oldest_kept:
        kept[key] = updated
    return kept


def update_profile(profile: Profile, event: Event, config: ProfileConfig, limits: Limits = DEFAULT_LIMITS) -> Profile:
    """The profile after `event`."""
    moment = event.timestamp
    name = event.event or ""
    channel = channel_of(event)
    seen = profile.channels.get(channel)
    changes: dict[str, object] = {
        "event_count": profile.event_count + 1,
        "first_seen": _earlier(profile.first_seen, moment),
        "last_seen": _later(profile.last_seen, moment),
        "channels": {
            **profile.channels,
            channel: SeenRange(first=moment, last=moment)
            if seen is None
            else SeenRange(first=min(seen.first, moment), last=max(seen.last, moment)),
        },
    }
    if event.user_id and not profile.identified:
        changes["identified"] = True
    if event.user_id and event.anonymous_id and event.anonymous_id not in profile.anonymous_ids:
        changes["anonymous_ids"] = [*profile.anonymous_ids, event.anonymous_id][-limits.anonymous_ids :]
    if channel in ("web", "app"):
        changes["last_visit_at"] = _later(profile.last_visit_at, moment)

    weight = ENGAGEMENT_WEIGHTS.get(name, 0.0 if name in PASSIVE_EVENTS else 0.5)
    if weight:
        # Keep the score as of the latest event time; a late event adds its decayed weight.
        reference = _later(profile.engagement_at, moment)
        current = decayed(profile.engagement, profile.engagement_at, reference, config.engagement_half_life)
        changes["engagement"] = round(current + decayed(weight, moment, reference, config.engagement_half_life), 6)
        changes["engagement_at"] = reference

    if event.type == "identify" or event.traits:
        changes.update(_from_traits(profile, event, limits))
    if event.context.timezone and "timezone" not in changes and profile.timezone is None:
        changes["timezone"] = event.context.timezone
    if event.context.locale and profile.locale is None and "locale" not in changes:
        changes["locale"] = event.context.locale
    if event.type == "track":
        changes.update(_from_track(profile, event, name, moment, config))
    return replace(profile, **changes)


def _from_traits(profile: Profile, event: Event, limits: Limits) -> dict[str, object]:
    traits = event.traits
    changes: dict[str, object] = {"traits": bounded_traits(profile.traits, traits, limits)}
    for field in ("email", "phone", "name", "birthday", "timezone", "locale"):
        value = traits.get(field)
        if isinstance(value, str) and value:
            changes[field] = value
    consent = dict(profile.consent)
    for trait, channel in CONSENT_TRAITS.items():
        value = traits.get(trait)
        if value in (ConsentState.OPTED_IN, ConsentState.OPTED_OUT):
            consent[channel] = ConsentState(value)
    changes["consent"] = consent
    return changes


def _from_track(
    profile: Profile, event: Event, name: str, moment: datetime, config: ProfileConfig
) -> dict[str, object]:
    changes: dict[str, object] = {}
    if name == EventName.PRODUCT_VIEWED:
        product = event.typed_properties(ProductProperties)
        changes["days"] = _add_to_day(profile.days, moment, views=1)
        viewed = [product.product_id, *[pid for pid in profile.recently_viewed if pid != product.product_id]]
        changes["recently_viewed"] = viewed[: config.recently_viewed]
    elif name == EventName.PRODUCT_ADDED:
        changes["days"] = _add_to_day(profile.days, moment, adds=1)
    elif name == EventName.ORDER_COMPLETED:
        order = event.typed_properties(OrderProperties)
        amount = order.revenue if order.revenue is not None else (order.total or 0.0)
        changes["days"] = _add_to_day(profile.days, moment, orders=1, revenue=amount)
        changes["order_count"] = profile.order_count + 1
        changes["revenue"] = round(profile.revenue + amount, 2)
        changes["first_order_at"] = _earlier(profile.first_order_at, moment)
        changes["last_order_at"] = _later(profile.last_order_at, moment)
    elif name == EventName.LOGGED_IN:
        changes["last_login_at"] = _later(profile.last_login_at, moment)
    elif name == EventName.EMAIL_DELIVERED:
        changes["unopened_emails"] = profile.unopened_emails + 1
        changes["last_email_sent_at"] = _later(profile.last_email_sent_at, moment)
    elif name in (EventName.EMAIL_OPENED, EventName.EMAIL_CLICKED):
        changes["unopened_emails"] = 0
        field = "last_email_open_at" if name == EventName.EMAIL_OPENED else "last_email_click_at"
        changes[field] = _later(getattr(profile, field), moment)
        if name == EventName.EMAIL_CLICKED:
            changes["last_email_open_at"] = _later(profile.last_email_open_at, moment)
    elif name == EventName.EMAIL_UNSUBSCRIBED:
        changes["consent"] = {**profile.consent, "email": ConsentState.OPTED_OUT}
    elif name == EventName.SMS_REPLIED:
        stated = sms_keyword_consent(str(event.properties.get("body", "")))
        if stated is not None:
            changes["consent"] = {**profile.consent, "sms": stated}
        replies = replies_after(profile.replies, event.properties.get("sentiment"), moment)
        if replies is not profile.replies:
            changes["replies"] = replies
    return changes


HOURS_OF_DAY = 24
# A counter of `open_hours` never passes this: when one would, all are halved (rounding down) first. At a
# few opens a week that is over a year of a habit; halving keeps the shape and lets a changed habit take over
# within a few dozen opens, and it keeps the field small (24 numbers of at most 3 digits).
OPEN_HOURS_CAP = 100


def open_hours_after(
    hours: list[int] | msgspec.UnsetType, event: Event, zone: ZoneInfo
) -> list[int] | msgspec.UnsetType:
    """The person's email opens and clicks per hour of their local day (`zone`), after `event`; the same
    object when the event is neither. Bounded: 24 counters, none above OPEN_HOURS_CAP."""
    if event.type != "track" or event.event not in ENGAGEMENT_HOUR_EVENTS:
        return hours
    counts = [0] * HOURS_OF_DAY if isinstance(hours, msgspec.UnsetType) else list(hours)
    if len(counts) != HOURS_OF_DAY:  # not one we wrote: start again rather than guess
        counts = [0] * HOURS_OF_DAY
    hour = event.timestamp.astimezone(zone).hour
    if counts[hour] >= OPEN_HOURS_CAP:
        counts = [count // 2 for count in counts]
    counts[hour] += 1
    return counts


def merged_open_hours(
    first: list[int] | msgspec.UnsetType, second: list[int] | msgspec.UnsetType
) -> list[int] | msgspec.UnsetType:
    """Both histograms added (an anonymous visitor's into the person's), halved until within the cap."""
    if isinstance(second, msgspec.UnsetType) or len(second) != HOURS_OF_DAY:
        return first
    if isinstance(first, msgspec.UnsetType) or len(first) != HOURS_OF_DAY:
        return list(second)
    counts = [a + b for a, b in zip(first, second, strict=True)]
    while max(counts) > OPEN_HOURS_CAP:
        counts = [count // 2 for count in counts]
    return counts


_SENTIMENTS = frozenset(ReplySentiment)


def replies_after(
    replies: Replies | msgspec.UnsetType, sentiment: object, moment: datetime
) -> Replies | msgspec.UnsetType:
    """The replies record after a reply classified `sentiment` at `moment` (the event validated the label;
    a reply without one, from a producer that does not classify, tells nothing). By event time: a late reply
    is the last one only if it is the latest, and the latest negative one is kept either way."""
    if not isinstance(sentiment, str) or sentiment not in _SENTIMENTS:
        return replies
    label = ReplySentiment(sentiment)
    negative_at = moment if label is ReplySentiment.NEGATIVE else None
    if isinstance(replies, msgspec.UnsetType):
        return Replies(sentiment=label, at=moment, negative_at=negative_at)
    if negative_at is not None and replies.negative_at is not None:
        negative_at = max(negative_at, replies.negative_at)
    elif negative_at is None:
        negative_at = replies.negative_at
    if moment >= replies.at:
        return Replies(sentiment=label, at=moment, negative_at=negative_at)
    return replace(replies, negative_at=negative_at)
