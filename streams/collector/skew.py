"""Device clock skew removed from client timestamps, as Snowplow's derived timestamp does."""

from __future__ import annotations

from datetime import datetime


def derived_timestamp(timestamp: datetime, sent_at: datetime | None, received_at: datetime) -> datetime:
    """When the event happened on the server's clock.

    The device's own clock is wrong by an unknown offset, but the gap between creating the event and sending
    it (`sent_at - timestamp`) is measured on that one clock, so it is right; subtracting it from the server's
    `received_at` gives the event time without the device's offset (network latency is ignored).
    Without `sent_at` there is nothing to measure the offset with, and the timestamp is kept.
    """
    if sent_at is None:
        return timestamp
    return received_at - (sent_at - timestamp)
