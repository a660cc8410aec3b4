"""What nudgeflow publishes for the email and SMS senders, and the dead letters it sets aside."""

from __future__ import annotations

import hashlib
from datetime import datetime
from enum import StrEnum
from typing import Any

import msgspec
from pydantic import BaseModel, Field

from schemas.events import UtcDatetime, WireModel

# The arm of an A/B split that gets no message: those people are what the nudge's lift is measured against.
HOLDOUT_VARIANT = "holdout"


class Channel(StrEnum):
    """The channel a nudge goes out on."""

    EMAIL = "email"
    SMS = "sms"


class CartItem(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One product in a person's cart, as their state keeps it (plain data, schemas/encoding.py)."""

    product_id: str
    name: str | None = None
    price: float | None = None
    quantity: int = 1
    url: str | None = None
    image_url: str | None = None


def make_trigger_id(rule: str, person_id: str, key: str, occurrence: datetime) -> str:
    """Deterministic id of one nudge: the same rule, person, key and occurrence always give the same id,
    so a replay or a retried send can be recognised downstream."""
    material = f"{rule}\x1f{person_id}\x1f{key}\x1f{occurrence.isoformat()}"
    return hashlib.sha256(material.encode()).hexdigest()[:32]


class Trigger(WireModel):
    """A nudge that passed every check and is due to go out; senders use trigger_id as idempotency key."""

    trigger_id: str
    rule: str
    person_id: str
    channel: Channel
    template_id: str
    due_at: UtcDatetime
    fired_at: UtcDatetime
    cause_event_id: str | None = None
    variant: str | None = None
    address: str | None = None
    locale: str | None = None
    expires_at: UtcDatetime | None = None
    context: dict[str, Any] = Field(default_factory=dict)


class DeadLetter(BaseModel):
    """A message that could not be processed, kept with the reason so nothing is silently lost."""

    reason: str
    topic: str
    partition: int
    offset: int
    key: str | None = None
    value: str
    received_at: UtcDatetime


class QuarantinedState(BaseModel):
    """A person's state the worker could not fire, store, read or publish, set aside with the reason on
    the quarantine topic; only that person is held back, and offsets move on once this is acknowledged."""

    person_id: str
    stage: str = Field(description="what failed: timer, store, read or snapshot")
    reason: str
    value: str = Field(description="the state as far as it could be written, bounded")
    at: UtcDatetime


class SuppressionReason(StrEnum):
    """Why the policy gate held a nudge back, in the order the gate checks."""

    ERASED = "erased"
    UNKNOWN_PERSON = "unknown_person"
    NO_ADDRESS = "no_address"
    OPTED_OUT = "opted_out"
    NO_OPT_IN = "no_opt_in"
    PAUSED = "paused"
    FREQUENCY_CAP = "frequency_cap"
    QUIET_HOURS = "quiet_hours"
    DUPLICATE = "duplicate"
    EXPIRED = "expired"
    HOLDOUT = "holdout"
    REENTRY = "reentry"
    NOT_IN_AUDIENCE = "not_in_audience"  # a campaign's recipient who left its segments before their moment
    CANCELLED = "cancelled"  # a campaign cancelled before this recipient's moment


class Suppression(WireModel):
    """A nudge that was due but did not go out, on `triggers.suppressed`, with the reason."""

    trigger: Trigger
    reason: SuppressionReason
    detail: str = ""
    decided_at: UtcDatetime
