"""The pending deadlines of the partitions a worker owns, soonest first, so the timer never scans a table.

Each person's deadline is part of their stored state, the durable truth; this index is rebuilt from the
stored states after every rebalance and kept current as the worker saves states. Heaps use lazy deletion:
an entry counts only while it matches the person's current deadline.
"""

from __future__ import annotations

import heapq
from datetime import datetime

import orjson


class DeadlineIndex:
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
