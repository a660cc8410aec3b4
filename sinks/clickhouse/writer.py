"""The ClickHouse sink: reads events, triggers and dead letters from Kafka and writes them in batches.

Offsets are committed only after the batch is in ClickHouse. When ClickHouse is down the sink keeps
retrying the same batch with backoff instead of moving on, so nothing read is lost; a batch written
twice (a crash between insert and commit) collapses on its natural key and deduplication token.

One bad message never holds up the others. A message no row can be made of, and a row ClickHouse refuses
because of what it holds (the batch is split until the refused rows are found), goes to the dead-letter
topic with the reason; the rest of the batch lands. A dead letter that cannot be stored itself is logged
and counted, never dead-lettered again (the sink reads that topic too).

The privacy topic is read in the same loop: an erasure request deletes instead of inserting (see
sinks/clickhouse/erasure.py), is retried the same way, and is acknowledged with an audit record before its offset
is committed. The erasures table is read before every batch, and again after it, so no sink - this one or
another sharing the partitions - writes back the rows of someone erased, even one erased mid-batch.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import logging
import struct
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from clickhouse_connect.driver.exceptions import DatabaseError, DataError, ProgrammingError

from schemas.connections import aiokafka_options
from schemas.limits import truncated
from schemas.privacy import AuditRecord, ErasureRequest, parse_erasure, person_hash
from schemas.settings import Settings
from schemas.triggers import DeadLetter
from sinks.clickhouse.erasure import erase_person, erasure_hashes, identities
from sinks.clickhouse.metrics import SinkMetrics
from sinks.clickhouse.rows import (
    CONSENT_CHANGES,
    DEAD_LETTERS,
    DELIVERIES,
    EVENTS,
    PERSON_COLUMN,
    PROFILE_SNAPSHOTS,
    SEGMENT_CHANGES,
    SUPPRESSIONS,
    TRIGGERS,
    RowOptions,
    TableSpec,
    Unusable,
    consent_change_row,
    dead_letter_row,
    delivery_row,
    event_row,
    letter_people,
    profile_snapshot_row,
    segment_change_row,
    suppression_row,
    trigger_row,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_BACKOFF_SECONDS = 30.0
# Erasures are read incrementally, from a little before the newest one seen: rows inserted at the same
# moment by several sinks can become visible out of erased_at order.
ERASURES_OVERLAP_MS = 60_000
# Batches with more messages or bytes than this are turned into rows in a thread: parsing and hashing 5000
# messages takes long enough to delay the web server and the consumer's heartbeats, and so does hashing the
# addresses in a few hostile dead letters (12 ms for one of 16 KB full of addresses).
ROWS_IN_THREAD_FROM = 64
BYTES_IN_THREAD_FROM = 16 * 1024
# Dead letters sent in a burst give the event loop back after this many sends (a send that finds room in
# the producer's buffer never yields), so 10k of them never hold it for long.
MESSAGES_PER_TURN = 200
# ClickHouse error codes that mean the rows themselves were refused (anything else is taken for the
# store being unavailable, and retried): parse and conversion failures, values out of range, constraints.
DATA_ERROR_CODES = frozenset({6, 26, 27, 38, 41, 53, 69, 70, 72, 117, 131, 190, 321, 349, 469})


class _Stopped(Exception):
    """Raised out of a retry loop once the sink is asked to stop: the batch stays uncommitted."""


@dataclass(frozen=True)
class Route:
    """How the messages of one topic become rows: the table, the row of a message, and who a row is about."""

    spec: TableSpec
    to_row: Callable[[Any], list[Any] | None]
    people: Callable[[list[Any]], list[str]]  # who a row is about, as stored


def routes_for(settings: Settings) -> dict[str, Route]:
    """The route of each topic the sink reads."""
    options = RowOptions.of(settings)

    def person_of(spec: TableSpec) -> Callable[[list[Any]], list[str]]:
        column = PERSON_COLUMN[spec.table]
        return lambda row: [row[column]] if row[column] else []

    return {
        settings.events_topic: Route(
            EVENTS,
            lambda m: event_row(m.value, m.topic, m.partition, m.offset, options, datetime.now(UTC)),
            person_of(EVENTS),
        ),
        settings.triggers_topic: Route(TRIGGERS, lambda m: trigger_row(m.value, options), person_of(TRIGGERS)),
        settings.dead_letter_topic: Route(DEAD_LETTERS, lambda m: dead_letter_row(m.value, options), letter_people),
        settings.suppressed_topic: Route(
            SUPPRESSIONS, lambda m: suppression_row(m.value, options), person_of(SUPPRESSIONS)
        ),
        settings.segments_topic: Route(
            SEGMENT_CHANGES, lambda m: segment_change_row(m.value, options), person_of(SEGMENT_CHANGES)
        ),
        settings.consents_topic: Route(
            CONSENT_CHANGES, lambda m: consent_change_row(m.value, options), person_of(CONSENT_CHANGES)
        ),
        # The ledger names no person: nothing of it is dropped or erased for one.
        settings.deliveries_topic: Route(DELIVERIES, lambda m: delivery_row(m.value, options), lambda row: []),
        settings.profiles_topic: Route(
            PROFILE_SNAPSHOTS, lambda m: profile_snapshot_row(m.value, m.key, options), person_of(PROFILE_SNAPSHOTS)
        ),
    }


@dataclass
class Built:
    """One partition's messages as rows: each kept row with its message, the erased ones dropped, the
    messages no row could be made of with the reason, and the people the kept rows are about."""

    kept: list[tuple[list[Any], Any]] = field(default_factory=list)
    dropped_as_erased: int = 0
    failed: list[tuple[Any, str]] = field(default_factory=list)
    people: set[str] = field(default_factory=set)


def build_rows(route: Route, messages: list[Any], erased: Collection[str], key: bytes) -> Built:
    """Pure (it may run in a thread): rows of the messages, none of a person whose hash is in `erased`."""
    built = Built()
    for message in messages:
        try:
            row = route.to_row(message)
        except Unusable as error:
            built.failed.append((message, str(error)))
            continue
        except Exception as error:  # whatever a message makes the code raise is that message's problem
            built.failed.append((message, f"row not built: {type(error).__name__}: {error}"))
            continue
        if row is None:
            continue
        # Found here, in the thread: a dead letter's people are read out of its value, 16 KB of JSON.
        people = route.people(row)
        if erased and any(person_hash(person, key) in erased for person in people):
            built.dropped_as_erased += 1
            continue
        built.kept.append((row, message))
        built.people.update(people)
    return built


def keep_startup_out_of_collections() -> None:
    """Leave what the process has made so far (modules, models, clients: about 100k objects) out of the
    garbage collector's full passes. A full pass runs in whichever thread allocates, the one building rows
    included, and holds the GIL throughout: with those objects in it, a batch of 10k events held the event
    loop 55-100 ms; without them 7-14 ms (bench/RESULTS.md). Objects that die later are still freed."""
    gc.collect()
    gc.freeze()


def in_thread(messages: list[Any]) -> bool:
    """Whether turning these messages into rows takes long enough to be done off the event loop."""
    if len(messages) >= ROWS_IN_THREAD_FROM:
        return True
    return sum(len(message.value or b"") for message in messages) >= BYTES_IN_THREAD_FROM


def columns_of(part: list[tuple[list[Any], Any]]) -> list[tuple[Any, ...]]:
    """The rows of a part as columns, as ClickHouse stores them: the client then writes each column as a
    whole instead of pivoting the rows itself."""
    return list(zip(*(row for row, _ in part), strict=True))


def token_of(part: list[tuple[list[Any], Any]]) -> str:
    """The insert's deduplication token: the same rows give the same token, so a part re-sent after a crash
    is recognised as already written (a batch read again in another shape is caught by the tables' natural
    keys instead)."""
    offsets: dict[tuple[str, int], list[int]] = defaultdict(list)
    for _, message in part:
        offsets[message.topic, message.partition].append(message.offset)
    described = ",".join(f"{t}/{p}/{min(found)}-{max(found)}" for (t, p), found in sorted(offsets.items()))
    return hashlib.sha256(f"{described}/{len(part)}".encode()).hexdigest()


def is_data_error(error: BaseException) -> bool:
    """Whether an insert failed because of the rows it carried (as opposed to the store being unreachable
    or unready, which is retried): a value the client cannot encode, or one the server refused."""
    if isinstance(error, DataError | ProgrammingError):
        return True
    if isinstance(error, DatabaseError):
        return getattr(error, "code", None) in DATA_ERROR_CODES
    return isinstance(error, TypeError | ValueError | AttributeError | OverflowError | struct.error)


@dataclass
class SinkStats:
    """What the sink has done since it started: rows, batches, erasures and failures."""

    rows_written: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    batches: int = 0
    insert_errors: int = 0
    last_error: str | None = None
    erasures: int = 0
    rows_dropped_as_erased: int = 0
    dead_lettered: int = 0  # messages this sink set aside on the dead-letter topic
    unstorable_letters: int = 0  # dead letters that could not be stored: logged, not sent again
    commit_failures: int = 0
    erased_after_insert: int = 0  # people erased by another sink while this one wrote their rows


class ClickHouseSink:
    """The sink: reads the topics and writes their rows to ClickHouse in batches, dropping erased people's."""

    def __init__(
        self, settings: Settings, client: Any, group_id: str | None = None, metrics: SinkMetrics | None = None
    ) -> None:
        self.settings = settings
        self.metrics = metrics or SinkMetrics()
        self.group_id = group_id or f"{settings.app_id}-sink"
        self.client = client
        self.routes = routes_for(settings)
        self.options = RowOptions.of(settings)
        self.stats = SinkStats()
        self._stopping = asyncio.Event()
        self._erased: set[str] = set()  # person hashes
        self._erased_since_ms = 0  # epoch ms: erasures are read from here on
        self._types: dict[str, list[str]] = {}  # table: the types of its columns, in the order written
        self._producer: AIOKafkaProducer | None = None
        self.consumer: AIOKafkaConsumer | None = None

    def stop(self) -> None:
        self._stopping.set()

    def assignment(self) -> set[TopicPartition]:
        """The partitions this sink holds now (empty before it has joined its group)."""
        return set(self.consumer.assignment()) if self.consumer is not None else set()

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(
            *self.routes,
            self.settings.privacy_topic,
            **aiokafka_options(self.settings),
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            client_id="nudgeflow-sink",
        )
        producer = AIOKafkaProducer(
            **aiokafka_options(self.settings), client_id="nudgeflow-sink-audit", acks="all", enable_idempotence=True
        )
        await consumer.start()
        await producer.start()
        self._producer = producer
        self.consumer = consumer
        keep_startup_out_of_collections()
        try:
            while not self._stopping.is_set():
                batch = await self._collect(consumer)
                if not batch:
                    continue
                await self._write(batch)
                await self._commit(consumer, {tp: messages[-1].offset + 1 for tp, messages in batch.items()})
        except _Stopped:
            log.info("sink stopped while retrying; the batch in hand stays uncommitted and is read again")
        finally:
            self._producer = None
            self.consumer = None
            await producer.stop()
            await consumer.stop()

    async def _collect(self, consumer: AIOKafkaConsumer) -> dict[TopicPartition, list[Any]]:
        """A batch: what arrives within `sink_batch_seconds` of its first record, up to `sink_batch_size`
        records or `sink_batch_bytes` (the fetch that crosses it included).

        Every insert costs ClickHouse a part and its materialized views a run, whatever its size: writing
        each trickle as it came kept a core busy at a few events a second, and inserts of 5000 rows cost
        nearly twice the CPU per row of inserts of 20,000 (bench/RESULTS.md, Speed: sink). Larger batches
        gain little more and make the collector's full passes over the batch's objects longer."""
        size, window = self.settings.sink_batch_size, self.settings.sink_batch_seconds
        batch: dict[TopicPartition, list[Any]] = await consumer.getmany(timeout_ms=int(window * 1000), max_records=size)
        count = sum(len(messages) for messages in batch.values())
        held = sum(len(m.value or b"") for messages in batch.values() for m in messages)
        closes = time.monotonic() + window
        while batch and count < size and held < self.settings.sink_batch_bytes and not self._stopping.is_set():
            left = closes - time.monotonic()
            if left <= 0:
                break
            more = await consumer.getmany(timeout_ms=max(1, int(left * 1000)), max_records=size - count)
            for tp, messages in more.items():
                batch.setdefault(tp, []).extend(messages)
                count += len(messages)
                held += sum(len(m.value or b"") for m in messages)
        return batch

    async def _commit(self, consumer: Any, offsets: dict[TopicPartition, int]) -> None:
        """Commit what is still ours. A partition taken away by a rebalance is read again by its new owner,
        which writes the same rows (they collapse); a failed commit is therefore logged, not fatal."""
        held = consumer.assignment()
        mine = {tp: offset for tp, offset in offsets.items() if tp in held}
        if not mine:
            return
        try:
            await consumer.commit(mine)
        except KafkaError as error:  # CommitFailedError, IllegalStateError after a rebalance, or the broker
            self.stats.commit_failures += 1
            self.metrics.commit_failures.inc()
            log.warning("offset commit failed (%s: %s); the batch will be read again", type(error).__name__, error)

    async def _write(self, batch: dict[TopicPartition, list[Any]]) -> None:
        await self._until_done("read erasures", self._refresh_erased)
        requests = [m for tp, messages in batch.items() if tp.topic == self.settings.privacy_topic for m in messages]
        written: set[str] = set()  # people whose rows this batch inserted
        # One insert per table, not per partition: each insert costs ClickHouse a part and a run of the views.
        by_topic: dict[str, list[Any]] = defaultdict(list)
        for tp, messages in batch.items():
            if tp.topic != self.settings.privacy_topic:
                by_topic[tp.topic].extend(messages)
        for topic, messages in by_topic.items():
            route = self.routes[topic]
            erased = frozenset(self._erased)
            if in_thread(messages):
                built = await asyncio.to_thread(build_rows, route, messages, erased, self.settings.hash_key)
            else:
                built = build_rows(route, messages, erased, self.settings.hash_key)
            self.stats.rows_dropped_as_erased += built.dropped_as_erased
            self.metrics.rows_dropped_as_erased.labels(route.spec.table).inc(built.dropped_as_erased)
            if built.failed:
                await self._reject(built.failed, route.spec.table)
            if built.kept:
                await self._insert(route.spec, built.kept)
                written |= built.people
        if written:
            await self._erase_late(written)
        # Erasures last: rows of the same batch that are about the person are in, and go with the rest.
        for message in requests:
            await self._erase(message)

    async def _refresh_erased(self) -> set[str]:
        """Read the erasures recorded since the last read (by any sink); returns the hashes new to this one."""
        query = (
            "SELECT person_hash, toUnixTimestamp64Milli(erased_at) FROM erasures "
            "WHERE erased_at >= fromUnixTimestamp64Milli({since:Int64}, 'UTC')"
        )
        parameters = {"since": max(self._erased_since_ms - ERASURES_OVERLAP_MS, 0)}
        rows = await asyncio.to_thread(lambda: self.client.query(query, parameters=parameters).result_rows)
        new = {str(hashed) for hashed, _ in rows} - self._erased
        self._erased |= new
        if rows:
            self._erased_since_ms = max(self._erased_since_ms, max(int(at) for _, at in rows))
        return new

    async def _erase_late(self, written: set[str]) -> None:
        """Erase again anyone erased (by another sink) between this batch's erasure check and its insert:
        that sink recorded the erasure before deleting, so this read after the insert cannot miss it."""
        new = await self._until_done("read erasures", self._refresh_erased)
        if not new:
            return
        for person in sorted(p for p in written if self._hash(p) in new):
            await self._until_done("erase", self._eraser(person))
            self.stats.erased_after_insert += 1
            log.info("erased rows written while another sink erased person %s", self._hash(person)[:12])

    def _eraser(self, person_id: str) -> Callable[[], Awaitable[dict[str, int]]]:
        return lambda: asyncio.to_thread(erase_person, self.client, person_id, self.options)

    def _hash(self, person: str) -> str:
        return person_hash(person, self.settings.hash_key)

    async def _reject(self, failed: list[tuple[Any, str]], table: str) -> None:
        """Set messages aside on the dead-letter topic with their reasons; a dead letter is only logged."""
        if in_thread([message for message, _ in failed]):
            letters, unstorable = await asyncio.to_thread(self._letters, failed)
        else:
            letters, unstorable = self._letters(failed)
        self.stats.unstorable_letters += unstorable
        self.metrics.unstorable_letters.inc(unstorable)
        if not letters:
            return
        # Sent again whole if any fails: copies collapse on (topic, partition, offset) in dead_letters.
        await self._until_done("dead letters", lambda: self._send_letters(letters))
        self.stats.dead_lettered += len(letters)
        self.metrics.dead_lettered.labels(table).inc(len(letters))

    def _letters(self, failed: list[tuple[Any, str]]) -> tuple[list[tuple[bytes | None, bytes]], int]:
        """The dead letters of failed messages as (key, value) to send, logged; and how many failed messages
        were dead letters themselves, which are only logged. It may run in a thread: a letter of 16 KB
        takes 0.2 ms to build, log and encode, and a burst brings thousands."""
        limits = self.settings.limits
        letters: list[tuple[bytes | None, bytes]] = []
        unstorable = 0
        for message, reason in failed:
            why = truncated(reason.encode(), limits).decode(errors="replace")
            where = f"{message.topic}/{message.partition}@{message.offset}"
            if message.topic == self.settings.dead_letter_topic:
                unstorable += 1
                log.error("dead letter %s cannot be stored (%s); dropped, not dead-lettered again", where, why)
                continue
            key = message.key.decode(errors="replace") if message.key else None
            stored_key = self.options.person(key) if key else None  # never an address or a number as a key
            letter = DeadLetter(
                reason=why,
                topic=message.topic,
                partition=message.partition,
                offset=message.offset,
                key=stored_key,
                value=truncated(message.value or b"", limits).decode(errors="replace"),
                received_at=datetime.now(UTC),
            )
            log.warning("dead letter %s: %s", where, why)
            letters.append((stored_key.encode() if stored_key else None, letter.model_dump_json().encode()))
        return letters, unstorable

    async def _send_letters(self, letters: list[tuple[bytes | None, bytes]]) -> None:
        assert self._producer is not None, "dead letters are sent while the sink runs"
        sent = []
        for number, (key, value) in enumerate(letters, 1):
            if number % MESSAGES_PER_TURN == 0:
                await asyncio.sleep(0)  # a send that finds room in the producer's buffer never yields
            sent.append(await self._producer.send(self.settings.dead_letter_topic, key=key, value=value))
        await asyncio.gather(*sent)

    async def _erase(self, message: Any) -> None:
        try:
            if len(message.value or b"") > self.settings.limits.event_bytes:
                raise ValueError(f"{len(message.value)} bytes; at most {self.settings.limits.event_bytes}")
            request = parse_erasure(message.value, self.settings.limits)
        except ValueError as error:
            # Nothing can be erased without a person; saying so in the log is all that is left to do.
            log.error("privacy message %s/%d/%d ignored: %s", message.topic, message.partition, message.offset, error)
            return
        hashes = erasure_hashes(request.person_id, self.options)
        self._erased.update(hashes)  # from now on this sink drops the person's rows, even mid-erasure
        # Recorded before anything is deleted: a sink that checks after its insert then sees it (_erase_late).
        await self._until_done("record erasure", lambda: self._record_erasure(request, hashes))
        deleted = await self._until_done("erase", self._eraser(request.person_id))
        await self._until_done("forget scores", lambda: self._forget_scores(request.person_id))
        self.stats.erasures += 1
        hashed = self._hash(request.person_id)
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

    async def _forget_scores(self, person_id: str) -> None:
        """A tombstone on the compacted scores topic, under every form of the id a score may be keyed by, so
        compaction drops the person's scores and the worker forgets them (schemas/scores.py)."""
        assert self._producer is not None, "tombstones are sent while the sink runs"
        for identity in identities(person_id, self.options):
            await self._producer.send_and_wait(self.settings.scores_topic, key=identity.encode(), value=None)

    async def _record_erasure(self, request: ErasureRequest, hashes: list[str]) -> None:
        await asyncio.to_thread(
            self.client.insert,
            "erasures",
            [[hashed, request.request_id, request.requested_at] for hashed in hashes],
            column_names=["person_hash", "request_id", "requested_at"],
        )

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
                backoff = await self._backoff(backoff)

    async def _backoff(self, seconds: float) -> float:
        """Wait before the next attempt (cut short by stop()); returns the next wait."""
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except TimeoutError:
            return min(seconds * 2, MAX_BACKOFF_SECONDS)
        raise _Stopped

    def _column_types(self, spec: TableSpec) -> list[str]:
        """The ClickHouse types of the table's columns, asked once: the client would ask before every insert."""
        if spec.table not in self._types:
            described = {
                str(name): str(kind) for name, kind, *_ in self.client.query(f"DESCRIBE TABLE {spec.table}").result_rows
            }
            self._types[spec.table] = [described[column] for column in spec.columns]
        return self._types[spec.table]

    def _insert_columns(self, spec: TableSpec, part: list[tuple[list[Any], Any]]) -> None:
        """One insert of the part (in a thread): its rows as columns, the same rows giving the same token."""
        self.client.insert(
            spec.table,
            columns_of(part),
            column_names=list(spec.columns),
            column_type_names=self._column_types(spec),
            column_oriented=True,
            settings={"insert_deduplication_token": token_of(part)},
        )

    async def _insert(self, spec: TableSpec, part: list[tuple[list[Any], Any]]) -> None:
        """Insert the rows, retried while ClickHouse is unavailable. Rows it refuses are found by halving
        the part (each half with a token of its own) and dead-lettered; the rest is written."""
        backoff = 0.5
        while True:
            started = time.perf_counter()
            try:
                await asyncio.to_thread(self._insert_columns, spec, part)
            except Exception as error:  # classified below: refused rows are split out, the rest retried
                self.stats.insert_errors += 1
                self.metrics.insert_errors.labels(spec.table).inc()
                self.stats.last_error = f"{type(error).__name__}: {error}"
                if is_data_error(error):
                    if len(part) == 1:
                        reason = f"refused by ClickHouse ({spec.table}): {self.stats.last_error}"
                        await self._reject([(part[0][1], reason)], spec.table)
                        return
                    middle = len(part) // 2
                    await self._insert(spec, part[:middle])
                    await self._insert(spec, part[middle:])
                    return
                log.warning("insert into %s failed (%s); retrying in %.1fs", spec.table, self.stats.last_error, backoff)
                backoff = await self._backoff(backoff)
                continue
            elapsed = time.perf_counter() - started
            self.stats.batches += 1
            self.stats.rows_written[spec.table] += len(part)
            self.metrics.rows_written.labels(spec.table).inc(len(part))
            self.metrics.batch_size.labels(spec.table).observe(len(part))
            self.metrics.insert_latency.labels(spec.table).observe(elapsed)
            log.debug("wrote %d rows into %s in %.3fs", len(part), spec.table, elapsed)
            return
