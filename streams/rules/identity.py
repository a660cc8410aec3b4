"""Identity: anonymous visitors become known people, and their history comes with them.

An event that carries both a userId and an anonymousId (or an alias call) links the anonymous id to the
person. The worker then moves the anonymous state into the person's (`merge_states`, deterministic), and
later events that still carry only the anonymous id are re-keyed to the person.
"""

from __future__ import annotations

from datetime import datetime

from msgspec.structs import replace

from schemas.events import Event
from schemas.limits import DEFAULT_LIMITS, Limits
from schemas.profile import ConsentState, DayCounts, Profile, SeenRange
from schemas.rules import RulesConfig
from streams.rules.bounds import bounded_history, bounded_traits
from streams.rules.person import PersonState
from streams.rules.profiles import decayed, merged_open_hours
from streams.rules.recommendations import latest_first


def anonymous_ids_to_link(state: PersonState, event: Event) -> list[str]:
    """Anonymous ids this event ties to the person that the person has not absorbed yet."""
    candidates = []
    if event.user_id and event.anonymous_id:
        candidates.append(event.anonymous_id)
    if event.type == "alias" and event.previous_id and event.user_id:
        candidates.append(event.previous_id)
    if not candidates:
        return []  # most events: nothing to link
    known = set(state.profile.anonymous_ids)
    return [
        anonymous for anonymous in dict.fromkeys(candidates) if anonymous != state.person_id and anonymous not in known
    ]


def _min(first: datetime | None, second: datetime | None) -> datetime | None:
    return min((moment for moment in (first, second) if moment is not None), default=None)


def _max(first: datetime | None, second: datetime | None) -> datetime | None:
    return max((moment for moment in (first, second) if moment is not None), default=None)


def merge_profiles(person: Profile, anonymous: Profile, rules: RulesConfig, limits: Limits = DEFAULT_LIMITS) -> Profile:
    """The person's profile with an anonymous visitor's history added; the person's own facts win,
    except that an opt-out from either side is kept."""
    channels = dict(anonymous.channels)
    for channel, seen in person.channels.items():
        other = channels.get(channel)
        channels[channel] = (
            seen if other is None else SeenRange(first=min(seen.first, other.first), last=max(seen.last, other.last))
        )
    days = dict(anonymous.days)
    for day, counts in person.days.items():
        earlier = days.get(day)
        days[day] = (
            counts
            if earlier is None
            else DayCounts(
                views=counts.views + earlier.views,
                adds=counts.adds + earlier.adds,
                orders=counts.orders + earlier.orders,
                revenue=round(counts.revenue + earlier.revenue, 2),
            )
        )
    engagement_at = _max(person.engagement_at, anonymous.engagement_at)
    engagement = 0.0
    if engagement_at is not None:
        half_life = rules.profile.engagement_half_life
        engagement = round(
            decayed(person.engagement, person.engagement_at, engagement_at, half_life)
            + decayed(anonymous.engagement, anonymous.engagement_at, engagement_at, half_life),
            6,
        )
    consent = {**anonymous.consent, **person.consent}
    for channel, state in anonymous.consent.items():
        if state is ConsentState.OPTED_OUT:
            consent[channel] = ConsentState.OPTED_OUT
    viewed = list(dict.fromkeys([*person.recently_viewed, *anonymous.recently_viewed]))[: rules.profile.recently_viewed]
    absorbed = [*person.anonymous_ids, anonymous.person_id, *anonymous.anonymous_ids]
    return replace(
        person,
        **{
            "anonymous_ids": list(dict.fromkeys(absorbed))[-limits.anonymous_ids :],
            "first_seen": _min(person.first_seen, anonymous.first_seen),
            "last_seen": _max(person.last_seen, anonymous.last_seen),
            "channels": channels,
            "days": days,
            "event_count": person.event_count + anonymous.event_count,
            "order_count": person.order_count + anonymous.order_count,
            "revenue": round(person.revenue + anonymous.revenue, 2),
            "first_order_at": _min(person.first_order_at, anonymous.first_order_at),
            "last_order_at": _max(person.last_order_at, anonymous.last_order_at),
            "engagement": engagement,
            "engagement_at": engagement_at,
            "unopened_emails": max(person.unopened_emails, anonymous.unopened_emails),
            "last_email_sent_at": _max(person.last_email_sent_at, anonymous.last_email_sent_at),
            "last_email_open_at": _max(person.last_email_open_at, anonymous.last_email_open_at),
            "last_email_click_at": _max(person.last_email_click_at, anonymous.last_email_click_at),
            "last_login_at": _max(person.last_login_at, anonymous.last_login_at),
            "last_visit_at": _max(person.last_visit_at, anonymous.last_visit_at),
            "email": person.email or anonymous.email,
            "phone": person.phone or anonymous.phone,
            "name": person.name or anonymous.name,
            "birthday": person.birthday or anonymous.birthday,
            "timezone": person.timezone or anonymous.timezone,
            "locale": person.locale or anonymous.locale,
            "consent": consent,
            "traits": bounded_traits(anonymous.traits, person.traits, limits),
            "recently_viewed": viewed,
        },
    )


def merge_states(
    person: PersonState, anonymous: PersonState, rules: RulesConfig, limits: Limits = DEFAULT_LIMITS
) -> PersonState:
    """Absorb an anonymous visitor's state: profile, carts, pending nudges, sends and rule history, each
    within its limit (the person's own entries are the most recent and kept first)."""
    carts = {**anonymous.carts}
    for cart_id, items in person.carts.items():
        merged_items = {**carts.pop(cart_id, {}), **items}
        carts[cart_id] = dict(list(merged_items.items())[-limits.cart_items :])
    carts = dict(list(carts.items())[-limits.carts :])
    pending = {**anonymous.pending, **person.pending}
    pending = dict(list(pending.items())[-limits.pending :])
    fired = dict(anonymous.fired)
    for slot, moment in person.fired.items():
        fired[slot] = max(moment, fired.get(slot, moment))
    fired = bounded_history(fired, limits)
    sent_ids = {record.trigger_id for record in person.sent}
    sent = sorted([*person.sent, *(r for r in anonymous.sent if r.trigger_id not in sent_ids)], key=lambda r: r.at)
    sent = sent[-limits.sent_records :]
    return replace(
        person,
        **{
            "profile": merge_profiles(person.profile, anonymous.profile, rules, limits),
            "carts": carts,
            "pending": pending,
            "fired": fired,
            "sent": sent,
            "open_hours": merged_open_hours(person.open_hours, anonymous.open_hours),
            # What the visitor bought before logging in is the person's too: kept out of their recommendations.
            "bought": latest_first(person.bought_products, anonymous.bought_products, limits) or person.bought,
            # Membership is re-evaluated on the merged profile at the next event or check.
            "segment_check_at": _min(person.segment_check_at, anonymous.profile.last_seen or person.segment_check_at),
        },
    )
