"""Proof of consent: each change of a person's email or SMS consent, with where it came from and the evidence
(GDPR Art. 7(1): the sender must be able to show that the person consented), published on the `consents`
topic by the worker and kept in ClickHouse (`consent_changes`) and in the person's export.

The SMS keywords live here, once: the collector reads them to answer a reply, the core to change consent.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from schemas.events import UtcDatetime, WireModel
from schemas.profile import ConsentSource, ConsentState
from schemas.signed_links import sign, verify

# The identify traits that set a channel's consent.
CONSENT_TRAITS = {"email_consent": "email", "sms_consent": "sms"}

# What a caller of the tracking API may say of itself; the other sources are set by the collector's own
# endpoints, so a client cannot pass off its call as a person's SMS reply or click.
CLIENT_SOURCES = frozenset({ConsentSource.FORM, ConsentSource.API, ConsentSource.IMPORT})

# Carrier-level keywords (Twilio's own list), matched on the whole trimmed reply, and their Chinese forms
# (退订 "unsubscribe", 订阅 "subscribe"; TD is the short form Chinese carriers ask for).
SMS_OPT_OUT_WORDS = frozenset({"stop", "stopall", "unsubscribe", "cancel", "end", "quit", "td", "退订"})
SMS_OPT_IN_WORDS = frozenset({"start", "unstop", "yes", "订阅"})


def states_consent(document: dict[str, Any]) -> bool:
    """Whether a call (as sent, before validation) sets a consent trait."""
    traits = document.get("traits")
    return document.get("type") == "identify" and isinstance(traits, dict) and any(t in traits for t in CONSENT_TRAITS)


def sms_keyword_consent(body: str) -> ConsentState | None:
    """The consent an SMS reply states, or None when it is not one of the keywords."""
    word = body.strip().lower()
    if word in SMS_OPT_OUT_WORDS:
        return ConsentState.OPTED_OUT
    if word in SMS_OPT_IN_WORDS:
        return ConsentState.OPTED_IN
    return None


class ConsentChange(WireModel):
    """One change of one channel's consent, at the event's time, with its evidence."""

    person_id: str
    channel: Literal["email", "sms"]
    state: ConsentState
    previous: ConsentState | None = None
    source: ConsentSource
    at: UtcDatetime
    message_id: str | None = None  # the event that carried it: the provider's id for a webhook or a reply
    ip: str | None = None
    user_agent: str | None = None
    trigger_id: str | None = None  # the nudge whose link or reply it was


# --- double opt-in ---------------------------------------------------------------------------------------

# The rule name and template of the message asking a person to confirm an email opt-in (double opt-in).
CONFIRMATION_TEMPLATE = "consent_confirmation"
CONFIRMATION_PURPOSE = "confirm"


@dataclass(frozen=True)
class Confirmation:
    """What a confirmation link stands for: this person confirms this channel's opt-in they were asked about
    (`confirmation_id`, the trigger id of the confirmation message), until `expires` (Unix seconds)."""

    person_id: str
    channel: str
    expires: int
    confirmation_id: str


def make_confirmation_token(confirmation: Confirmation, hash_key: bytes) -> str:
    """The signed token of the link that confirms an opt-in."""
    return sign(
        CONFIRMATION_PURPOSE,
        confirmation.person_id,
        confirmation.channel,
        confirmation.expires,
        [confirmation.confirmation_id],
        hash_key,
    )


def read_confirmation_token(token: str, hash_key: bytes, now: datetime) -> Confirmation:
    """The confirmation a token carries, or `schemas.signed_links.InvalidToken` (ForgedToken, ExpiredToken)."""
    person_id, channel, expires, (confirmation_id,) = verify(CONFIRMATION_PURPOSE, token, hash_key, now, extra=1)
    return Confirmation(person_id, channel, expires, confirmation_id)
