"""The pending deadlines of the partitions a worker owns, soonest first, so the timer never scans a table.

The `deadlines` table is the durable truth; this index is rebuilt from it after every rebalance and kept
current as the agent saves states. Heaps use lazy deletion: an entry counts only while it matches the
person's current deadline.
"""

from __future__ import annotations

import heapq
from datetime import datetime


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
