"""Sink write throughput into chDB beside a plain insert, and dashboard query latency over generated events.

The sink's figure is its whole write path (`ClickHouseSink._write`: rows built from the messages, erasures
checked, inserts with the materialized views on); its inserts alone (rows built beforehand, through
`ClickHouseSink._insert`) are shown beside it, to tell row building from writing. Each is the best of
--repeats runs on fresh offsets (the same offsets would give the same deduplication tokens, and ClickHouse
would skip the inserts), with the CPU time of the whole process (chDB's threads included) beside it.

Run: .venv/bin/python bench/sink_throughput.py [--rows 50000] [--events 10000000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
from aiokafka import TopicPartition

from schemas.settings import Settings
from sinks.analytics import queries
from sinks.analytics.attribution import Model
from sinks.clickhouse.client import connect
from sinks.clickhouse.rows import EVENTS, RowOptions, event_row
from sinks.clickhouse.schema import apply_migrations
from sinks.clickhouse.writer import ClickHouseSink, build_rows


def messages(count: int, now: datetime, first_offset: int = 0) -> list[Any]:
    names = ("Product Viewed", "Product Added", "Checkout Started")
    return [
        SimpleNamespace(
            topic="events",
            partition=0,
            offset=first_offset + n,
            key=f"p{n % 5000}".encode(),
            value=orjson.dumps(
                {
                    "type": "track",
                    "event": names[n % 3],
                    "userId": f"p{n % 5000}",
                    "messageId": str(uuid.UUID(int=n)),
                    "timestamp": (now - timedelta(seconds=n)).isoformat(),
                    "properties": {"product_id": f"sku-{n % 300}", "price": 9.5},
                }
            ),
        )
        for n in range(count)
    ]


async def sink_path(client: Any, settings: Settings, batch: list[Any]) -> tuple[float, float]:
    """Seconds and CPU seconds of the sink's whole write path over the batch, in batches of sink_batch_size."""
    sink = ClickHouseSink(settings, client)
    started, cpu = time.perf_counter(), time.process_time()
    for start in range(0, len(batch), settings.sink_batch_size):
        chunk = batch[start : start + settings.sink_batch_size]
        await sink._write({TopicPartition("events", 0): chunk})
    return time.perf_counter() - started, time.process_time() - cpu


async def sink_inserts(client: Any, settings: Settings, batch: list[Any]) -> tuple[float, float]:
    """The same, rows built beforehand: the sink's inserts alone."""
    sink = ClickHouseSink(settings, client)
    route = sink.routes[settings.events_topic]
    size = settings.sink_batch_size
    parts = [
        build_rows(route, batch[s : s + size], frozenset(), settings.hash_key).kept for s in range(0, len(batch), size)
    ]
    started, cpu = time.perf_counter(), time.process_time()
    for part in parts:
        await sink._insert(EVENTS, part)
    return time.perf_counter() - started, time.process_time() - cpu


def best(runs: list[tuple[float, float]]) -> tuple[float, float]:
    return min(runs)


GENERATE = """
INSERT INTO events (message_id, person_id, type, event, timestamp, received_at, properties, context, topic,
                    partition, offset)
SELECT toString(number), concat('g', toString(number % 200000)), 'track',
       ['Product Viewed', 'Product Added', 'Checkout Started', 'Order Completed', 'Email Delivered',
        'Email Opened', 'Email Clicked'][1 + number % 7],
       now64(3, 'UTC') - toIntervalSecond(number % (30 * 86400)), NULL,
       if(number % 7 = 3, concat('{{"order_id":"o', toString(number), '","revenue":', toString(number % 200), '}}'),
          if(number % 7 >= 4, concat('{{"trigger_id":"t', toString(number % {triggers}), '"}}'), '{{}}')),
       '{{}}', 'gen', 0, number
FROM numbers({events})
"""

TRIGGERS = """
INSERT INTO triggers (trigger_id, rule, person_id, channel, template_id, due_at, fired_at, variant, context)
SELECT concat('t', toString(number)), ['cart_abandonment', 'browse_abandonment'][1 + number % 2],
       concat('g', toString(number % 200000)), 'email', 'tpl',
       now64(3, 'UTC') - toIntervalSecond(number % (30 * 86400)),
       now64(3, 'UTC') - toIntervalSecond(number % (30 * 86400)), ['control', 'b'][1 + intDiv(number, 2) % 2], '{{}}'
FROM numbers({triggers})
"""


