"""`nudgeflow erase` and `nudgeflow export` as an operator runs them, with the sink up and the worker down."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaProducer

from schemas.privacy import ErasureRequest
from schemas.settings import Settings
from sinks.analytics.web import build_web_app, start_web
from sinks.clickhouse.writer import ClickHouseSink
from tests.integration.conftest import REPO, free_port, read_topic, settings_environment
from tests.integration.sinks.clickhouse.test_privacy import ANA, BEN, produce_person, rows_of, sink_while

pytestmark = pytest.mark.integration


@pytest.fixture
def sink_settings(settings: Settings, chdb_path: Path) -> Settings:
    return settings.model_copy(update={"clickhouse_path": chdb_path, "sink_web_port": free_port()})


async def nudgeflow(settings: Settings, *arguments: str) -> subprocess.CompletedProcess[str]:
    environment = {
        **settings_environment(settings),
        "NUDGEFLOW_SINK_WEB_PORT": str(settings.sink_web_port),
        "NUDGEFLOW_WORKER_WEB_PORT": str(free_port()),  # nothing listens there: the worker is down
    }
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "streams.cli", *arguments],
        env=environment,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_erase_then_export_shows_nothing_left_in_clickhouse_and_names_the_missing_worker(
    sink_settings: Settings, clickhouse: Any, producer: KafkaProducer
) -> None:
    settings = sink_settings
    now = datetime.now(UTC)
    produce_person(producer, settings, ANA, now)
    produce_person(producer, settings, BEN, now)
    sink = ClickHouseSink(settings, clickhouse)
    runner = await start_web(build_web_app(clickhouse, sink.metrics, settings), "127.0.0.1", settings.sink_web_port)
    try:
        await sink_while(sink, lambda: "profile_snapshots" in rows_of(clickhouse, ANA))
        before = orjson.loads((await nudgeflow(settings, "export", ANA)).stdout)
        assert before["clickhouse"]["rows"] > 0 and before["profile"] is None
        assert "profile" in before["unavailable"] and "clickhouse" not in before["unavailable"]

        erased = await nudgeflow(settings, "erase", ANA)
        assert erased.returncode == 0, erased.stderr
        request_id = erased.stdout.strip()
        [message] = read_topic(settings.kafka_bootstrap, settings.privacy_topic, lambda found: len(found) >= 1)
        assert message.key == ANA.encode()
        assert ErasureRequest.model_validate_json(message.value).request_id == request_id

        erasing = ClickHouseSink(settings, clickhouse)
        await sink_while(erasing, lambda: erasing.stats.erasures == 1)
        after = await nudgeflow(settings, "export", ANA)
        assert after.returncode == 0, after.stderr
        document = orjson.loads(after.stdout)
        assert document["person_id"] == ANA
        assert document["clickhouse"]["rows"] == 0
        assert orjson.loads((await nudgeflow(settings, "export", BEN)).stdout)["clickhouse"]["rows"] > 0
    finally:
        await runner.cleanup()
    profile = await nudgeflow(settings, "profile", ANA)
    assert profile.returncode == 1 and "unavailable" in profile.stderr
