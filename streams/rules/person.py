"""Everything nudgeflow keeps per person: the profile, what the rules are waiting for, what was sent,
segment membership, and the last message applied from each partition (exactly-once effects).

Plain typed data (msgspec Structs): the core builds and copies these on every event, and a stored state is
read back by the one codec (schemas/encoding.py) without a validation pass. A stored state from an earlier
release decodes as long as the fields it has keep their meaning; fields it lacks take their defaults.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from schemas.encoding import Decoder, encode
from schemas.profile import Moment, Profile
from schemas.triggers import CartItem, Channel


class SourcePosition(msgspec.Struct, frozen=True, gc=False):
    """Where a message came from; the state remembers the last one applied per topic partition."""

    topic: str
    partition: int
    offset: int

    @property
    def stream(self) -> str:
        return f"{self.topic}/{self.partition}"


def slot_key(rule: str, key: str) -> str:
    """The one name of a rule's slot for a key (`cart_abandoned|c1`): pending entries and the fired history
    are keyed by it, and a bare rule name (no "|") records the rule's last firing."""
    return f"{rule}|{key}"


class PendingTrigger(msgspec.Struct, frozen=True, kw_only=True):
    """A nudge waiting for its moment: one step of one rule for one key (cart, product, order...)."""

    rule: str
    key: str
    step: int = 0
    entered_at: Moment
    due_at: Moment
    fire_at: Moment  # due_at plus the grace for late events, or a deferral
    cause_event_id: str | None = None
    context: dict[str, Any] = msgspec.field(default_factory=dict)
    deferred: bool = False

    @property
    def slot(self) -> str:
        return slot_key(self.rule, self.key)


class SentRecord(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One nudge sent to a person, for caps and dedupe."""

    trigger_id: str
    channel: Channel
    at: Moment


class PendingConfirmation(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """An opt-in waiting for the person's click on the confirmation link (double opt-in)."""

    confirmation_id: str  # the trigger id of the confirmation message, signed into its link
    address: str  # where the link went: a click confirms this address only
    requested_at: Moment
    expires_at: Moment


class PersonScores(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """The person's latest predicted scores, joined from the scores topic (schemas.scores.Score, which
    validated them; streams/rules/scores.py decides which record is the latest)."""

    model_version: str
    scored_at: Moment
    horizon_days: int
    churn_risk: float
    predicted_clv: float
    purchase_propensity: float
    expected_orders: float
    expected_next_order_at: Moment | None = None


class PersonState(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the worker keeps for one person: profile, carts, pending triggers, sends and segments."""

    profile: Profile
    carts: dict[str, dict[str, CartItem]] = msgspec.field(default_factory=dict)
    pending: dict[str, PendingTrigger] = msgspec.field(default_factory=dict)  # slot -> pending trigger
    fired: dict[str, Moment] = msgspec.field(default_factory=dict)  # rule and rule|key -> last fired
    sent: list[SentRecord] = msgspec.field(default_factory=list)  # recent sends, for caps and dedupe
    segments: dict[str, Moment] = msgspec.field(default_factory=dict)  # segment -> entered at
    segment_check_at: Moment | None = None
    merged_into: str | None = None  # set on an anonymous id absorbed by a person
    # On a contact id (schemas.privacy.CONTACT_PREFIX): the people who have it.
    contact_of: list[str] = msgspec.field(default_factory=list)
    # Digests of the latest messageIds applied: a repeat changes nothing.
    recent_messages: list[str] = msgspec.field(default_factory=list)
    applied_offsets: dict[str, int] = msgspec.field(default_factory=dict)
    # Channel -> the opt-in waiting for its confirmation (streams/rules/consent.py). UNSET when none, so the
    # field is left out of the stored state then: a state without one is stored exactly as before it existed.
    confirmations: dict[str, PendingConfirmation] | msgspec.UnsetType = msgspec.UNSET
    # Email opens and clicks per hour of the person's local day, 0-23 (streams/rules/profiles.py,
    # `open_hours_after`), for `send_time: best`. UNSET until the first one, like `confirmations`.
    open_hours: list[int] | msgspec.UnsetType = msgspec.UNSET
    # The predicted scores (the scores topic); UNSET when none, stored exactly as before likewise.
    scores: PersonScores | msgspec.UnsetType = msgspec.UNSET
    # The products of the person's latest orders, most recent first, at most limits.bought_products
    # (streams/rules/recommendations.py, `bought_after`): left out of what their nudges recommend. UNSET until
    # the first order, so a state without one is stored exactly as before the field existed.
    bought: list[str] | msgspec.UnsetType = msgspec.UNSET

    @classmethod
    def new(cls, person_id: str) -> PersonState:
        return cls(profile=Profile(person_id=person_id))

    def to_json(self) -> bytes:
        """The stored form (the persons table and its changelog), read back by `from_json`."""
        return encode(self)

    @classmethod
    def from_json(cls, stored: bytes | str) -> PersonState:
        """A stored state; NotDecodable (a ValueError) when it is not one."""
        return _DECODER.decode(stored)

    @property
    def waiting_confirmations(self) -> dict[str, PendingConfirmation]:
        return {} if isinstance(self.confirmations, msgspec.UnsetType) else self.confirmations

    @property
    def engagement_hours(self) -> list[int]:
        """Opens and clicks per local hour; empty when none were seen."""
        return [] if isinstance(self.open_hours, msgspec.UnsetType) else self.open_hours

    @property
    def current_scores(self) -> PersonScores | None:
        return None if isinstance(self.scores, msgspec.UnsetType) else self.scores

    @property
    def bought_products(self) -> list[str]:
        """The products of the latest orders, most recent first; empty before the first order."""
        return [] if isinstance(self.bought, msgspec.UnsetType) else self.bought

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


_DECODER = Decoder(PersonState)
