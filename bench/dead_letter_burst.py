"""The sink's event loop during a burst of hostile dead letters: its longest block, beside a baseline.

A ticker task asks to wake every few milliseconds; how late it wakes is how long something held the loop.
Measured in one run, on one sink writing into chDB through its real code path (`ClickHouseSink._write`, as
bench/sink_throughput.py does; Kafka is left out, the dead letters the sink sets aside go to an in-memory
producer):

- idle: the loop with nothing else to do (the machine's own noise);
- events: ordinary events in batches of `sink_batch_size` (the sink's everyday work);
- letters, burst: hostile dead letters on the dead-letter topic, in batches as the sink collects them
  (`sink_batch_size` messages or `sink_batch_bytes`);
- letters, trickle: the same letters arriving a few at a time (batches of --trickle);
- rejects: hostile messages on the triggers topic, which no row can be made of: each becomes a dead letter.

Hostile letters are built to cost the most per byte: values cut to dead_letter_bytes that are full of email
addresses (each one hashed), of dots after an '@' (the scan's worst case), JSON naming emails and ids.

Run: .venv/bin/python bench/dead_letter_burst.py [--letters 10000] [--trickle 50]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
from aiokafka import TopicPartition

from schemas.settings import Settings
from schemas.triggers import DeadLetter
from sinks.clickhouse.client import connect
from sinks.clickhouse.schema import apply_migrations
from sinks.clickhouse.writer import ClickHouseSink, keep_startup_out_of_collections

TICK_SECONDS = 0.005


class MemoryProducer:
    """What the sink asks of its producer, kept in memory: every send is acknowledged at once."""

    def __init__(self) -> None:
        self.sent = 0

    async def send(self, topic: str, key: bytes | None = None, value: bytes | None = None) -> asyncio.Future[None]:
        self.sent += 1
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def send_and_wait(self, topic: str, key: bytes | None = None, value: bytes | None = None) -> None:
        self.sent += 1


def hostile_values(count: int, size: int) -> list[str]:
    """Values of about `size` characters, each of a shape that costs the text scan or the hashing most."""
    shapes = [
        lambda n: f"a{n}@b.cd " * (size // (8 + len(str(n)))),  # an address every few characters
        lambda n: f"x{n}@" + ("." * 254 + "a@") * (size // 256),  # dots after every '@'
        lambda n: orjson.dumps({f"k{i}": f"u{n}.{i}@shop.example" for i in range(size // 28)}).decode(),
        lambda n: orjson.dumps([{"email": f"e{n}.{i}@ex.io", "userId": f"u{i}"} for i in range(size // 42)]).decode(),
        lambda n: ("a" * 63 + "@") * (size // 64),  # the longest local parts, no domain
    ]
    return [shapes[n % len(shapes)](n)[:size] for n in range(count)]


def letter_messages(settings: Settings, values: list[str], first_offset: int) -> list[Any]:
    now = datetime.now(UTC)
    return [
        SimpleNamespace(
            topic=settings.dead_letter_topic,
            partition=0,
            offset=first_offset + n,
            key=f"ana{n}@example.com".encode(),
            value=DeadLetter(
                reason=f"invalid event: {value[:200]}",
                topic=settings.events_topic,
                partition=n % 8,
                offset=n,
                key=f"ana{n}@example.com",
                value=value,
                received_at=now,
            )
            .model_dump_json()
            .encode(),
        )
        for n, value in enumerate(values)
    ]


def reject_messages(settings: Settings, values: list[str]) -> list[Any]:
    # Not JSON objects: no trigger row can be made of them, so each one is dead-lettered by the sink.
    return [
        SimpleNamespace(
            topic=settings.triggers_topic, partition=0, offset=n, key=f"ben{n}@example.com".encode(), value=v.encode()
        )
        for n, v in enumerate(values)
    ]


def event_messages(settings: Settings, count: int) -> list[Any]:
    now = datetime.now(UTC)
    return [
        SimpleNamespace(
            topic=settings.events_topic,
            partition=0,
            offset=n,
            key=f"p{n % 5000}".encode(),
            value=orjson.dumps(
                {
                    "type": "track",
                    "event": "Product Viewed",
                    "userId": f"p{n % 5000}",
                    "messageId": str(uuid.UUID(int=n)),
                    "timestamp": (now - timedelta(seconds=n)).isoformat(),
                    "properties": {"product_id": f"sku-{n % 300}", "price": 9.5, "email": f"p{n}@example.com"},
                }
            ),
        )
        for n in range(count)
    ]


async def longest_block(work: Callable[[], Awaitable[None]]) -> tuple[float, float, float]:
    """Seconds the work took, and the longest and the 99th-percentile lateness of a ticker meanwhile."""
    late: list[float] = []
    running = True

    async def ticker() -> None:
        loop = asyncio.get_running_loop()
        while running:
            asked = loop.time()
            await asyncio.sleep(TICK_SECONDS)
            late.append(loop.time() - asked - TICK_SECONDS)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(TICK_SECONDS * 2)
    started = time.perf_counter()
    await work()
    seconds = time.perf_counter() - started
    running = False
    await task
    late.sort()
    return seconds, late[-1], late[int(0.99 * (len(late) - 1))]


async def through_sink(sink: ClickHouseSink, messages: list[Any], batch: int) -> None:
    """The messages through the sink in batches as it collects them: `batch` messages or sink_batch_bytes."""
    part: list[Any] = []
    held = 0
    for message in [*messages, None]:
        if message is None or len(part) == batch or held >= sink.settings.sink_batch_bytes:
            if part:
                await sink._write({TopicPartition(part[0].topic, 0): part})
            part, held = [], 0
        if message is not None:
            part.append(message)
            held += len(message.value)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--letters", type=int, default=10_000, help="hostile dead letters, and as many rejects")
    parser.add_argument("--trickle", type=int, default=50, help="letters per batch when they trickle in")
    parser.add_argument("--events", type=int, default=10_000, help="ordinary events for the baseline")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        # The sink logs every letter it sets aside, as it does in production; to a file, not the terminal.
        logging.basicConfig(filename=Path(directory) / "sink.log", level=logging.WARNING)
        settings = Settings(demo=True, clickhouse_path=Path(directory), clickhouse_database="bench_letters")
        client = connect(settings)
        apply_migrations(client)
        sink = ClickHouseSink(settings, client)
        producer = MemoryProducer()
        sink._producer = producer  # type: ignore[assignment]
        size = settings.limits.dead_letter_bytes
        values = hostile_values(arguments.letters, size)
        burst = letter_messages(settings, values, 0)
        trickle = letter_messages(settings, values[: arguments.letters // 10], arguments.letters)
        rejects = reject_messages(settings, values)
        events = event_messages(settings, arguments.events)
        batch = settings.sink_batch_size
        keep_startup_out_of_collections()  # as ClickHouseSink.run does once started

        async def measure() -> list[tuple[str, int, tuple[float, float, float]]]:
            return [
                ("idle", 0, await longest_block(lambda: asyncio.sleep(2))),
                ("events", len(events), await longest_block(lambda: through_sink(sink, events, batch))),
                ("letters, burst", len(burst), await longest_block(lambda: through_sink(sink, burst, batch))),
                (
                    f"letters, trickle of {arguments.trickle}",
                    len(trickle),
                    await longest_block(lambda: through_sink(sink, trickle, arguments.trickle)),
                ),
                (
                    "rejects (triggers no row is made of)",
                    len(rejects),
                    await longest_block(lambda: through_sink(sink, rejects, batch)),
                ),
            ]

        results = asyncio.run(measure())
        stored = client.query("SELECT count() FROM dead_letters").result_rows[0][0]
        print(f"\nthe sink's event loop, ticker every {TICK_SECONDS * 1000:.0f} ms; letters of {size} characters")
        print(f"{'work':<40}{'messages':>10}{'seconds':>10}{'msg/s':>10}{'longest block ms':>18}{'p99 ms':>9}")
        for label, count, (seconds, longest, p99) in results:
            rate = f"{count / seconds:,.0f}" if count else "-"
            print(f"{label:<40}{count:>10}{seconds:>10.2f}{rate:>10}{longest * 1000:>18.1f}{p99 * 1000:>9.1f}")
        print(f"dead letters stored {stored}, sent by the sink {producer.sent}, sink stats {sink.stats.dead_lettered}")
        client.close()


if __name__ == "__main__":
    main()
