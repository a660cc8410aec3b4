"""Which consent changes an event made, as records with their source and evidence (schemas/consent.py)."""

from __future__ import annotations

from schemas.consent import ConsentChange
from schemas.events import Event
from schemas.profile import ConsentSource, Profile

CHANNELS = ("email", "sms")


def consent_changes(person_id: str, before: Profile, after: Profile, event: Event) -> list[ConsentChange]:
    """A record per channel whose consent the event changed; none when it stated what was already so."""
    changes = []
    for channel in CHANNELS:
        previous, state = before.consent.get(channel), after.consent.get(channel)
        if state is None or state == previous:
            continue
        trigger_id = event.properties.get("trigger_id")
        changes.append(
            ConsentChange(
                person_id=person_id,
                channel=channel,
                state=state,
                previous=previous,
                # A tracking-API call that does not say otherwise is the API's.
                source=event.context.consent_source or ConsentSource.API,
                at=event.timestamp,
                message_id=event.message_id,
                ip=event.context.ip,
                user_agent=event.context.user_agent,
                trigger_id=trigger_id if isinstance(trigger_id, str) else None,
            )
        )
    return changes
