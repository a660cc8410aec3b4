"""The sender's ledger in ClickHouse, on the real broker and chDB: each record lands once however often it is
replayed, a record that is not one is dead-lettered with the reason, and `nudgeflow report deliveries`
counts each nudge by its last state."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kafka import KafkaProducer

from schemas.deliveries import DeliveryRecord, DeliveryState
from schemas.settings import Settings
from schemas.triggers import Channel
from sinks.analytics.queries import DeliveryOutcome, Period, delivery_outcomes
from sinks.analytics.report import REPORTS
from sinks.clickhouse.writer import ClickHouseSink
from tests.integration.sinks.clickhouse.test_isolation import count, letters
from tests.integration.sinks.sink_runner import sink_while

pytestmark = pytest.mark.integration


async def test_deliveries_land_once_and_the_report_counts_each_nudge_by_its_last_state(
    sink_settings: Settings, clickhouse: Any, producer: KafkaProducer
) -> None:
    settings = sink_settings
    at = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)

    def record(trigger: str, state: DeliveryState, seconds: int, **fields: Any) -> DeliveryRecord:
        return DeliveryRecord(
            trigger_id=trigger, state=state, rule="cart_abandonment", channel=Channel.EMAIL, provider="smtp",
            at=at + timedelta(seconds=seconds), **fields,
        )  # fmt: skip

    sent = [record("t-1", DeliveryState.SENDING, 0, attempt=1), record("t-1", DeliveryState.SENT, 1, attempt=1)]
    failed = [
        record("t-2", DeliveryState.SENDING, 0, attempt=1),
        record("t-2", DeliveryState.RETRYING, 1, attempt=1, reason="451 try again later"),
        record("t-2", DeliveryState.SENDING, 3, attempt=2),
        record("t-2", DeliveryState.FAILED, 4, attempt=2, reason="550 mailbox unavailable"),
    ]
    expired = [record("t-3", DeliveryState.EXPIRED, 0, reason="expired before it could go")]
    bounced = [record("t-5", DeliveryState.FAILED, 0, attempt=1, reason="550 mailbox unavailable")]
    sms = [record("t-4", DeliveryState.SENDING, 0, attempt=1).model_copy(update={"channel": Channel.SMS})]

    def send(value: bytes, key: bytes) -> int:
        return int(producer.send(settings.deliveries_topic, key=key, value=value, partition=0).get(30).offset)

    records = [*sent, *failed, *expired, *bounced, *sms, sent[1]]  # the last one a replay
    for item in records:
        send(item.to_json(), item.trigger_id.encode())
    forged = send(sent[1].to_json().replace(b'"sent"', b'"lost"'), b"t-1")
    producer.flush()

    sink = ClickHouseSink(settings, clickhouse)

    def landed() -> bool:
        stored = count(clickhouse, "SELECT count() FROM deliveries FINAL")
        return stored == len(records) - 1 and f"{settings.deliveries_topic}@{forged}" in letters(clickhouse)

    await sink_while(sink, landed)
    assert "state" in letters(clickhouse)[f"{settings.deliveries_topic}@{forged}"]
    period = Period(at - timedelta(hours=1), at + timedelta(hours=1))
    assert delivery_outcomes(clickhouse, period) == [
        DeliveryOutcome("cart_abandonment", "email", nudges=4, sent=1, unconfirmed=0, failed=2, expired=1,
                        in_flight=0, retried=1, top_failure="550 mailbox unavailable"),
        DeliveryOutcome("cart_abandonment", "sms", nudges=1, sent=0, unconfirmed=0, failed=0, expired=0,
                        in_flight=1, retried=0, top_failure=""),
    ]  # fmt: skip
    assert REPORTS["deliveries"](clickhouse, period.since, period.until)[0]["nudges"] == 4
    assert delivery_outcomes(clickhouse, Period(at + timedelta(hours=1), at + timedelta(hours=2))) == []
