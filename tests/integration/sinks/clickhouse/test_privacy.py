"""Erasure and access in ClickHouse on the real broker and chDB: rows of two people through the real topics,
one of them erased; nothing of them can be read back, the other is intact, and the sink says so on the
audit topic with a hash. Contacts are stored hashed."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson
import pytest
from kafka import KafkaProducer

from schemas.encoding import encode
from schemas.privacy import AuditRecord, ErasureRequest, person_hash
from schemas.profile import Profile
from schemas.segments import SegmentChange
from schemas.settings import Settings
from schemas.triggers import Channel, DeadLetter, Suppression, SuppressionReason, Trigger, make_trigger_id
from sinks.analytics import queries
from sinks.analytics.web import build_web_app, start_web
from sinks.clickhouse.digests import hash_email, hash_phone
from sinks.clickhouse.rows import RowOptions
from sinks.clickhouse.writer import ClickHouseSink
from tests.integration.conftest import API_AUTH, TEST_HASH_SECRET, free_port, read_topic
from tests.integration.sinks.sink_runner import sink_while

pytestmark = pytest.mark.integration
KEY = TEST_HASH_SECRET.encode()
OPTIONS = RowOptions(KEY)

ANA, BEN = "person-ana-7f3", "person-ben-2c1"
ANA_ANONYMOUS = "anon-ana-91d"
CONTACTS = {
    ANA: ("ana.lopez@example.com", "+15557770101"),
    BEN: ("ben.okafor@example.com", "+15557770202"),
}


def event(person: str, name: str, moment: datetime, anonymous: str | None = None, **properties: Any) -> bytes:
    email, phone = CONTACTS[person]
    document: dict[str, Any] = {
        "type": "track",
        "event": name,
        "messageId": str(uuid.uuid4()),
        "timestamp": moment.isoformat(),
        "properties": properties,
        # Segment's browser library repeats the identify traits here.
        "context": {"traits": {"email": email, "phone": phone}, "channel": "web"},
    }
    document.update({"anonymousId": anonymous} if anonymous else {"userId": person})
    return orjson.dumps(document)


def identify(person: str, moment: datetime) -> bytes:
    email, phone = CONTACTS[person]
    return orjson.dumps(
        {
            "type": "identify",
            "userId": person,
            "messageId": str(uuid.uuid4()),
            "timestamp": moment.isoformat(),
            "traits": {"email": email, "phone": phone},
        }
    )


def produce_person(producer: KafkaProducer, settings: Settings, person: str, moment: datetime) -> None:
    """Everything the worker and collector would publish about one person, on the real topics."""
    email, phone = CONTACTS[person]
    key = person.encode()
    trigger = Trigger(
        trigger_id=make_trigger_id("cart_abandonment", person, "cart", moment),
        rule="cart_abandonment",
        person_id=person,
        channel=Channel.EMAIL,
        template_id="cart-1",
        due_at=moment,
        fired_at=moment,
        address=email,
        context={"cart_id": "cart", "email": email},
    )
    held = trigger.model_copy(update={"trigger_id": make_trigger_id("welcome", person, "w", moment), "rule": "welcome"})
    values = [
        identify(person, moment),
        event(person, "Product Viewed", moment, product_id="sku-1"),
        event(person, "Order Completed", moment + timedelta(minutes=5), order_id=f"o-{person}", revenue=30),
        event(person, "Email Opened", moment + timedelta(minutes=6), trigger_id=trigger.trigger_id, email=email),
    ]
    anonymous_ids: list[str] = []
    if person == ANA:
        anonymous_ids = [ANA_ANONYMOUS]
        values.append(
            event(person, "Product Viewed", moment - timedelta(minutes=3), anonymous=ANA_ANONYMOUS, product_id="sku-2")
        )
    for value in values:
        producer.send(settings.events_topic, key=key, value=value)
    producer.send(settings.triggers_topic, key=key, value=trigger.to_json())
    suppression = Suppression(trigger=held, reason=SuppressionReason.QUIET_HOURS, decided_at=moment)
    producer.send(settings.suppressed_topic, key=key, value=suppression.to_json())
    change = SegmentChange(person_id=person, segment="buyers", change="enter", at=moment)
    producer.send(settings.segments_topic, key=key, value=change.to_json())
    profile = Profile(
        person_id=person,
        identified=True,
        anonymous_ids=anonymous_ids,
        first_seen=moment,
        last_seen=moment,
        event_count=len(values),
        order_count=1,
        revenue=30.0,
        email=email,
        phone=phone,
        traits={"email": email, "phone": phone},
    )
    producer.send(settings.profiles_topic, key=key, value=encode(profile))
    letter = DeadLetter(
        reason="invalid event: properties: Field required",
        topic=settings.events_topic,
        partition=0,
        offset=list(CONTACTS).index(person),  # dead letters are keyed by where they sat in the log
        key=person,
        value=orjson.dumps({"type": "track", "userId": person, "traits": {"email": email}}).decode(),
        received_at=moment,
    )
    producer.send(settings.dead_letter_topic, key=key, value=letter.model_dump_json().encode())
    # A dead letter with no key that names the person only inside text that is not JSON.
    unkeyed = letter.model_copy(
        update={"key": None, "offset": 10 + letter.offset, "value": f"garbage from {person} at {email} ###"}
    )
    producer.send(settings.dead_letter_topic, value=unkeyed.model_dump_json().encode())
    producer.flush()


def rows_of(client: Any, person: str) -> dict[str, int]:
    return {
        table: len(rows) for table, rows in queries.person_export(client, person, OPTIONS)["tables"].items() if rows
    }


def string_columns(client: Any) -> list[tuple[str, str]]:
    """(table, column) of every column of every table of the test's database that can hold text."""
    rows = client.query(
        "SELECT table, name FROM system.columns WHERE database = currentDatabase() AND type LIKE '%String%' "
        "AND type NOT LIKE 'AggregateFunction%'"
    ).result_rows
    return [(str(table), str(name)) for table, name in rows]


