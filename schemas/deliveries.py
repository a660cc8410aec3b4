"""The sender's delivery ledger: what became of each nudge, on the compacted `deliveries` topic.

One record per state a nudge passes through, keyed by its trigger_id, so compaction keeps the last one.
The records name no person and no address (the trigger id leads to them in the triggers table), so the
ledger can be kept longer than the personal-data topics. What each state means for a restart is in
`sinks/sender/ledger.py`.
"""

from __future__ import annotations

from enum import StrEnum

from schemas.events import UtcDatetime, WireModel
from schemas.triggers import Channel


class DeliveryState(StrEnum):
    """Where one delivery of a nudge stands, from the first attempt to a final state."""

    SENDING = "sending"  # an attempt began; the provider holds at most an incomplete request
    COMMITTED = "committed"  # recorded just before the final byte of the request: never sent again
    SENT = "sent"  # the provider accepted it
    RETRYING = "retrying"  # the provider refused this attempt with an error worth another one
    UNCONFIRMED = "unconfirmed"  # committed, but the provider's answer never came: not sent again
    FAILED = "failed"  # given up (permanent error, attempts used up, nothing to send with): dead-lettered
    EXPIRED = "expired"  # past its expires_at, or stale, before it could go: dropped


# States after which the nudge is never sent again, by any sender.
FINAL_STATES = frozenset(
    {
        DeliveryState.COMMITTED,
        DeliveryState.SENT,
        DeliveryState.UNCONFIRMED,
        DeliveryState.FAILED,
        DeliveryState.EXPIRED,
    }
)


class DeliveryRecord(WireModel):
    """One step of a nudge's delivery, as the sender records it on the deliveries topic; `final` says it is done."""

    trigger_id: str
    state: DeliveryState
    rule: str
    channel: Channel
    provider: str = ""
    attempt: int = 0
    at: UtcDatetime
    reason: str = ""
    provider_message_id: str | None = None

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES
