"""`nudgeflow replay` as an operator runs it, against the real broker: a JSON-lines file and another topic."""

from __future__ import annotations

import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaProducer

from schemas.settings import Settings
from streams.broker.topics import ensure_topics
from tests.integration.conftest import REPO, read_topic, settings_environment

pytestmark = pytest.mark.integration

SINCE = datetime(2026, 11, 1, tzinfo=UTC)
UNTIL = SINCE + timedelta(days=1)


def event(moment: datetime, **identity: str) -> bytes:
    return orjson.dumps(
        {
            "type": "track",
            "event": "Product Viewed",
            "messageId": str(uuid.uuid4()),
            "timestamp": moment.isoformat(),
            "properties": {"product_id": "sku-1"},
            **identity,
        }
    )


def replay(settings: Settings, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", "replay", *arguments],
        env=settings_environment(settings),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def keyed(messages: list[Any]) -> list[tuple[bytes, bytes]]:
    return sorted((message.key, message.value) for message in messages)


def test_a_file_replays_exactly_the_valid_events_of_the_range_keyed_by_person(
    settings: Settings, tmp_path: Path
) -> None:
    inside = [
        event(SINCE, userId="ana", anonymousId="a-1"),
        event(SINCE + timedelta(hours=5), anonymousId="a-2"),
        event(UNTIL - timedelta(milliseconds=1), userId="ben"),
    ]
    outside = [event(SINCE - timedelta(seconds=1), userId="ana"), event(UNTIL, userId="ben")]
    lines = [
        inside[0],
        b"{not json",
        outside[0],
        inside[1],
        b"",
        orjson.dumps({"type": "track", "event": "Signed Up", "timestamp": SINCE.isoformat()}),
        outside[1],
        inside[2],
    ]
    source = tmp_path / "events.jsonl"
    source.write_bytes(b"\n".join(lines) + b"\n")

    result = replay(settings, str(source), "--since", SINCE.isoformat(), "--until", UNTIL.isoformat())
    assert result.returncode == 0, result.stderr
    assert "line 2: not JSON" in result.stderr
    assert "line 6: invalid event: event: Value error, an event needs userId or anonymousId" in result.stderr
    assert "7 / 7 events" in result.stderr
    assert "read 7, produced 3" in result.stdout and "outside the time range 2, invalid 2" in result.stdout

    messages = read_topic(settings.kafka_bootstrap, settings.events_topic, lambda found: len(found) >= 3, timeout=30)
    # Nothing more is coming: the command flushed before it printed its summary.
    assert keyed(messages) == sorted([(b"ana", inside[0]), (b"a-2", inside[1]), (b"ben", inside[2])])


def test_a_topic_is_copied_into_another_namespace_s_events_topic(settings: Settings, producer: KafkaProducer) -> None:
    archive = settings.topic("archive")
    ensure_topics(settings, [archive])
    values = [event(SINCE + timedelta(minutes=n), userId=f"p{n % 3}") for n in range(30)]
    for value in values:
        producer.send(archive, key=None, value=value)  # an archive need not be keyed; the replay keys it
    producer.send(archive, value=b"garbage")
    producer.flush()
    target = settings.model_copy(update={"namespace": f"{settings.namespace}x"})

    result = replay(settings, f"topic:{archive}", "--to-namespace", target.namespace, "--since", SINCE.isoformat())
    assert result.returncode == 0, result.stderr
    assert f"{archive}[" in result.stderr and "not JSON" in result.stderr
    assert "read 31, produced 30" in result.stdout

    copied = read_topic(settings.kafka_bootstrap, target.events_topic, lambda found: len(found) >= 30, timeout=30)
    assert keyed(copied) == sorted((orjson.loads(v)["userId"].encode(), v) for v in values)
    # Keyed by person, so each person's events share a partition, as the worker needs.
    assert all(len({m.partition for m in copied if m.key == person}) == 1 for person in (b"p0", b"p1", b"p2"))
    assert read_topic(settings.kafka_bootstrap, settings.events_topic, lambda found: False, timeout=2) == []