def timed(label: str, action: Any) -> tuple[str, float]:
    started = time.perf_counter()
    action()
    return label, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=50_000, help="rows through the sink path and the plain insert")
    parser.add_argument("--events", type=int, default=10_000_000, help="generated events for query latency")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each write path; the best is shown")
    arguments = parser.parse_args()
    now = datetime.now(UTC)
    with tempfile.TemporaryDirectory() as directory:
        settings = Settings(demo=True, clickhouse_path=Path(directory), clickhouse_database="bench_sink")
        client = connect(settings)
        apply_migrations(client)
        client.command("CREATE DATABASE IF NOT EXISTS bench_plain")
        client.command("CREATE TABLE bench_plain.events AS bench_sink.events")  # same table, no views
        options = RowOptions.of(settings)
        runs: dict[str, list[tuple[float, float]]] = {"sink": [], "inserts": [], "plain": []}
        for repeat in range(arguments.repeats):
            # Fresh offsets each time, and the three paths taking turns, so the machine's load falls on all.
            batch = messages(arguments.rows, now, 3 * repeat * arguments.rows)
            runs["sink"].append(asyncio.run(sink_path(client, settings, batch)))
            batch = messages(arguments.rows, now, (3 * repeat + 1) * arguments.rows)
            runs["inserts"].append(asyncio.run(sink_inserts(client, settings, batch)))
            batch = messages(arguments.rows, now, (3 * repeat + 2) * arguments.rows)
            rows = [event_row(m.value, m.topic, m.partition, m.offset, options) for m in batch]
            started, cpu = time.perf_counter(), time.process_time()
            client.insert("bench_plain.events", rows, column_names=list(EVENTS.columns))
            runs["plain"].append((time.perf_counter() - started, time.process_time() - cpu))

        print(f"\nwrite throughput, {arguments.rows} events into chDB, best of {arguments.repeats}")
        print(f"{'path':<56}{'seconds':>9}{'rows/s':>10}{'CPU s':>8}{'rows/CPU s':>12}")
        for label, (seconds, cpu) in (
            ("sink (rows.py + batched inserts, views on)", best(runs["sink"])),
            ("  its inserts alone (rows built beforehand, views on)", best(runs["inserts"])),
            ("one plain insert (pre-built rows, no views)", best(runs["plain"])),
        ):
            print(
                f"{label:<56}{seconds:>9.2f}{arguments.rows / seconds:>10,.0f}{cpu:>8.2f}{arguments.rows / cpu:>12,.0f}"
            )

        settings = Settings(demo=True, clickhouse_path=Path(directory), clickhouse_database="bench_queries")
        client.command("CREATE DATABASE IF NOT EXISTS bench_queries")
        client.command("USE bench_queries")
        apply_migrations(client)
        triggers = max(1, arguments.events // 50)
        generated = [
            timed("generate triggers", lambda: client.command(TRIGGERS.format(triggers=triggers))),
            timed(
                "generate events (views fill rollups)",
                lambda: client.command(GENERATE.format(events=arguments.events, triggers=triggers)),
            ),
        ]
        period = queries.Period(now - timedelta(days=30), now + timedelta(minutes=1))
        latencies = [
            timed("rates per day (rollups)", lambda: queries.daily_rates(client, period)),
            timed("funnel (rollup)", lambda: queries.funnel(client, period)),
            timed("suppressions by reason (rollup)", lambda: queries.suppressions(client, period)),
            timed("active people per hour (rollup)", lambda: queries.active_people_hourly(client, period)),
            timed("per rule and variant (FINAL + join)", lambda: queries.rule_report(client, period)),
            timed("attribution linear", lambda: queries.attribution(client, period, Model.LINEAR)),
            timed("lifetime value per cohort", lambda: queries.cohort_lifetime_value(client)),
            timed("churn risk", lambda: queries.churn_risk(client, now=now)),
        ]
        print(f"\ndashboard queries over {arguments.events:,} generated events, {triggers:,} triggers")
        print(f"{'step':<52}{'seconds':>10}")
        for label, seconds in generated + latencies:
            print(f"{label:<52}{seconds:>10.3f}")
        client.close()


if __name__ == "__main__":
    main()
