"""Device clock skew removed from client timestamps, as Snowplow's derived timestamp does."""

from __future__ import annotations

from datetime import datetime, timedelta


class ImplausibleTimestamps(ValueError):
    """timestamp and sentAt so far apart that no date can be derived from them."""


def derived_timestamp(timestamp: datetime, sent_at: datetime | None, received_at: datetime) -> datetime:
    """When the event happened on the server's clock.

    The device's own clock is wrong by an unknown offset, but the gap between creating the event and sending
    it (`sent_at - timestamp`) is measured on that one clock, so it is right; subtracting it from the server's
    `received_at` gives the event time without the device's offset (network latency is ignored).
    Without `sent_at` there is nothing to measure the offset with, and the timestamp is kept. An event "sent
    before it was created" is taken as created when received: a negative gap would move it into the future.
    """
    if sent_at is None:
        return timestamp
    try:
        gap = max(sent_at - timestamp, timedelta(0))
        return received_at - gap
    except OverflowError:
        raise ImplausibleTimestamps(
            f"timestamp {timestamp.isoformat()} and sentAt {sent_at.isoformat()} are too far apart"
        ) from None
