"""How one event changes a person's profile."""

from __future__ import annotations

from schemas.events import Event, EventName, OrderProperties
from schemas.profile import Profile


def update_profile(profile: Profile, event: Event) -> Profile:
    """The profile after `event`, by the event's own time: a late event never moves last_seen backwards."""
    moment = event.timestamp
    changes: dict[str, object] = {
        "event_count": profile.event_count + 1,
        "first_seen": moment if profile.first_seen is None else min(profile.first_seen, moment),
        "last_seen": moment if profile.last_seen is None else max(profile.last_seen, moment),
    }
    if event.traits:
        changes["traits"] = {**profile.traits, **event.traits}
    if event.context.timezone:
        changes["timezone"] = event.context.timezone
    if event.context.locale:
        changes["locale"] = event.context.locale
    if event.type == "track" and event.event == EventName.ORDER_COMPLETED:
        order = event.typed_properties(OrderProperties)
        changes["order_count"] = profile.order_count + 1
        changes["revenue"] = round(profile.revenue + (order.revenue or order.total or 0.0), 2)
    return profile.model_copy(update=changes)
