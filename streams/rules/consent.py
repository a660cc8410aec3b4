"""Which consent changes an event made, as records with their source and evidence (schemas/consent.py), and
the double opt-in's decision: an email opt-in waits for the click on a confirmation link. Pure: the clock and
the policy are given."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from msgspec.structs import replace

from schemas.consent import CONFIRMATION_TEMPLATE, ConsentChange
from schemas.events import Event
from schemas.profile import ConsentSource, ConsentState, Profile
from schemas.triggers import Channel, Trigger, make_trigger_id
from streams.rules.person import PendingConfirmation

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


# --- double opt-in ---------------------------------------------------------------------------------------

# A new request for the same opt-in sends a fresh link at most this often: a lost email can be asked for again,
# and nobody can flood an address with confirmation messages.
RESEND_AFTER = timedelta(minutes=10)


@dataclass(frozen=True)
class DoubleOptIn:
    """The consent policy's double opt-in: off, or how long a confirmation link works."""

    email: bool = False
    link_valid_for: timedelta = timedelta(hours=48)


NO_DOUBLE_OPT_IN = DoubleOptIn()


@dataclass(frozen=True)
class OptInDecision:
    """The profile and the waiting confirmations after an event, and the confirmation message to send, if any."""

    profile: Profile
    confirmations: dict[str, PendingConfirmation]
    confirmation: Trigger | None = None


def decide_opt_in(
    before: Profile,
    after: Profile,
    confirmations: dict[str, PendingConfirmation],
    event: Event,
    now: datetime,
    policy: DoubleOptIn,
) -> OptInDecision:
    """Under double opt-in, an email opt-in the event states does not opt in: the consent stays as it was and
    a confirmation message goes out, with a link valid for `policy.link_valid_for`. Only the collector's
    confirmation endpoint (source `confirmation_link`), naming the waiting confirmation, before it expired, for
    the address the link went to, opts the person in. A withdrawal drops the waiting confirmation."""
    unchanged = OptInDecision(after, confirmations)
    if not policy.email:
        return unchanged
    previous, stated = before.consent.get("email"), after.consent.get("email")
    if stated == ConsentState.OPTED_OUT and "email" in confirmations:
        return OptInDecision(after, _without_email(confirmations))  # the latest statement wins
    if stated != ConsentState.OPTED_IN or previous == ConsentState.OPTED_IN:
        return unchanged
    waiting = confirmations.get("email")
    if event.context.consent_source is ConsentSource.CONFIRMATION_LINK:
        confirmed = (
            waiting is not None
            and event.properties.get("trigger_id") == waiting.confirmation_id
            and now <= waiting.expires_at
            and after.email == waiting.address  # the click proved this address, not one set since
        )
        if confirmed:
            return OptInDecision(after, _without_email(confirmations))
        return OptInDecision(_consent_as_before(before, after), confirmations)
    held = _consent_as_before(before, after)
    if not after.email:
        return OptInDecision(held, confirmations)  # nowhere to send a link: nothing to confirm
    if waiting is not None and now < waiting.expires_at and now - waiting.requested_at < RESEND_AFTER:
        return OptInDecision(held, confirmations)  # a link just went out
    trigger = _confirmation_message(after, event, now, policy)
    pending = PendingConfirmation(
        confirmation_id=trigger.trigger_id,
        address=after.email,
        requested_at=now,
        expires_at=now + policy.link_valid_for,
    )
    return OptInDecision(held, {**confirmations, "email": pending}, trigger)


def _without_email(confirmations: dict[str, PendingConfirmation]) -> dict[str, PendingConfirmation]:
    return {channel: waiting for channel, waiting in confirmations.items() if channel != "email"}


def _consent_as_before(before: Profile, after: Profile) -> Profile:
    """`after` with the email consent (and the trait that stated it) as they were before the event."""
    consent = dict(after.consent)
    traits = dict(after.traits)
    previous = before.consent.get("email")
    if previous is None:
        consent.pop("email", None)
    else:
        consent["email"] = previous
    if "email_consent" in before.traits:
        traits["email_consent"] = before.traits["email_consent"]
    else:
        traits.pop("email_consent", None)
    return replace(after, consent=consent, traits=traits)


def _confirmation_message(profile: Profile, event: Event, now: datetime, policy: DoubleOptIn) -> Trigger:
    # One id per request (the event's messageId): a replay of the request publishes the same message.
    key = event.message_id or profile.email or ""
    expires = now + policy.link_valid_for
    context: dict[str, Any] = {"confirm_by": expires.isoformat()}
    if profile.name:
        context["name"] = profile.name
    return Trigger(
        trigger_id=make_trigger_id(CONFIRMATION_TEMPLATE, profile.person_id, key, now),
        rule=CONFIRMATION_TEMPLATE,
        person_id=profile.person_id,
        channel=Channel.EMAIL,
        template_id=CONFIRMATION_TEMPLATE,
        due_at=now,
        fired_at=now,
        cause_event_id=event.message_id,
        address=profile.email,
        locale=profile.locale,
        expires_at=expires,
        context=context,
    )
