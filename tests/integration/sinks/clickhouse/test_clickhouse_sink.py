"""The whole pipeline into ClickHouse (embedded chDB): worker and sink on the real broker."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer

from schemas.settings import Settings
from sinks.analytics.queries import table_counts, triggers_by_rule
from sinks.clickhouse.writer import ClickHouseSink
from streams.timers import utc_now
from tests.integration.conftest import WorkerProcess
from tests.integration.test_worker import event, known, send, with_rules

pytestmark = pytest.mark.integration


@pytest.fixture
def sink_settings(settings: Settings, tmp_path: Path, chdb_path: Path) -> Settings:
    return with_rules(settings, tmp_path, delay="3s").model_copy(update={"clickhouse_path": chdb_path})


async def sink_until(sink: ClickHouseSink, client: Any, expected: dict[str, int], within: float = 90) -> dict[str, int]:
    """Run the sink until the tables hold the expected counts (or time is up); return the last counts."""
    task = asyncio.create_task(sink.run())
    counts: dict[str, int] = {}
    deadline = time.monotonic() + within
    try:
        while time.monotonic() < deadline and not task.done():
            await asyncio.sleep(0.5)
            counts = await asyncio.to_thread(table_counts, client)
            if counts == expected:
                break
    finally:
        sink.stop()
        await task
    return counts


async def test_events_triggers_and_dead_letters_land_in_clickhouse_once_even_when_replayed(
    sink_settings: Settings, clickhouse: Any, producer: KafkaProducer, tmp_path: Path
) -> None:
    settings = sink_settings
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        now = utc_now()
        known(producer, settings, "ana", "ben")
        send(producer, settings, "ana", event("Product Viewed", "ana", now, product_id="sku-1"))
        send(producer, settings, "ana", event("Product Added", "ana", now, product_id="sku-1", price=20.0))
        send(producer, settings, "ben", event("Product Added", "ben", now, product_id="sku-2", cart_id="b"))
        send(producer, settings, "ben", event("Order Completed", "ben", now, order_id="o1", cart_id="b", revenue=5))
        send(producer, settings, "ben", b"definitely not json")
        expected = {"events": 6, "triggers": 1, "dead_letters": 1}
        counts = await sink_until(ClickHouseSink(settings, clickhouse), clickhouse, expected)
        assert counts == expected, worker.log()
    finally:
        worker.stop()
    assert triggers_by_rule(clickhouse) == {"cart_abandonment": 1}
    people = clickhouse.query("SELECT person_id, count() FROM events FINAL GROUP BY person_id ORDER BY 1").result_rows
    assert people == [("ana", 3), ("ben", 3)]
    reason = clickhouse.query("SELECT reason FROM dead_letters").result_rows[0][0]
    assert reason.startswith("not JSON")

    # A second sink reading everything again (a replay, or a crash before commit) adds no rows.
    replay = ClickHouseSink(settings, clickhouse, group_id=f"{settings.app_id}-replay")
    assert await sink_until(replay, clickhouse, expected={}, within=8) == expected
    assert replay.stats.rows_written["events"] == 6  # it did write them again; they collapsed
