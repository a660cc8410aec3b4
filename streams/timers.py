"""Time in the worker: which clock each partition follows, and which people are due when.

`PartitionClock` follows event time while a partition has backlog and the wall clock once caught up, so
a replay of last week fires exactly the deadlines the live run fired, in the same order relative to the
events, while a quiet partition's deadlines still fire on time (docs/architecture.md, "Event time").

`DeadlineIndex` keeps the pending deadlines of the partitions a runner owns, soonest first, so firing
never scans a table. Each person's deadline is part of their stored state, the durable truth; the index
is rebuilt from the stored states after every rebalance and kept current as states are saved. Heaps use
lazy deletion: an entry counts only while it matches the person's current deadline.

This is the only module of the worker that reads the wall clock; the pure core is handed `now`.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import orjson


def utc_now() -> datetime:
    """The current moment, in UTC."""
    return datetime.now(UTC)


@dataclass
class PartitionClock:
    """The clock each partition follows: event time while it has backlog, the wall clock once caught up or idle."""

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


class DeadlineIndex:
    """The pending deadlines of the partitions a runner owns, soonest first, so firing never scans a table."""

    def __init__(self) -> None:
        self._current: dict[bytes, tuple[datetime, int]] = {}
        self._heaps: dict[int, list[tuple[datetime, bytes]]] = {}

    def __len__(self) -> int:
        return len(self._current)

    def set(self, key: bytes, due: datetime | None, partition: int) -> None:
        if due is None:
            self._current.pop(key, None)
            return
        if self._current.get(key) == (due, partition):
            return
        self._current[key] = (due, partition)
        heapq.heappush(self._heaps.setdefault(partition, []), (due, key))

    def clear(self) -> None:
        self._current.clear()
        self._heaps.clear()

    def partitions(self) -> list[int]:
        return [partition for partition, heap in self._heaps.items() if heap]

    def earliest(self, partitions: Iterable[int]) -> datetime | None:
        """The soonest current deadline among `partitions` (stale heap entries are dropped on the way)."""
        soonest: datetime | None = None
        for partition in partitions:
            heap = self._heaps.get(partition)
            while heap and self._current.get(heap[0][1]) != (heap[0][0], partition):
                heapq.heappop(heap)
            if heap and (soonest is None or heap[0][0] < soonest):
                soonest = heap[0][0]
        return soonest

    def pop_due(self, partition: int, now: datetime) -> list[bytes]:
        """Keys of `partition` due at or before `now`, removed from the index."""
        heap = self._heaps.get(partition, [])
        due_keys = []
        while heap and heap[0][0] <= now:
            due, key = heapq.heappop(heap)
            if self._current.get(key) == (due, partition):
                del self._current[key]
                due_keys.append(key)
        return due_keys


def stored_deadline(stored: bytes) -> datetime | None:
    """The deadline of a stored person state, read without building the model (a rebalance reads them all).

    Must agree with `PersonState.next_deadline`: the earliest pending trigger or segment check."""
    document = orjson.loads(stored)
    moments = [datetime.fromisoformat(pending["fire_at"]) for pending in document.get("pending", {}).values()]
    if document.get("segment_check_at"):
        moments.append(datetime.fromisoformat(document["segment_check_at"]))
    return min(moments, default=None)