def found_anywhere(client: Any, needles: list[str]) -> list[str]:
    """Where any needle occurs in any text column of any table, as table.column: needle."""
    hits = []
    for table, column in string_columns(client):
        for needle in needles:
            count = client.query(
                f"SELECT count() FROM {table} WHERE position(ifNull(toString(`{column}`), ''), {{n:String}}) > 0",
                parameters={"n": needle},
            ).result_rows[0][0]
            if count:
                hits.append(f"{table}.{column}: {needle}")
    return hits


EXPECTED_TABLES = {
    "events",
    "triggers",
    "suppressions",
    "segment_changes",
    "profile_snapshots",
    "orders",
    "message_events",
    "dead_letters",
}


async def test_an_erased_person_cannot_be_read_back_from_any_table_and_the_other_is_intact(
    sink_settings: Settings, clickhouse: Any, producer: KafkaProducer
) -> None:
    settings = sink_settings
    # Ten past the previous hour: all of a person's events fall in one hour of the hourly rollup.
    now = datetime.now(UTC).replace(minute=10, second=0, microsecond=0) - timedelta(hours=1)
    produce_person(producer, settings, ANA, now)
    produce_person(producer, settings, BEN, now)

    sink = ClickHouseSink(settings, clickhouse)
    await sink_while(sink, lambda: set(rows_of(clickhouse, ANA)) == set(rows_of(clickhouse, BEN)) == EXPECTED_TABLES)
    ben_before = rows_of(clickhouse, BEN)
    assert rows_of(clickhouse, ANA)["events"] == 5  # her anonymous visit counts as hers

    # Stored hashed by default: neither address is anywhere in plain text, their digests are.
    contacts = [contact for pair in CONTACTS.values() for contact in pair]
    assert found_anywhere(clickhouse, contacts) == []
    [profile] = queries.person_export(clickhouse, ANA, OPTIONS)["tables"]["profile_snapshots"]
    assert (profile["profile"]["email"], profile["profile"]["phone"]) == (
        hash_email(CONTACTS[ANA][0], KEY),
        hash_phone(CONTACTS[ANA][1], KEY),
    )
    assert profile["profile"]["traits"]["email"] == hash_email(CONTACTS[ANA][0], KEY)
    assert rows_of(clickhouse, ANA)["dead_letters"] == 2  # the keyed one and the one naming her in text
    period = queries.Period(now - timedelta(days=1), now + timedelta(days=1))
    assert [step.people for step in queries.funnel(clickhouse, period)] == [3, 0, 0, 2]  # her anonymous self too
    assert [hour["people"] for hour in queries.active_people_hourly(clickhouse, period)] == [3]

    request = ErasureRequest(request_id=str(uuid.uuid4()), person_id=ANA, requested_at=datetime.now(UTC))
    producer.send(settings.privacy_topic, key=ANA.encode(), value=request.to_json()).get(timeout=30)

    web_port = free_port()
    erasing = ClickHouseSink(settings, clickhouse)
    runner = await start_web(build_web_app(clickhouse, erasing.metrics, settings), "127.0.0.1", web_port)
    try:
        await sink_while(erasing, lambda: erasing.stats.erasures == 1)
        # A late event of hers (a retried webhook, a replay) after the erasure is not written back.
        producer.send(
            settings.events_topic, key=ANA.encode(), value=event(ANA, "Product Viewed", now, product_id="sku-3")
        ).get(30)
        late = ClickHouseSink(settings, clickhouse)
        await sink_while(late, lambda: late.stats.rows_dropped_as_erased == 1)

        async with aiohttp.ClientSession(headers=API_AUTH) as http:
            async with http.get(f"http://127.0.0.1:{web_port}/api/people/{ANA}/export") as response:
                assert response.status == 200
                erased_export = await response.json()
            async with http.get(f"http://127.0.0.1:{web_port}/api/people/{BEN}/export") as response:
                kept_export = await response.json()
            async with http.get(f"http://127.0.0.1:{web_port}/api/churn") as response:
                churn = await response.json()
    finally:
        await runner.cleanup()

    needles = [
        ANA,
        ANA_ANONYMOUS,
        *CONTACTS[ANA],
        hash_email(CONTACTS[ANA][0], KEY),
        hash_phone(CONTACTS[ANA][1], KEY),
    ]
    assert found_anywhere(clickhouse, needles) == []
    assert erased_export["rows"] == 0 and all(rows == [] for rows in erased_export["tables"].values())
    assert rows_of(clickhouse, BEN) == ben_before
    assert kept_export["rows"] == sum(ben_before.values())
    assert ANA not in orjson.dumps(churn).decode()

    # The rollups were rebuilt without her: exact counts of the one person left.
    assert [step.people for step in queries.funnel(clickhouse, period)] == [1, 0, 0, 1]
    assert [hour["people"] for hour in queries.active_people_hourly(clickhouse, period)] == [1]
    assert sum(day.sent for day in queries.daily_rates(clickhouse, period)) == 1
    assert sum(day.opened for day in queries.daily_rates(clickhouse, period)) == 1
    assert queries.suppressions(clickhouse, period).by_reason == {"quiet_hours": 1}

    messages = read_topic(settings.kafka_bootstrap, settings.audit_topic, lambda found: len(found) >= 1, timeout=30)
    records = [AuditRecord.model_validate_json(message.value) for message in messages]
    sink_records = [record for record in records if record.component == "sink"]
    assert [(r.request_id, r.person_hash) for r in sink_records] == [(request.request_id, person_hash(ANA, KEY))]
    assert "events=5" in sink_records[0].detail
    assert all(ANA.encode() not in (message.value + (message.key or b"")) for message in messages)


async def test_plain_contacts_when_the_operator_asks_for_them(
    sink_settings: Settings, clickhouse: Any, producer: KafkaProducer
) -> None:
    settings = sink_settings.model_copy(update={"clickhouse_plain_contacts": True})
    now = datetime.now(UTC)
    producer.send(
        settings.events_topic, key=BEN.encode(), value=event(BEN, "Product Viewed", now, product_id="sku-3")
    ).get(30)
    sink = ClickHouseSink(settings, clickhouse)
    await sink_while(sink, lambda: rows_of(clickhouse, BEN).get("events") == 1)
    assert found_anywhere(clickhouse, [CONTACTS[BEN][0]]) == ["events.context: " + CONTACTS[BEN][0]]
