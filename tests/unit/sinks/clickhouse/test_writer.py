"""The sink's decisions that need neither a broker nor ClickHouse: which failures are the data's, what a
message that breaks row building becomes, and what a failed offset commit does."""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaConnectionError
from clickhouse_connect.driver.exceptions import DatabaseError, DataError, OperationalError

from schemas.privacy import person_hash
from schemas.settings import Settings
from sinks.clickhouse.rows import EVENTS, Unusable
from sinks.clickhouse.writer import (
    BYTES_IN_THREAD_FROM,
    MESSAGES_PER_TURN,
    ROWS_IN_THREAD_FROM,
    ClickHouseSink,
    Route,
    build_rows,
    in_thread,
    is_data_error,
)

KEY = b"unit-test-key"


@dataclass
class Message:
    value: bytes
    topic: str = "events"
    partition: int = 0
    offset: int = 0
    key: bytes | None = None


def route(to_row: Any) -> Route:
    return Route(EVENTS, to_row, lambda row: [row[1]])


def test_whatever_row_building_raises_is_that_message_s_alone() -> None:
    def to_row(message: Message) -> list[Any] | None:
        if message.value == b"deep":
            raise RecursionError("maximum recursion depth exceeded")
        if message.value == b"unusable":
            raise Unusable("over a limit: event is 99999 bytes; at most 32768")
        if message.value == b"nothing":
            return None
        return [message.value.decode(), message.value.decode()]

    messages = [Message(value, offset=n) for n, value in enumerate([b"a", b"deep", b"b", b"unusable", b"nothing"])]
    built = build_rows(route(to_row), messages, frozenset(), KEY)
    assert [row for row, _ in built.kept] == [["a", "a"], ["b", "b"]]
    assert [(message.offset, reason) for message, reason in built.failed] == [
        (1, "row not built: RecursionError: maximum recursion depth exceeded"),
        (3, "over a limit: event is 99999 bytes; at most 32768"),
    ]


def test_rows_of_erased_people_are_dropped_while_rows_are_built() -> None:
    messages = [Message(b"ana"), Message(b"ben")]
    built = build_rows(route(lambda m: [m.value.decode()] * 2), messages, {person_hash("ana", KEY)}, KEY)
    assert ([row for row, _ in built.kept], built.dropped_as_erased) == ([["ben", "ben"]], 1)


def test_only_failures_caused_by_the_rows_are_taken_for_bad_data() -> None:
    refused = DatabaseError("Constraint `c` is violated. (VIOLATED_CONSTRAINT)", code=469)
    missing = DatabaseError("Table x.events does not exist. (UNKNOWN_TABLE)", code=60)
    full = DatabaseError("Memory limit exceeded. (MEMORY_LIMIT_EXCEEDED)", code=241)
    for data in (refused, DataError("Invalid None value in non-Nullable column"), struct.error("out of range")):
        assert is_data_error(data), data
    for data in (UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"), OverflowError("big")):
        assert is_data_error(data), data
    for outage in (missing, full, OperationalError("connection refused"), ConnectionError(), TimeoutError(), OSError()):
        assert not is_data_error(outage), outage


class Refusing:
    """An AIOKafkaConsumer's commit as it behaves after a rebalance (only the two calls the sink makes)."""

    def __init__(self, error: Exception, held: set[TopicPartition]) -> None:
        self.error = error
        self.held = held
        self.asked: list[dict[TopicPartition, int]] = []

    def assignment(self) -> set[TopicPartition]:
        return self.held

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.asked.append(offsets)
        raise self.error


@pytest.mark.parametrize(
    "error",
    [CommitFailedError("group rebalanced"), IllegalStateError("not assigned"), KafkaConnectionError("broker gone")],
)
async def test_a_failed_commit_is_logged_and_counted_and_the_sink_goes_on(error: Exception) -> None:
    sink = ClickHouseSink(Settings(demo=True), client=None)
    mine, taken = TopicPartition("events", 0), TopicPartition("events", 1)
    consumer = Refusing(error, {mine})
    await sink._commit(consumer, {mine: 5, taken: 9})
    await sink._commit(consumer, {taken: 10})  # nothing of ours left to commit: not even tried
    assert consumer.asked == [{mine: 5}]  # a partition taken away by a rebalance is left to its new owner
    assert sink.stats.commit_failures == 1
    assert sink.metrics.commit_failures._value.get() == 1


class Acknowledging:
    """A producer whose every send finds room in its buffer, as aiokafka's does: it never yields."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes | None, bytes]] = []

    async def send(self, topic: str, key: bytes | None = None, value: bytes = b"") -> asyncio.Future[None]:
        self.sent.append((key, value))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


async def test_a_burst_of_rejects_is_dead_lettered_without_holding_the_event_loop() -> None:
    sink = ClickHouseSink(Settings(demo=True), client=None)
    producer = Acknowledging()
    sink._producer = producer  # type: ignore[assignment]
    failed = [(Message(b"x@" + b"." * 254 + b"a" * 2000, topic="triggers", offset=n), "not JSON") for n in range(2000)]
    turns = 0

    async def other_work() -> None:
        nonlocal turns
        while True:
            await asyncio.sleep(0)
            turns += 1

    other = asyncio.create_task(other_work())
    await asyncio.sleep(0)
    before = turns
    await sink._reject(failed, "triggers")
    other.cancel()
    assert len(producer.sent) == 2000 and sink.stats.dead_lettered == 2000
    assert turns - before >= 2000 // MESSAGES_PER_TURN  # the loop ran other work all along the burst


def test_a_few_large_messages_are_turned_into_rows_off_the_event_loop() -> None:
    assert not in_thread([Message(b"x" * 100) for _ in range(ROWS_IN_THREAD_FROM - 1)])
    assert in_thread([Message(b"x" * 100) for _ in range(ROWS_IN_THREAD_FROM)])
    assert in_thread([Message(b"x" * (BYTES_IN_THREAD_FROM // 2)) for _ in range(2)])  # hostile dead letters
