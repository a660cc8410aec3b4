"""The ClickHouse sink: reads events, triggers and dead letters from Kafka and writes them in batches.

Offsets are committed only after the batch is in ClickHouse. When ClickHouse is down the sink keeps
retrying the same batch with backoff instead of moving on, so nothing read is lost; a batch written
twice (a crash between insert and commit) collapses on its natural key and deduplication token.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas.settings import Settings
from sinks.metrics import SinkMetrics
from sinks.rows import (
    DEAD_LETTERS,
    EVENTS,
    PROFILE_SNAPSHOTS,
    SEGMENT_CHANGES,
    SUPPRESSIONS,
    TRIGGERS,
    TableSpec,
    dead_letter_row,
    event_row,
    profile_snapshot_row,
    segment_change_row,
    suppression_row,
    trigger_row,
)

log = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 30.0


@dataclass(frozen=True)
class Route:
    spec: TableSpec
    to_row: Callable[[Any], list[Any] | None]


def routes_for(settings: Settings) -> dict[str, Route]:
    return {
        settings.events_topic: Route(EVENTS, lambda m: event_row(m.value, m.topic, m.partition, m.offset)),
        settings.triggers_topic: Route(TRIGGERS, lambda m: trigger_row(m.value)),
        settings.dead_letter_topic: Route(DEAD_LETTERS, lambda m: dead_letter_row(m.value)),
        settings.suppressed_topic: Route(SUPPRESSIONS, lambda m: suppression_row(m.value)),
        settings.segments_topic: Route(SEGMENT_CHANGES, lambda m: segment_change_row(m.value)),
        settings.profiles_topic: Route(PROFILE_SNAPSHOTS, lambda m: profile_snapshot_row(m.value, m.key)),
    }


@dataclass
class SinkStats:
    rows_written: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    batches: int = 0
    insert_errors: int = 0
    last_error: str | None = None


class ClickHouseSink:
    def __init__(
        self, settings: Settings, client: Any, group_id: str | None = None, metrics: SinkMetrics | None = None
    ) -> None:
        self.settings = settings
        self.metrics = metrics or SinkMetrics()
        self.group_id = group_id or f"{settings.app_id}-sink"
        self.client = client
        self.routes = routes_for(settings)
        self.stats = SinkStats()
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(
            *self.routes,
            bootstrap_servers=self.settings.kafka_bootstrap,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            client_id="nudgeflow-sink",
        )
        await consumer.start()
        try:
            while not self._stopping.is_set():
                batch = await consumer.getmany(
                    timeout_ms=int(self.settings.sink_batch_seconds * 1000),
                    max_records=self.settings.sink_batch_size,
                )
                if not batch:
                    continue
                await self._write(batch)
                await consumer.commit({tp: messages[-1].offset + 1 for tp, messages in batch.items()})
        finally:
            await consumer.stop()

    async def _write(self, batch: dict[TopicPartition, list[Any]]) -> None:
        for tp, messages in batch.items():
            route = self.routes[tp.topic]
            rows = [row for row in map(route.to_row, messages) if row is not None]
            if not rows:
                continue
            # Same messages, same token: a batch re-read after a crash is recognised as already written.
            token = f"{tp.topic}/{tp.partition}/{messages[0].offset}-{messages[-1].offset}"
            await self._insert_until_done(route.spec, rows, token)

    async def _insert_until_done(self, spec: TableSpec, rows: list[list[Any]], token: str) -> None:
        backoff = 0.5
        while True:
            started = time.perf_counter()
            try:
                await asyncio.to_thread(
                    self.client.insert,
                    spec.table,
                    rows,
                    column_names=list(spec.columns),
                    settings={"insert_deduplication_token": token},
                )
            except Exception as error:  # every failure of the store is retried; the batch is not acked
                self.stats.insert_errors += 1
                self.metrics.insert_errors.labels(spec.table).inc()
                self.stats.last_error = f"{type(error).__name__}: {error}"
                log.warning(
                    "insert into %s failed (%s); retrying in %.1fs",
                    spec.table,
                    self.stats.last_error,
                    backoff,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
                continue
            elapsed = time.perf_counter() - started
            self.stats.batches += 1
            self.stats.rows_written[spec.table] += len(rows)
            self.metrics.rows_written.labels(spec.table).inc(len(rows))
            self.metrics.batch_size.labels(spec.table).observe(len(rows))
            self.metrics.insert_latency.labels(spec.table).observe(elapsed)
            log.debug("wrote %d rows into %s in %.3fs", len(rows), spec.table, elapsed)
            return
