"""The live profile of one person: the single view every rule, segment and dashboard reads.

Plain typed data (msgspec Structs), read and written by the one codec of schemas/encoding.py: the core
copies a profile on every event, and a Struct is built without a validation pass. What it holds comes from
validated events (schemas/events.py) and bounded rules (streams/rules/bounds.py).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

import msgspec

# Every moment inside nudgeflow is aware (UTC); a stored one without a zone is refused on reading.
Moment = Annotated[datetime, msgspec.Meta(tz=True)]


def described(text: str) -> msgspec.Meta:
    """A field's description for the profile's JSON Schema (schemas/jsonschema/profile.json)."""
    return msgspec.Meta(description=text)


class ConsentState(StrEnum):
    """A person's consent to a channel: opted in or opted out."""

    OPTED_IN = "opted_in"
    OPTED_OUT = "opted_out"


class ConsentSource(StrEnum):
    """How a consent change reached nudgeflow."""

    FORM = "form"  # a sign-up or preference form, sent through the tracking API
    API = "api"  # the tracking API without a more precise source
    IMPORT = "import"  # a bulk load of consents kept elsewhere
    SMS_KEYWORD = "sms_keyword"  # a reply such as STOP or START (Twilio's inbound webhook)
    WEBHOOK = "webhook"  # a provider's event (SendGrid's unsubscribe or spam report)
    UNSUBSCRIBE_LINK = "unsubscribe_link"  # the one-click link of a nudge (RFC 8058)
    CONFIRMATION_LINK = "confirmation_link"  # the signed link of a double opt-in's confirmation message


class ReplySentiment(StrEnum):
    """What an SMS reply says of the messages it answers (streams/collector/sentiment.py decides it)."""

    POSITIVE = "positive"
    NEUTRAL = "neutral"
    NEGATIVE = "negative"


class Replies(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """The person's SMS replies as the classifier read them: the latest one, and the latest negative one."""

    sentiment: ReplySentiment
    at: Moment
    negative_at: Moment | None = None


class DayCounts(msgspec.Struct, frozen=True, gc=False):
    """One day's activity; the rolling 7/30/90-day windows are sums over at most 90 of these."""

    views: int = 0
    adds: int = 0
    orders: int = 0
    revenue: float = 0.0


class SeenRange(msgspec.Struct, frozen=True, gc=False):
    """The first and last moment a person was seen on one channel."""

    first: Moment
    last: Moment


class Profile(msgspec.Struct, frozen=True, kw_only=True):
    """What is known of one person: identity, activity, orders, engagement, consent and traits."""

    person_id: str
    identified: Annotated[bool, described("seen with a userId, not only an anonymous id")] = False
    anonymous_ids: list[str] = msgspec.field(default_factory=list)
    first_seen: Moment | None = None
    last_seen: Moment | None = None
    channels: Annotated[dict[str, SeenRange], described("web, app, email, sms")] = msgspec.field(default_factory=dict)
    days: Annotated[dict[str, DayCounts], described("ISO date -> counts, last 90 days")] = msgspec.field(
        default_factory=dict
    )
    event_count: int = 0
    order_count: int = 0
    revenue: float = 0.0
    first_order_at: Moment | None = None
    last_order_at: Moment | None = None
    engagement: float = 0.0
    engagement_at: Moment | None = None
    unopened_emails: int = 0
    last_email_sent_at: Moment | None = None
    last_email_open_at: Moment | None = None
    last_email_click_at: Moment | None = None
    last_login_at: Moment | None = None
    last_visit_at: Moment | None = None
    email: str | None = None
    phone: str | None = None
    name: str | None = None
    birthday: Annotated[str | None, described("YYYY-MM-DD or --MM-DD")] = None
    timezone: str | None = None
    locale: str | None = None
    consent: Annotated[dict[str, ConsentState], described("channel -> consent")] = msgspec.field(default_factory=dict)
    traits: dict[str, Any] = msgspec.field(default_factory=dict)
    recently_viewed: Annotated[list[str], described("product ids, most recent first")] = msgspec.field(
        default_factory=list
    )
    # UNSET until the first classified SMS reply, so the field is left out of the stored state then: a profile
    # without one is stored exactly as before it existed (like PersonState.confirmations).
    replies: Annotated[Replies | msgspec.UnsetType, described("the last SMS reply's sentiment and time")] = (
        msgspec.UNSET
    )

    @property
    def last_negative_reply_at(self) -> datetime | None:
        """When the latest negative SMS reply came (the fact days_since_negative_reply counts from it)."""
        return None if isinstance(self.replies, msgspec.UnsetType) else self.replies.negative_at
