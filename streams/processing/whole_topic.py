"""A compacted topic a runner needs all of, whatever partitions of the source topics it holds: the campaigns
topic (what campaigns exist) and the recommendations topic (what each product's recommendations are).

Each is read from the beginning of every partition, with no consumer group, into a bounded in-memory view
(streams/processing/campaigns.py, CampaignRegistry; streams/processing/recommendations.py, RecommendationMap).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas.connections import aiokafka_options
from schemas.settings import Settings

log = logging.getLogger(__name__)


class WholeTopicReader:
    """One topic, every partition from its beginning, with no consumer group: every runner reads all of it."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.settings = settings
        self.topic = topic
        self._consumer: AIOKafkaConsumer | None = None
        self._partitions: list[TopicPartition] = []

    async def start(self, stopping: asyncio.Event | None = None) -> None:
        """Assign every partition of the topic (waiting for it to exist) and seek to its beginning."""
        self._consumer = consumer = AIOKafkaConsumer(
            **aiokafka_options(self.settings),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        topic = self.topic
        while True:
            # What consumer.topics() reads, with the partitions: a consumer with no subscription keeps no metadata.
            cluster = await consumer._client.fetch_all_metadata()
            partitions = cluster.partitions_for_topic(topic)
            if partitions:
                break
            if stopping is not None and stopping.is_set():
                return
            log.info("waiting for topic %s to exist", topic)
            await asyncio.sleep(0.5)
        self._partitions = [TopicPartition(topic, partition) for partition in sorted(partitions)]
        consumer.assign(self._partitions)
        await consumer.seek_to_beginning(*self._partitions)

    async def catch_up(self) -> list[Any]:
        """Every record up to the end the topic had when called: what a runner knows before it fires anything."""
        consumer = self._consumer
        if consumer is None or not self._partitions:
            return []
        ends: dict[TopicPartition, int] = await consumer.end_offsets(self._partitions)
        records: list[Any] = []
        behind = [tp for tp, end in ends.items() if end > 0]
        while behind:
            batch = await consumer.getmany(*behind, timeout_ms=500)
            for messages in batch.values():
                records.extend(messages)
            behind = [tp for tp in behind if await consumer.position(tp) < ends[tp]]
        return records

    async def poll(self, timeout_ms: int = 0) -> list[Any]:
        """What arrived since the last call (waiting at most `timeout_ms` for something)."""
        if self._consumer is None or not self._partitions:
            return []
        batch = await self._consumer.getmany(timeout_ms=timeout_ms)
        return [message for messages in batch.values() for message in messages]

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
