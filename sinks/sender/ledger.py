"""The delivery ledger: the last state of every nudge of the triggers partitions this sender holds.

Durable on the compacted `deliveries` topic, one record per state change keyed by trigger_id, written to
the partition numbered like the trigger's (co-partitioned, as the worker's changelogs are), so a sender
that is given a triggers partition reads only the matching deliveries partition to know what was done.

What a restart, a rebalance or a replay finds, and does (docs/architecture.md, "Delivery"):

- nothing, `sending` or `retrying`: the provider never got the last byte of any request for it, so it is
  sent (again), continuing the count of attempts;
- `committed`: the sender recorded that it was about to write the last byte and may have; never resent
  (at most once for the few microseconds between the broker's acknowledgement and that write);
- `sent`, `unconfirmed`, `failed`, `expired`: done, dropped as a duplicate.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pydantic import ValidationError

from schemas.connections import aiokafka_options
from schemas.deliveries import DeliveryRecord, DeliveryState
from schemas.settings import Settings

log = logging.getLogger(__name__)


class Ledger:
    """Where each nudge's delivery stands, read from and written to the deliveries topic."""

    def __init__(self, settings: Settings, producer: AIOKafkaProducer) -> None:
        self.settings = settings
        self.topic = settings.deliveries_topic
        self.producer = producer
        self.entries: dict[str, DeliveryRecord] = {}
        self.by_partition: dict[int, set[str]] = {}  # deliveries partition -> trigger ids read or written
        self.partition_count = 0
        self.pending: set[asyncio.Future[object]] = set()

    async def start(self) -> None:
        partitions = await self.producer.partitions_for(self.topic)
        self.partition_count = len(partitions)
        if not self.partition_count:
            raise RuntimeError(f"topic {self.topic} has no partitions (create it with `nudgeflow topics`)")

    def partition_of(self, triggers_partition: int) -> int:
        return triggers_partition % self.partition_count

    def get(self, trigger_id: str) -> DeliveryRecord | None:
        return self.entries.get(trigger_id)

    def next_attempt(self, trigger_id: str) -> int:
        """The attempt a send starts at: after every attempt already made, by this sender or one before it."""
        record = self.entries.get(trigger_id)
        return record.attempt + 1 if record is not None else 1

    async def restore(self, triggers_partitions: Iterable[int]) -> int:
        """Read the deliveries partitions of these triggers partitions to their end; the records read."""
        wanted = sorted({self.partition_of(p) for p in triggers_partitions} - set(self.by_partition))
        if not wanted:
            return 0
        consumer = AIOKafkaConsumer(
            **aiokafka_options(self.settings),
            enable_auto_commit=False,
            group_id=None,
            client_id=f"{self.settings.app_id}-sender-ledger",
        )
        await consumer.start()
        count = 0
        try:
            assigned = [TopicPartition(self.topic, number) for number in wanted]
            consumer.assign(assigned)
            await consumer.seek_to_beginning(*assigned)
            ends = await consumer.end_offsets(assigned)
            for partition in assigned:
                self.by_partition.setdefault(partition.partition, set())
            remaining = {tp for tp in assigned if ends[tp] > 0}
            while remaining:
                batch = await consumer.getmany(*remaining, timeout_ms=500)
                for tp, messages in batch.items():
                    for message in messages:
                        if message.offset < ends[tp]:
                            count += self._absorb(tp.partition, message.value)
                for tp in list(remaining):
                    if await consumer.position(tp) >= ends[tp]:
                        remaining.discard(tp)
        finally:
            await consumer.stop()
        return count

    def _absorb(self, partition: int, value: bytes | None) -> int:
        if value is None:
            return 0
        try:
            record = DeliveryRecord.model_validate_json(value)
        except ValidationError as error:
            log.warning("ledger: unreadable record on %s/%d ignored: %s", self.topic, partition, error)
            return 0
        self.entries[record.trigger_id] = record
        self.by_partition.setdefault(partition, set()).add(record.trigger_id)
        return 1

    def forget(self, triggers_partitions: Iterable[int], keep: Iterable[int] = ()) -> None:
        """Drop what is known of partitions another sender now holds (it reads them itself)."""
        kept = {self.partition_of(p) for p in keep}
        for number in {self.partition_of(p) for p in triggers_partitions} - kept:
            for trigger_id in self.by_partition.pop(number, set()):
                self.entries.pop(trigger_id, None)

    async def write(self, record: DeliveryRecord, triggers_partition: int, wait: bool = False) -> None:
        """Record a state; with `wait`, only return once the broker acknowledged it (acks=all)."""
        partition = self.partition_of(triggers_partition)
        self.entries[record.trigger_id] = record
        self.by_partition.setdefault(partition, set()).add(record.trigger_id)
        future = await self.producer.send(
            self.topic, value=record.to_json(), key=record.trigger_id.encode(), partition=partition
        )
        if wait:
            await future
            return
        self.pending.add(future)
        future.add_done_callback(self._written)

    def _written(self, future: asyncio.Future[object]) -> None:
        self.pending.discard(future)
        if not future.cancelled() and future.exception() is not None:
            log.error("ledger: a record was not written: %s", future.exception())

    async def flush(self) -> None:
        await self.producer.flush()

    def final(self, trigger_id: str) -> bool:
        record = self.entries.get(trigger_id)
        return record is not None and record.final

    def state(self, trigger_id: str) -> DeliveryState | None:
        record = self.entries.get(trigger_id)
        return record.state if record is not None else None
