"""One bad message never holds up the others, on the real broker and chDB: messages no row can be made of and
rows ClickHouse refuses are dead-lettered with the reason and the rest of their batch lands; a dead letter
that cannot be stored is only logged and counted; an outage is still waited out, and a rebalance in the
middle of a batch does not stop the sink."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from kafka import KafkaProducer

from schemas.encoding import encode
from schemas.profile import Profile
from schemas.settings import Settings
from schemas.triggers import DeadLetter
from sinks.clickhouse.writer import ClickHouseSink
from tests.integration.conftest import read_topic
from tests.integration.sinks.clickhouse.test_privacy import found_anywhere
from tests.integration.sinks.scenario import nudge, track
from tests.integration.sinks.sink_runner import sink_while

pytestmark = pytest.mark.integration

DEEP = '{"a":' * 299 + "{}" + "}" * 299  # 300 levels: more than orjson writes, far more than the limits allow


def count(client: Any, sql: str) -> int:
    return int(client.query(sql).result_rows[0][0])


def letters(client: Any) -> dict[str, str]:
    """Dead letters stored, as "topic@offset" -> reason."""
    rows = client.query("SELECT topic, offset, reason FROM dead_letters FINAL").result_rows
    return {f"{topic}@{offset}": str(reason) for topic, offset, reason in rows}


async def test_bad_messages_and_refused_rows_are_dead_lettered_and_their_batch_lands(
    sink_settings: Settings, clickhouse: Any, producer: KafkaProducer
) -> None:
    settings = sink_settings
    now = datetime.now(UTC)
    # ClickHouse itself refuses these rows (a constraint is a refusal on the server, as a bad value would be).
    clickhouse.command("ALTER TABLE events ADD CONSTRAINT no_poison CHECK event != 'Poison'")

    def send(topic: str, value: bytes, key: bytes = b"ana") -> int:
        return int(producer.send(topic, key=key, value=value, partition=0).get(30).offset)

    for n in range(3):
        send(settings.events_topic, track("Product Viewed", "ana", now, product_id=f"sku-{n}"))
    poison = send(settings.events_topic, track("Poison", "ana", now))
    for n in range(3, 6):
        send(settings.events_topic, track("Product Viewed", "ana", now, product_id=f"sku-{n}"))

    trigger = nudge("welcome", "ana", now, None).to_json()
    send(settings.triggers_topic, trigger)
    deep_trigger = send(settings.triggers_topic, trigger[:-1] + b',"context":' + DEEP.encode() + b"}")
    broken_trigger = send(settings.triggers_topic, b'{"trigger_id": "t-')
    send(settings.triggers_topic, nudge("welcome", "ben", now, None).to_json(), key=b"ben")

    # event_count beyond UInt64: the client cannot encode it, so the insert fails on this row alone.
    huge = orjson.dumps({"person_id": "eve@example.com", "event_count": 1e20, "email": "eve@example.com"})
    huge_profile = send(settings.profiles_topic, huge, key=b"eve@example.com")
    for person in ("ana", "ben", "cy"):
        send(
            settings.profiles_topic,
            encode(Profile(person_id=person, event_count=2)),
            person.encode(),
        )

    # Dead letters that cannot be stored themselves: only logged and counted, never sent again.
    send(settings.dead_letter_topic, b"not a dead letter")
    out_of_range = DeadLetter(reason="r", topic="x", partition=70_000, offset=1, value="v", received_at=now)
    send(settings.dead_letter_topic, out_of_range.model_dump_json().encode())
    producer.flush()

    sink = ClickHouseSink(settings, clickhouse)
    expected_letters = {
        f"{settings.events_topic}@{poison}",
        f"{settings.triggers_topic}@{deep_trigger}",
        f"{settings.triggers_topic}@{broken_trigger}",
        f"{settings.profiles_topic}@{huge_profile}",
    }

    def landed() -> bool:
        return (
            count(clickhouse, "SELECT count() FROM events FINAL") == 6
            and count(clickhouse, "SELECT count() FROM triggers FINAL") == 2
            and count(clickhouse, "SELECT count() FROM profile_snapshots FINAL") == 3
            and set(letters(clickhouse)) == expected_letters
            and sink.stats.unstorable_letters == 2
        )

    await sink_while(sink, landed)
    reasons = letters(clickhouse)
    assert "VIOLATED_CONSTRAINT" in reasons[f"{settings.events_topic}@{poison}"]
    assert reasons[f"{settings.events_topic}@{poison}"].startswith("refused by ClickHouse (events)")
    assert "nested deeper than 32 levels" in reasons[f"{settings.triggers_topic}@{deep_trigger}"]
    assert reasons[f"{settings.triggers_topic}@{broken_trigger}"].startswith("not JSON")
    assert reasons[f"{settings.profiles_topic}@{huge_profile}"].startswith("refused by ClickHouse (profile_snapshots)")
    assert (sink.stats.dead_lettered, sink.stats.unstorable_letters) == (4, 2)
    assert sink.metrics.dead_lettered.labels("events")._value.get() == 1
    assert sink.metrics.dead_lettered.labels("triggers")._value.get() == 2
    assert sink.metrics.unstorable_letters._value.get() == 2
    # The refused profile's address is in no column, its dead letter's key included.
    assert found_anywhere(clickhouse, ["eve@example.com"]) == []
    [key] = clickhouse.query(
        "SELECT key FROM dead_letters WHERE topic = {t:String}", parameters={"t": settings.profiles_topic}
    ).result_rows[0]
    assert key.startswith("contact:email:")

    # No loop: the topic holds the two letters produced here and the sink's four, and nothing more comes.
    await asyncio.sleep(2)
    on_topic = read_topic(settings.kafka_bootstrap, settings.dead_letter_topic, lambda found: len(found) >= 6)
    await asyncio.sleep(1)
    assert len(read_topic(settings.kafka_bootstrap, settings.dead_letter_topic, lambda _: False, timeout=3)) == 6
    assert {message.key for message in on_topic} >= {b"ana", key.encode()}


async def test_an_outage_is_waited_out_not_dead_lettered_and_a_rebalance_mid_batch_does_not_stop_the_sink(
    sink_settings: Settings, clickhouse: Any, producer: KafkaProducer
) -> None:
    settings = sink_settings
    now = datetime.now(UTC)
    first = ClickHouseSink(settings, clickhouse)
    second = ClickHouseSink(settings, clickhouse)
    people = [f"r{n}" for n in range(24)]
    running = asyncio.create_task(first.run())
    joined: asyncio.Task[None] | None = None
    try:
        producer.send(settings.events_topic, key=b"r0", value=track("Product Viewed", "r0", now, product_id="s"))
        await wait_for(lambda: count(clickhouse, "SELECT count() FROM events") == 1)

        clickhouse.command("DETACH TABLE events")  # the first sink now holds a batch it cannot write
        for person in people[1:]:
            producer.send(
                settings.events_topic, key=person.encode(), value=track("Product Viewed", person, now, product_id="s")
            )
        producer.flush()
        await wait_for(lambda: first.stats.insert_errors >= 2)
        # A second sink joins: the group rebalances while the first still retries its batch.
        joined = asyncio.create_task(second.run())
        every = len(first.assignment())
        await wait_for(lambda: bool(second.assignment()) and len(first.assignment()) < every, within=60)
        clickhouse.command("ATTACH TABLE events")
        await wait_for(lambda: count(clickhouse, "SELECT count() FROM events FINAL") == len(people), within=60)
        await asyncio.sleep(2 * settings.sink_batch_seconds)
        assert not running.done(), running.exception() if running.done() else None
        assert first.stats.dead_lettered == 0  # a missing table is an outage, not bad data
    finally:
        first.stop()
        second.stop()
        await running
        if joined is not None:
            await joined
    assert count(clickhouse, "SELECT uniqExact(message_id) FROM events") == len(people)


async def wait_for(condition: Callable[[], bool], within: float = 30) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await asyncio.to_thread(condition):
            return
        await asyncio.sleep(0.3)
    raise AssertionError("condition not met in time")
