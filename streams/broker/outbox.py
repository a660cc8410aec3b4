"""Messages a batch produces, gathered per topic partition and sent as a few record batches.

aiokafka's `send()` costs a future, a lookup and a callback per message: at tens of thousands of messages a
second that is a good part of the worker's time. Here each topic partition gets one record batch (or a few,
when one fills up) and one future.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2


def partition_of(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives a key (murmur2, as every producer here uses)."""
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


@dataclass
class Outbox:
    """The messages a batch produces, queued per topic partition until the batch is sent."""

    producer: AIOKafkaProducer | None  # None until the runner has started it; only `send` needs it
    _messages: dict[tuple[str, int | None], list[tuple[bytes | None, bytes | None]]] = field(default_factory=dict)
    _partition_counts: dict[str, int] = field(default_factory=dict)
    _spread: itertools.count[int] = field(default_factory=itertools.count)

    def add(self, topic: str, key: bytes | None, value: bytes | None, partition: int | None = None) -> None:
        """Queue one message; without a partition, the key's partition is chosen when it is sent."""
        self._messages.setdefault((topic, partition), []).append((key, value))

    def clear(self) -> None:
        self._messages.clear()

    async def send(self) -> list[tuple[str, int, int]]:
        """Send everything queued and wait until the broker has it all.

        Returns (topic, partition, base offset of the last record batch) per partition written; raises the
        first failure once every send has settled (the caller then replays: nothing was acknowledged to it)."""
        assert self.producer is not None, "the runner starts its producer before sending"
        queued, self._messages = self._messages, {}
        by_partition: dict[tuple[str, int], list[tuple[bytes | None, bytes | None]]] = {}
        for (topic, partition), messages in queued.items():
            if partition is not None:
                by_partition.setdefault((topic, partition), []).extend(messages)
                continue
            count = await self._partition_count(topic)
            for key, value in messages:
                chosen = partition_of(key, count) if key is not None else next(self._spread) % count
                by_partition.setdefault((topic, chosen), []).append((key, value))
        deliveries: list[tuple[str, int, asyncio.Future[Any]]] = []
        for (topic, partition), messages in by_partition.items():
            batch = self.producer.create_batch()
            for key, value in messages:
                if batch.append(key=key, value=value, timestamp=None) is None:  # full: send it, start another
                    deliveries.append((topic, partition, await self._send_batch(batch, topic, partition)))
                    batch = self.producer.create_batch()
                    batch.append(key=key, value=value, timestamp=None)
            deliveries.append((topic, partition, await self._send_batch(batch, topic, partition)))
        results = await asyncio.gather(*(delivery for _, _, delivery in deliveries), return_exceptions=True)
        failures = [result for result in results if isinstance(result, BaseException)]
        if failures:
            raise failures[0]
        last: dict[tuple[str, int], int] = {}
        for (topic, partition, _), metadata in zip(deliveries, results, strict=True):
            offset = int(metadata.offset)  # type: ignore[union-attr]  # failures were raised above
            last[(topic, partition)] = max(last.get((topic, partition), -1), offset)
        return [(topic, partition, offset) for (topic, partition), offset in last.items()]

    async def _send_batch(self, batch: Any, topic: str, partition: int) -> asyncio.Future[Any]:
        assert self.producer is not None
        delivery: asyncio.Future[Any] = await self.producer.send_batch(batch, topic, partition=partition)
        return delivery

    async def _partition_count(self, topic: str) -> int:
        # The topic's real partition count, not the configured one: a topic created earlier with another
        # count must still get each key where every other producer puts it.
        count = self._partition_counts.get(topic)
        if count is None:
            assert self.producer is not None
            count = len(await self.producer.partitions_for(topic))
            self._partition_counts[topic] = count
        return count
