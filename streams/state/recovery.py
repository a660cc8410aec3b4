"""Recovery: a table's partitions brought back to what their changelog holds.

On assignment (and after a broker failure mid-batch) each partition's store reads the changelog from the
offset it last recorded to the end. Stored states are only ever ahead of the committed source offsets,
never behind, so a runner that replays from the committed offsets after recovery changes nothing twice.
"""

from __future__ import annotations

import logging
import time

from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas.connections import aiokafka_options
from schemas.settings import Settings
from streams.state.tables import Table

log = logging.getLogger(__name__)


async def assign(table: Table, partitions: set[int], settings: Settings) -> None:
    """Open the partitions' stores and bring them up to the end of the changelog."""
    table.open(partitions)
    await catch_up(table, partitions, settings)


async def catch_up(table: Table, partitions: set[int], settings: Settings) -> None:
    """Apply what the changelog holds beyond each store's recorded offset."""
    wanted = {TopicPartition(table.changelog_topic, p) for p in partitions if p in table.partitions}
    if not wanted:
        return
    started = time.monotonic()
    consumer = AIOKafkaConsumer(**aiokafka_options(settings), enable_auto_commit=False, client_id="nudgeflow-restore")
    await consumer.start()
    restored = 0
    try:
        consumer.assign(list(wanted))
        ends = await consumer.end_offsets(list(wanted))
        for tp in wanted:
            consumer.seek(tp, table.next_changelog_offset(tp.partition))
        remaining = {tp for tp in wanted if ends[tp] > table.next_changelog_offset(tp.partition)}
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=500, max_records=10_000)
            for tp, messages in batch.items():
                for message in messages:
                    table.restore(tp.partition, message.key, message.value, message.offset)
                restored += len(messages)
            remaining = {tp for tp in remaining if await consumer.position(tp) < ends[tp]}
    finally:
        await consumer.stop()
    table.record_offsets()
    log.info(
        "table %s: partitions %s caught up (%d changelog records in %.1fs)",
        table.name, sorted(p.partition for p in wanted), restored, time.monotonic() - started,
    )  # fmt: skip
