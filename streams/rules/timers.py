"""Which clock a partition follows: event time while it has backlog, the wall clock once caught up.

Following event time lets a replay of last week fire exactly the deadlines the live run fired, in the
same order relative to the events; following the wall clock once caught up lets a quiet partition's
deadlines fire on time (DESIGN principle 2).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class PartitionClock:
    wall: Callable[[], datetime] = utc_now
    idle_after: timedelta = timedelta(seconds=2)
    future_tolerance: timedelta = timedelta(seconds=5)
    started_at: datetime | None = None
    _stream_time: dict[int, datetime] = field(default_factory=dict)
    _last_seen_at: dict[int, datetime] = field(default_factory=dict)
    _caught_up: dict[int, bool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.started_at is None:
            self.started_at = self.wall()

    def observe(self, partition: int, event_time: datetime, *, caught_up: bool) -> None:
        """Record one message of `partition`; `caught_up` says it was the last one the broker had."""
        wall = self.wall()
        # A device clock running ahead must not fire everyone's deadlines early.
        bounded = min(event_time, wall + self.future_tolerance)
        previous = self._stream_time.get(partition)
        self._stream_time[partition] = bounded if previous is None else max(previous, bounded)
        self._last_seen_at[partition] = wall
        self._caught_up[partition] = caught_up

    def now(self, partition: int) -> datetime | None:
        """The partition's current time, or None while it is unknown (just started, backlog not yet read)."""
        wall = self.wall()
        stream_time = self._stream_time.get(partition)
        if stream_time is None:
            # Nothing read since start: a backlog would have arrived by now, so the wall clock is safe.
            assert self.started_at is not None
            return wall if wall - self.started_at >= self.idle_after else None
        idle = wall - self._last_seen_at[partition] >= self.idle_after
        if self._caught_up[partition] or idle:
            return max(stream_time, wall)
        return stream_time
