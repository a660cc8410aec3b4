"""Proof of consent in ClickHouse, on the real broker and chDB: each change lands once however often it is
replayed, a message that is not a consent change is dead-lettered with the reason, and the rest lands."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from kafka import KafkaProducer

from schemas.consent import ConsentChange
from schemas.profile import ConsentSource, ConsentState
from schemas.settings import Settings
from sinks.clickhouse.writer import ClickHouseSink
from tests.integration.sinks.clickhouse.test_isolation import count, letters
from tests.integration.sinks.sink_runner import sink_while

pytestmark = pytest.mark.integration


async def test_consent_changes_land_once_and_a_forged_one_is_dead_lettered(
    sink_settings: Settings, clickhouse: Any, producer: KafkaProducer
) -> None:
    settings = sink_settings
    at = datetime(2026, 12, 2, 9, 30, tzinfo=UTC)
    opted_in = ConsentChange(
        person_id="ana", channel="email", state=ConsentState.OPTED_IN, source=ConsentSource.FORM, at=at,
        message_id="m-1", ip="203.0.113.7", user_agent="Mozilla/5.0",
    )  # fmt: skip
    opted_out = opted_in.model_copy(
        update={"state": ConsentState.OPTED_OUT, "previous": ConsentState.OPTED_IN, "message_id": "m-2",
                "source": ConsentSource.UNSUBSCRIBE_LINK, "trigger_id": "t-9"}
    )  # fmt: skip

    def send(value: bytes) -> int:
        return int(producer.send(settings.consents_topic, key=b"ana", value=value, partition=0).get(30).offset)

    for change in (opted_in, opted_out, opted_in):  # the last one a replay of the first
        send(change.to_json())
    forged = send(opted_in.to_json().replace(b'"opted_in"', b'"maybe"'))
    producer.flush()

    sink = ClickHouseSink(settings, clickhouse)

    def landed() -> bool:
        stored = count(clickhouse, "SELECT count() FROM consent_changes FINAL")
        return stored == 2 and f"{settings.consents_topic}@{forged}" in letters(clickhouse)

    await sink_while(sink, landed)
    rows = clickhouse.query(
        "SELECT state, previous, source, ip, trigger_id FROM consent_changes FINAL ORDER BY message_id"
    ).result_rows
    assert [tuple(row) for row in rows] == [
        ("opted_in", None, "form", "203.0.113.7", None),
        ("opted_out", "opted_in", "unsubscribe_link", "203.0.113.7", "t-9"),
    ]
    assert "state" in letters(clickhouse)[f"{settings.consents_topic}@{forged}"]
