"""A bounded, time-limited memory of message ids, to drop retried deliveries of the same event."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable


class DedupeWindow:
    """Remembers each message id for `ttl_seconds`, and at most `max_entries` ids (the oldest go first).

    The clock is injected (seconds, monotonic) so tests can move time. Ids are inserted in clock order, so the
    oldest entry is always first and expiry only ever looks at the front.
    """

    def __init__(self, ttl_seconds: float, max_entries: int, clock: Callable[[], float]) -> None:
        if ttl_seconds <= 0 or max_entries < 1:
            raise ValueError("a dedupe window needs a positive ttl and room for at least one id")
        self.ttl_seconds = ttl_seconds
        self.max_entries = max_entries
        self._clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        self._expire(self._clock())
        return len(self._seen)

    def __contains__(self, message_id: object) -> bool:
        self._expire(self._clock())
        return message_id in self._seen

    def add(self, message_id: str) -> None:
        """Remember an id; call only once its event is durably accepted, so a failed send can be retried."""
        now = self._clock()
        self._expire(now)
        self._seen.pop(message_id, None)
        self._seen[message_id] = now
        while len(self._seen) > self.max_entries:
            self._seen.popitem(last=False)

    def _expire(self, now: float) -> None:
        while self._seen:
            oldest_id, seen_at = next(iter(self._seen.items()))
            if now - seen_at < self.ttl_seconds:
                break
            del self._seen[oldest_id]
