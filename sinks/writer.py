"""The ClickHouse sink: reads events, triggers and dead letters from Kafka and writes them in batches.

Offsets are committed only after the batch is in ClickHouse. When ClickHouse is down the sink keeps
retrying the same batch with backoff instead of moving on, so nothing read is lost; a batch written
twice (a crash between insert and commit) collapses on its natural key and deduplication token.

The privacy topic is read in the same loop: an erasure request deletes instead of inserting (see
sinks/erasure.py), is retried the same way, and is acknowledged with an audit record before its offset
is committed. Rows of people already erased are dropped before insert, so a late event or a replay of
the topics from the beginning does not bring them back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pydantic import ValidationError

from schemas.privacy import AuditRecord, ErasureRequest, person_hash
from schemas.settings import Settings
from sinks.erasure import erase_person
from sinks.metrics import SinkMetrics
from sinks.rows import (
    DEAD_LETTERS,
    EVENTS,
    PERSON_COLUMN,
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
T = TypeVar("T")

MAX_BACKOFF_SECONDS = 30.0
# Other sinks (at scale, several share the group) record erasures too; their list is re-read this often.
ERASURES_REFRESH_SECONDS = 10.0


@dataclass(frozen=True)
class Route:
    spec: TableSpec
    to_row: Callable[[Any], list[Any] | None]


def routes_for(settings: Settings) -> dict[str, Route]:
    plain = settings.clickhouse_plain_contacts
    return {
        settings.events_topic: Route(EVENTS, lambda m: event_row(m.value, m.topic, m.partition, m.offset, plain)),
        settings.triggers_topic: Route(TRIGGERS, lambda m: trigger_row(m.value, plain)),
        settings.dead_letter_topic: Route(DEAD_LETTERS, lambda m: dead_letter_row(m.value, plain)),
        settings.suppressed_topic: Route(SUPPRESSIONS, lambda m: suppression_row(m.value, plain)),
        settings.segments_topic: Route(SEGMENT_CHANGES, lambda m: segment_change_row(m.value)),
        settings.profiles_topic: Route(PROFILE_SNAPSHOTS, lambda m: profile_snapshot_row(m.value, m.key, plain)),
    }


@dataclass
class SinkStats:
    rows_written: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    batches: int = 0
    insert_errors: int = 0
    last_error: str | None = None
    erasures: int = 0
    rows_dropped_as_erased: int = 0


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
        self._erased: set[str] = set()  # person hashes
        self._erased_read_at = -ERASURES_REFRESH_SECONDS
        self._producer: AIOKafkaProducer | None = None

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(
            *self.routes,
            self.settings.privacy_topic,
            bootstrap_servers=self.settings.kafka_bootstrap,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            client_id="nudgeflow-sink",
        )
        producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka_bootstrap, client_id="nudgeflow-sink-audit", acks="all"
        )
        await consumer.start()
        await producer.start()
        self._producer = producer
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
            self._producer = None
            await producer.stop()
            await consumer.stop()

    async def _write(self, batch: dict[TopicPartition, list[Any]]) -> None:
        await self._refresh_erased()
        requests = [m for tp, messages in batch.items() if tp.topic == self.settings.privacy_topic for m in messages]
        for tp, messages in batch.items():
            if tp.topic == self.settings.privacy_topic:
                continue
            route = self.routes[tp.topic]
            rows = [row for row in map(route.to_row, messages) if row is not None and not self._of_erased(tp, row)]
            if not rows:
                continue
            # Same messages, same token: a batch re-read after a crash is recognised as already written.
            token = f"{tp.topic}/{tp.partition}/{messages[0].offset}-{messages[-1].offset}"
            await self._insert_until_done(route.spec, rows, token)
        # Erasures last: rows of the same batch that are about the person are in, and go with the rest.
        for message in requests:
            await self._erase(message)

    def _of_erased(self, tp: TopicPartition, row: list[Any]) -> bool:
        person = row[PERSON_COLUMN[self.routes[tp.topic].spec.table]]
        if not self._erased or not person or person_hash(person, self.settings.hash_key) not in self._erased:
            return False
        self.stats.rows_dropped_as_erased += 1
        return True

    async def _refresh_erased(self) -> None:
        if time.monotonic() - self._erased_read_at < ERASURES_REFRESH_SECONDS:
            return
        try:
            rows = await asyncio.to_thread(lambda: self.client.query("SELECT person_hash FROM erasures").result_rows)
        except Exception as error:  # an unreadable list is retried at the next batch; inserts go on
            log.warning("could not read the erasures table: %s", error)
            return
        self._erased.update(str(hashed) for (hashed,) in rows)
        self._erased_read_at = time.monotonic()

    async def _erase(self, message: Any) -> None:
        try:
            request = ErasureRequest.model_validate_json(message.value or b"")
        except ValidationError as error:
            # Nothing can be erased without a person; saying so in the log is all that is left to do.
            log.error("privacy message %s/%d/%d ignored: %s", message.topic, message.partition, message.offset, error)
            return
        hashed = person_hash(request.person_id, self.settings.hash_key)
        self._erased.add(hashed)  # from now on this sink drops the person's rows, even mid-erasure
        deleted = await self._until_done("erase", lambda: self._erase_in_clickhouse(request, hashed))
        self.stats.erasures += 1
        record = AuditRecord(
            request_id=request.request_id,
            kind="erase",
            person_hash=hashed,
            component="sink",
            completed_at=datetime.now(UTC),
            detail="clickhouse rows deleted: " + ", ".join(f"{t}={n}" for t, n in deleted.items()),
        )
        await self._until_done("audit", lambda: self._audit(record))
        log.info("erased person %s in ClickHouse (request %s)", hashed[:12], request.request_id)

    async def _erase_in_clickhouse(self, request: ErasureRequest, hashed: str) -> dict[str, int]:
        deleted = await asyncio.to_thread(erase_person, self.client, request.person_id)
        await asyncio.to_thread(
            self.client.insert,
            "erasures",
            [[hashed, request.request_id, request.requested_at]],
            column_names=["person_hash", "request_id", "requested_at"],
        )
        return deleted

    async def _audit(self, record: AuditRecord) -> None:
        assert self._producer is not None, "audit records are sent while the sink runs"
        await self._producer.send_and_wait(
            self.settings.audit_topic, key=record.person_hash.encode(), value=record.to_json()
        )

    async def _until_done(self, what: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """Retry with backoff until it works: the offset must not be committed before it is done."""
        backoff = 0.5
        while True:
            try:
                return await attempt()
            except Exception as error:  # every failure is retried; the message is not acked meanwhile
                self.stats.last_error = f"{type(error).__name__}: {error}"
                log.warning("%s failed (%s); retrying in %.1fs", what, self.stats.last_error, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)

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
