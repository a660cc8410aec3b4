"""The batched runner: reads the source topics in batches with aiokafka and hands each record to the
processor; stores, sends and commits in the checkpoint order (streams/state/checkpoint.py).

Batches replaced a Faust agent as the default host for a measured reason: Faust's per-message machinery
capped a worker at about 2.6k events/s on this project's machine before any of our code ran
(bench/worker_throughput.py --faust-baseline). The Faust runner (streams/runners/faust.py) hosts the same
processor for users who run Faust apps.

States are stored, and offsets committed, every STORE_EVERY_SECONDS rather than after every batch, so a
busy person's state is encoded and written once for many batches.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from datetime import timedelta
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import KafkaError

from schemas.connections import aiokafka_options
from schemas.rules import RulesConfig
from schemas.settings import Settings
from streams.broker.outbox import Outbox
from streams.metrics import WorkerMetrics
from streams.processing.campaigns import SWEEP_BUDGET_SECONDS
from streams.processing.processor import Processor
from streams.processing.types import Hosting
from streams.processing.whole_topic import WholeTopicReader
from streams.rules.person import PersonState
from streams.state import checkpoint, recovery
from streams.state.store import TableStore
from streams.timers import PartitionClock, utc_now
from streams.web.owners import CLIENT_PREFIX

log = logging.getLogger(__name__)

# Changed states are stored, and then offsets committed, at most this often (and on every rebalance and at
# shutdown), or sooner once this many states wait.
STORE_EVERY_SECONDS = 0.5
MOST_UNSTORED_STATES = 20_000

# After a failed flush (broker away longer than the producer's own retries), wait this long and rewind.
RECOVERY_BACKOFF_SECONDS = 1.0

# CPython's full (oldest-generation) collections walk every live object. A worker holds hundreds of thousands
# of state objects that never form cycles, and replacing states on every event keeps triggering full passes:
# pauses of 50 to 340 ms within 15 s of live traffic, growing with the heap (measured with gc.callbacks).
# Young collections still run (a little less often); a full one only after this many middle-generation ones.
YOUNG_COLLECTION_ALLOCATIONS = 10_000
MIDDLE_COLLECTIONS_BEFORE_FULL = 1_000


def tune_garbage_collector() -> None:
    """For the worker's process: what is alive at start (code, rules) is never scanned again, and full
    collections become rare. Reference counting still frees each state as soon as it is replaced."""
    gc.freeze()
    gc.set_threshold(YOUNG_COLLECTION_ALLOCATIONS, 10, MIDDLE_COLLECTIONS_BEFORE_FULL)


class BatchedRunner(Hosting):
    """The batched runner: reads the source topics with aiokafka in batches and hosts the processor."""

    def __init__(self, settings: Settings, rules: RulesConfig, clock: PartitionClock | None = None) -> None:
        self.settings = settings
        self.rules = rules
        self.metrics = WorkerMetrics()
        self.store = TableStore(settings)
        self._outbox = Outbox(None)  # given its producer at start
        clock = clock or PartitionClock(idle_after=timedelta(seconds=settings.idle_after_seconds))
        self.processor = Processor(settings, rules, self.store, self._outbox, clock, self.metrics)
        self.url = f"http://{settings.worker_web_host}:{settings.worker_web_port}"
        self._lock = asyncio.Lock()  # one batch or one rebalance at a time
        self._stopping = asyncio.Event()
        self._snapshot_at = 0.0
        self._uncommitted: dict[TopicPartition, int] = {}  # next offsets to commit once the states are stored
        self._stored_at = 0.0
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._rejoin = False  # set when an assignment lacked a source topic
        self._control = WholeTopicReader(settings, settings.campaigns_topic)
        self._recommendations = WholeTopicReader(settings, settings.recommendations_topic)

    # What the HTTP API reads -----------------------------------------------------------------------------------

    def held_states(self) -> int:
        return len(self.store.persons)

    def latest_state(self, partition: int, key: bytes) -> PersonState | None:
        return self.processor.latest_state(partition, key)

    def segment_members(self, name: str) -> list[str]:
        return self.store.segment_members(name, self.owned)

    def stop(self) -> None:
        self._stopping.set()

    # The loop ------------------------------------------------------------------------------------------------

    async def run(self) -> None:
        settings = self.settings
        self._producer = AIOKafkaProducer(
            **aiokafka_options(settings),
            client_id=f"{CLIENT_PREFIX}{self.url}",  # how the API finds the owner of a partition
            acks="all",
            enable_idempotence=True,  # a retried send after a broker failover is not written twice
            linger_ms=0,  # the outbox already sends a whole batch at once: waiting longer only adds latency
            max_batch_size=1_048_576,
            max_request_size=4_194_304,
        )
        # The range assignor gives a worker the same partition numbers of every source topic, so a
        # person's events, identity messages and privacy requests all reach the worker holding their state.
        self._consumer = AIOKafkaConsumer(
            **aiokafka_options(settings),
            group_id=settings.app_id,
            client_id=f"{CLIENT_PREFIX}{self.url}",  # how the API finds the owner of a partition
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            partition_assignment_strategy=(RangePartitionAssignor,),
            max_partition_fetch_bytes=4_194_304,
        )
        await self._producer.start()
        self._outbox.producer = self._producer
        await self._consumer.start()
        try:
            # Every campaign known before any partition is: a deadline of a campaign not yet read would be
            # dropped as nobody's.
            await self._control.start(self._stopping)
            for record in await self._control.catch_up():
                self.processor.control(record)
            # The recommendations too, so the first nudges after a start carry them like the later ones.
            await self._recommendations.start(self._stopping)
            for record in await self._recommendations.catch_up():
                self.processor.recommendation(record)
            await self._wait_for_source_topics()
            self._consumer.subscribe(self.processor.source_topics, listener=_Rebalance(self))
            while not self._stopping.is_set():
                if self._rejoin:
                    await self._resubscribe()
                batch = await self._next_batch()
                async with self._lock:
                    try:
                        await self._process(batch)
                    except KafkaError as error:
                        await self._recover(error)
        finally:
            async with self._lock:
                await self._store_and_commit()
                for table in self.store.tables:
                    table.close()
            await self._control.stop()
            await self._recommendations.stop()
            await self._consumer.stop()
            await self._producer.stop()

    async def _wait_for_source_topics(self) -> None:
        """Subscribe only once the client's metadata lists every source topic: a consumer that joins its
        group before, say, the privacy topic is known holds none of its partitions until the next metadata
        refresh (minutes), and meanwhile ignores erasures."""
        assert self._consumer is not None
        while not self._stopping.is_set():
            known = await self._consumer.topics()
            missing = [topic for topic in self.processor.source_topics if topic not in known]
            if not missing:
                return
            log.info("waiting for topics %s to exist", ", ".join(missing))
            await asyncio.sleep(0.5)

    async def _resubscribe(self) -> None:
        assert self._consumer is not None
        self._rejoin = False
        await self._wait_for_source_topics()
        self._consumer.unsubscribe()
        self._consumer.subscribe(self.processor.source_topics, listener=_Rebalance(self))

    async def _next_batch(self) -> dict[TopicPartition, list[Any]]:
        """Wait for messages (at most a timer interval), then gather more for up to worker_linger_ms.

        Under live traffic a fetch brings a handful of messages; every batch costs a few sends and round
        trips and a state write per person, so a few milliseconds of gathering buys a lot of throughput."""
        assert self._consumer is not None
        settings = self.settings
        limit = settings.worker_batch_size
        batch: dict[TopicPartition, list[Any]] = await self._consumer.getmany(
            timeout_ms=self._wait_ms(), max_records=limit
        )
        gathered = sum(len(messages) for messages in batch.values())
        until = time.monotonic() + settings.worker_linger_ms / 1000
        while batch and gathered < limit and (left := until - time.monotonic()) > 0:
            more = await self._consumer.getmany(timeout_ms=max(1, int(left * 1000)), max_records=limit - gathered)
            for tp, messages in more.items():
                batch.setdefault(tp, []).extend(messages)
                gathered += len(messages)
        return batch

    def _wait_ms(self) -> int:
        """How long to wait for messages: until the soonest deadline comes due (so a delayed nudge goes out
        on time rather than at the next poll), and at most a timer interval (clocks that follow event time
        and idle partitions are looked at that often)."""
        if self.processor.sweep.busy:
            return 1  # people are waiting for a campaign's deadline: a chunk of the sweep each turn
        longest = self.settings.timer_interval_seconds
        soonest = self.schedule.earliest(self.owned)
        if soonest is None:
            return int(longest * 1000)
        until_due = (soonest - utc_now()).total_seconds()
        return max(1, int(min(longest, until_due) * 1000) + 1)

    async def _process(self, batch: dict[TopicPartition, list[Any]]) -> None:
        assert self._consumer is not None
        processor = self.processor
        offsets: dict[TopicPartition, int] = {}
        received_at = utc_now()  # the wall clock this batch's timestamps are bounded by
        for tp, messages in batch.items():
            if tp.partition not in processor.owned:
                continue  # fetched before a rebalance took the partition away
            highwater = self._consumer.highwater(tp)
            for message in messages:
                caught_up = highwater is None or message.offset + 1 >= highwater
                processor.handle(message, caught_up, received_at)
            offsets[tp] = messages[-1].offset + 1
            if highwater is not None:
                self.metrics.lag.labels(topic=tp.topic, partition=str(tp.partition)).set(highwater - offsets[tp])
        for record in await self._control.poll():
            processor.control(record)
        for record in await self._recommendations.poll():
            processor.recommendation(record)
        processor.sweep_campaigns(SWEEP_BUDGET_SECONDS)
        processor.fire_due()
        # One snapshot per changed person per interval, not one per event: ClickHouse keeps the latest.
        if time.monotonic() - self._snapshot_at >= self.settings.timer_interval_seconds:
            self._snapshot_at = time.monotonic()
            processor.publish_snapshots()
        await self._flush(offsets)

    async def _flush(self, offsets: dict[TopicPartition, int]) -> None:
        """Outputs acknowledged, then (every STORE_EVERY_SECONDS) states, then offsets."""
        await self._outbox.send()
        self.processor.take_applied_events()
        self._uncommitted.update(offsets)
        if (
            time.monotonic() - self._stored_at >= STORE_EVERY_SECONDS
            or self.store.unstored_count() >= MOST_UNSTORED_STATES
        ):
            await self._store_and_commit()

    async def _store_and_commit(self) -> None:
        assert self._consumer is not None
        self._stored_at = time.monotonic()
        await checkpoint.store_states(self.store, self._outbox, self.processor.quarantine)
        offsets, self._uncommitted = self._uncommitted, {}
        await checkpoint.commit(self._consumer, offsets)

    async def _recover(self, error: Exception) -> None:
        """The broker failed us mid-batch: forget the batch and rewind to the last committed offsets.

        Stored states are only ahead of the committed offsets, never behind, so replaying from there is safe.
        """
        assert self._consumer is not None
        while not self._stopping.is_set():
            log.warning("batch not stored (%s: %s); rewinding to the committed offsets", type(error).__name__, error)
            await asyncio.sleep(RECOVERY_BACKOFF_SECONDS)
            self.store.discard_unstored()
            self._uncommitted.clear()
            self._outbox.clear()
            self.processor.applied_events.clear()
            try:
                for table in self.store.tables:
                    await recovery.catch_up(table, self.owned, self.settings)
                self.processor.rebuild_schedule()
                for tp in self._consumer.assignment():
                    if await self._consumer.committed(tp) is None:
                        await self._consumer.seek_to_beginning(tp)
                    else:
                        await self._consumer.seek_to_committed(tp)
                return
            except KafkaError as again:
                error = again

    # Ownership -------------------------------------------------------------------------------------------------

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        partitions = {tp.partition for tp in assigned if tp.topic == self.settings.events_topic}
        missing = set(self.processor.source_topics) - {tp.topic for tp in assigned}
        if partitions and missing:
            # The range assignor gives every source topic's same partitions together; a topic missing here
            # is one the group's metadata did not know, and its messages (erasures!) would wait for minutes.
            log.error("assignment lacks topics %s; rejoining", ", ".join(sorted(missing)))
            self._rejoin = True
        async with self._lock:
            for table in self.store.tables:
                table.revoke(table.partitions - partitions)
                # Until the tables are restored the partitions cannot be processed: keep trying.
                while True:
                    try:
                        await recovery.assign(table, partitions, self.settings)
                        break
                    except KafkaError as error:
                        log.warning("restoring table %s failed (%s); retrying", table.name, error)
                        await asyncio.sleep(RECOVERY_BACKOFF_SECONDS)
            self.processor.owned = partitions
            self.store.forget_decoded()
            self.processor.rebuild_schedule()
        log.info("worker holds partitions %s; %d pending deadlines", sorted(partitions), len(self.schedule))

    async def on_revoked(self) -> None:
        async with self._lock:  # waits for the batch in hand to be stored
            await self._store_and_commit()
            self.processor.owned = set()
            self.store.forget_decoded()


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, runner: BatchedRunner) -> None:
        self.runner = runner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.runner.on_revoked()

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.runner.on_assigned(assigned)
