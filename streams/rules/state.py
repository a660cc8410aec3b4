"""Everything nudgeflow keeps per person: the profile, what the rules are waiting for, what was sent,
segment membership, and the last message applied from each partition (exactly-once effects)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from schemas.encoding import model_json
from schemas.events import UtcDatetime
from schemas.profile import Profile
from schemas.triggers import CartItem, Channel


class SourcePosition(BaseModel):
    """Where a message came from; the state remembers the last one applied per topic partition."""

    model_config = ConfigDict(frozen=True)

    topic: str
    partition: int
    offset: int

    @property
    def stream(self) -> str:
        return f"{self.topic}/{self.partition}"


class PendingTrigger(BaseModel):
    """A nudge waiting for its moment: one step of one rule for one key (cart, product, order...)."""

    model_config = ConfigDict(frozen=True)

    rule: str
    key: str
    step: int = 0
    entered_at: UtcDatetime
    due_at: UtcDatetime
    fire_at: UtcDatetime = Field(description="due_at plus the grace for late events, or a deferral")
    cause_event_id: str | None = None
    context: dict[str, Any] = Field(default_factory=dict)
    deferred: bool = False

    @property
    def slot(self) -> str:
        return f"{self.rule}|{self.key}"


class SentRecord(BaseModel):
    model_config = ConfigDict(frozen=True)

    trigger_id: str
    channel: Channel
    at: UtcDatetime


class PersonState(BaseModel):
    model_config = ConfigDict(frozen=True)

    profile: Profile
    carts: dict[str, dict[str, CartItem]] = Field(default_factory=dict)
    pending: dict[str, PendingTrigger] = Field(default_factory=dict, description="slot -> pending trigger")
    fired: dict[str, UtcDatetime] = Field(default_factory=dict, description="rule and rule|key -> last fired")
    sent: list[SentRecord] = Field(default_factory=list, description="recent sends, for caps and dedupe")
    segments: dict[str, UtcDatetime] = Field(default_factory=dict, description="segment -> entered at")
    segment_check_at: UtcDatetime | None = None
    merged_into: str | None = Field(default=None, description="set on an anonymous id absorbed by a person")
    contact_of: list[str] = Field(
        default_factory=list, description="on a contact id (schemas.privacy.CONTACT_PREFIX): the people who have it"
    )
    recent_messages: list[str] = Field(
        default_factory=list, description="digests of the latest messageIds applied: a repeat changes nothing"
    )
    applied_offsets: dict[str, int] = Field(default_factory=dict)

    @classmethod
    def new(cls, person_id: str) -> PersonState:
        return cls(profile=Profile(person_id=person_id))

    def to_json(self) -> bytes:
        """The stored form (the persons table and its changelog), read back by `from_json`.

        The worker encodes a changed state every time it stores, so this is on the hot path."""
        return model_json(self)

    @classmethod
    def from_json(cls, stored: bytes | str) -> PersonState:
        return cls.model_validate_json(stored)

    @property
    def person_id(self) -> str:
        return self.profile.person_id

    def already_applied(self, position: SourcePosition) -> bool:
        """True for a message at or below the last applied offset of its partition: a redelivery."""
        return position.offset <= self.applied_offsets.get(position.stream, -1)

    def record(self, position: SourcePosition) -> dict[str, int]:
        return {**self.applied_offsets, position.stream: position.offset}

    def next_deadline(self) -> datetime | None:
        """When this person next needs the clock: the earliest pending trigger or segment check."""
        moments = [pending.fire_at for pending in self.pending.values()]
        if self.segment_check_at is not None:
            moments.append(self.segment_check_at)
        return min(moments, default=None)
