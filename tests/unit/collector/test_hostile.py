"""Hostile input at the door: every one a 4xx that names the field and the limit, never a 5xx."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from schemas.events import parse_event
from schemas.limits import DEFAULT_LIMITS
from schemas.settings import Settings
from schemas.triggers import DeadLetter
from streams.collector.app import Collector, build_app
from streams.collector.dead_letters import collector_dead_letter
from tests.unit.collector.test_app import AUTH, HASH_SECRET, NOW, WRITE_KEY, MemoryProducer, track

JSON = {**AUTH, "Content-Type": "application/json"}


def nested(levels: int, leaf: Any = 1) -> Any:
    """`levels` objects, each the only value of the one before: {"a": {"a": ... leaf}}."""
    value = leaf
    for _ in range(levels):
        value = {"a": value}
    return value


def nested_raw(levels: int) -> bytes:
    # Built as text: orjson.dumps itself stops near 254 levels.
    return b'{"a":' * levels + b"1" + b"}" * levels


def identify_raw(traits: bytes, person: str = "u-deep") -> bytes:
    return b'{"userId":"' + person.encode() + b'","traits":' + traits + b"}"


@pytest.fixture
def producer() -> MemoryProducer:
    return MemoryProducer()


@pytest.fixture
async def client(producer: MemoryProducer) -> AsyncIterator[TestClient[Any, Any]]:
    settings = Settings(namespace="unit", collector_write_keys={WRITE_KEY: "web"}, hash_secret=HASH_SECRET)
    async with TestClient(TestServer(build_app(Collector(settings, producer, clock=lambda: NOW)))) as test_client:
        yield test_client


@pytest.mark.parametrize("levels", [32, 253, 254, 300, 1020])
async def test_deep_traits_are_a_400_naming_the_path(
    client: TestClient[Any, Any], producer: MemoryProducer, levels: int
) -> None:
    response = await client.post("/v1/identify", data=identify_raw(nested_raw(levels)), headers=JSON)
    assert response.status == 400
    error = (await response.json())["error"]
    assert error == "traits" + ".a" * 31 + ": nested deeper than 32 levels"
    (record,) = producer.on("unit.events.dlq")
    letter = DeadLetter.model_validate_json(record.value)
    assert letter.reason == error
    assert len(record.value) <= 2 * DEFAULT_LIMITS.dead_letter_bytes
    assert letter.value.startswith('{"traits":{"a":{"a":')
    assert producer.on("unit.events") == []


async def test_nesting_within_the_limit_is_accepted(client: TestClient[Any, Any], producer: MemoryProducer) -> None:
    response = await client.post("/v1/identify", data=identify_raw(nested_raw(31)), headers=JSON)
    assert response.status == 200, await response.text()
    assert parse_event(producer.records[0].value).traits == nested(31)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (identify_raw(nested_raw(5000)), "depth limit exceeded"),
        (b'{"userId":"u","event":"x","properties":{"v":NaN}}', "NaN and Infinity are not JSON numbers"),
        (b'{"userId":"u","event":"x","properties":{"v":-Infinity}}', "NaN and Infinity are not JSON numbers"),
        (b'{"userId":"u","event":"x","properties":{"v":1e400}}', "number is infinity when parsed as double"),
        (b'{"userId":"u","event":"x","properties":{"v":"\xff\xfe"}}', "not valid UTF-8"),
        (b'{"userId":"u\xed\xa0\x80","event":"x"}', "not valid UTF-8"),
    ],
)
async def test_bodies_the_decoder_refuses_are_a_400_with_the_reason(
    client: TestClient[Any, Any], producer: MemoryProducer, body: bytes, reason: str
) -> None:
    for path in ("/v1/track", "/v1/batch"):
        response = await client.post(path, data=body, headers=JSON)
        assert response.status == 400
        error = (await response.json())["error"]
        assert error.startswith("malformed JSON: ") and reason in error, error
    assert producer.records == []


@pytest.mark.parametrize(
    ("event", "error"),
    [
        (track("u" * 30_000), f"userId: 30000 characters; at most {DEFAULT_LIMITS.id_length}"),
        ({**track("u"), "anonymousId": "a" * 300}, "anonymousId: 300 characters; at most 256"),
        (
            track("u", event="Cart Viewed", properties={"products": [{"product_id": "p"}] * 10_000}),
            "properties.products: 10000 items; at most 256",
        ),
        (track("u", properties={"product_id": "p" * 257}), "properties.product_id: 257 characters; at most 256"),
        (
            track("u", properties={"product_id": "p", "note": "n" * 5000}),
            f"properties.note: 5000 characters; at most {DEFAULT_LIMITS.string_length}",
        ),
        (
            track("u", properties={"product_id": "p", "price": 2**64 - 1}),
            "properties.price: number 18446744073709551615",
        ),
        (
            track("u", properties={"product_id": "p", "v": -1e13}),
            "properties.v: number -10000000000000.0 outside ±1e+12",
        ),
        (track("u", properties={f"k{n}": n for n in range(129)}), "properties: 129 properties; at most 128"),
        (track("u", timestamp="1970-01-01T00:00:00Z"), "timestamp: 1970-01-01T00:00:00+00:00 is before 2000-01-01"),
        (track("u", timestamp="9999-12-31T23:59:59Z"), "timestamp: 9999-12-31T23:59:59+00:00 is more than 900s"),
        (track("u", timestamp="0001-01-01T00:00:00+01:00"), "timestamp: Value error, outside the range of dates"),
        (
            track("u", timestamp="1970-01-01T00:00:00Z", sentAt="9999-12-31T00:00:00Z"),
            "timestamp 1970-01-01T00:00:00+00:00 and sentAt 9999-12-31T00:00:00+00:00 are too far apart",
        ),
        (track("contact:phone:abc"), "userId: ids starting with 'contact:' are reserved for the collector"),
        ({**track("u"), "anonymousId": "contact:email:x"}, "anonymousId: ids starting with 'contact:'"),
        ({**track("u"), "type": "alias", "previousId": "contact:x"}, "previousId: ids starting with 'contact:'"),
    ],
)
async def test_events_over_a_limit_are_a_400_naming_field_and_limit(
    client: TestClient[Any, Any], producer: MemoryProducer, event: dict[str, Any], error: str
) -> None:
    call = str(event.get("type", "track"))
    response = await client.post(f"/v1/{call}", json=event, headers=AUTH)
    assert response.status == 400
    assert (await response.json())["error"].startswith(error)
    assert producer.on("unit.events") == []
    (record,) = producer.on("unit.events.dlq")
    assert len(record.value) < 3 * DEFAULT_LIMITS.dead_letter_bytes
    assert record.key is None or len(record.key) <= DEFAULT_LIMITS.id_length


async def test_a_skewed_clock_inside_the_limits_is_corrected_not_refused(
    client: TestClient[Any, Any], producer: MemoryProducer
) -> None:
    # The device thinks it is year 9999 but says when it sent: the derived time is now.
    skewed = track("u", timestamp="9999-12-31T00:00:00Z", sentAt="9999-12-31T00:00:05Z")
    assert (await client.post("/v1/track", json=skewed, headers=AUTH)).status == 200
    assert parse_event(producer.records[0].value).timestamp < NOW


async def test_a_batch_keeps_the_good_events_and_dead_letters_each_hostile_one(
    client: TestClient[Any, Any], producer: MemoryProducer
) -> None:
    hostile = [
        b'{"type":"identify","userId":"deep-300","traits":' + nested_raw(300) + b"}",
        b'{"type":"identify","userId":"deep-1000","traits":' + nested_raw(1000) + b"}",
        orjson.dumps(track("u" * 30_000)),
        orjson.dumps(track("u", event="Cart Viewed", properties={"products": [{"product_id": "p"}] * 10_000})),
        orjson.dumps(track("contact:email:abc")),
        orjson.dumps(track("u", timestamp="1970-01-01T00:00:00Z")),
        b'"junk"',
        b"[" * 1000 + b"]" * 1000,
    ]
    good = [orjson.dumps(track(f"good-{n}", messageId=f"g{n}")) for n in range(5)]
    calls = [good[0], *hostile[:4], good[1], good[2], *hostile[4:], good[3], good[4]]
    body = b'{"batch":[' + b",".join(calls) + b"]}"
    response = await client.post("/v1/batch", data=body, headers=JSON)
    assert response.status == 200, await response.text()
    answer = await response.json()
    assert answer["accepted"] == 5
    rejected = {entry["index"]: entry["reason"] for entry in answer["rejected"]}
    assert sorted(rejected) == [1, 2, 3, 4, 7, 8, 9, 10]
    assert rejected[1] == rejected[2] == "traits" + ".a" * 31 + ": nested deeper than 32 levels"
    assert rejected[3].startswith("userId: 30000 characters")
    assert rejected[4] == "properties.products: 10000 items; at most 256"
    assert rejected[7] == "userId: ids starting with 'contact:' are reserved for the collector"
    assert rejected[8].startswith("timestamp: 1970-01-01T00:00:00+00:00 is before")
    assert (rejected[9], rejected[10]) == (
        "an event must be a JSON object, not a string",
        "an event must be a JSON object, not an array",
    )
    assert [parse_event(record.value).person_id for record in producer.on("unit.events")] == [
        f"good-{n}" for n in range(5)
    ]
    letters = [DeadLetter.model_validate_json(record.value) for record in producer.on("unit.events.dlq")]
    assert sorted(letter.reason for letter in letters) == sorted(rejected.values())
    for letter in letters:
        assert len(letter.value.encode()) <= DEFAULT_LIMITS.dead_letter_bytes
        assert "writeKey" not in letter.value


def test_a_dead_letter_of_any_depth_encodes() -> None:
    deep: Any = "leaf"
    for _ in range(10_000):
        deep = [deep]
    letter = collector_dead_letter({"userId": "u", "traits": deep}, "deep", NOW, "web", DEFAULT_LIMITS)
    # Kept down to the depth limit, deeper levels stood in for: a document every tool can read back.
    assert letter.value == '{"traits":' + "[" * 31 + '"…"' + "]" * 31 + ',"userId":"u"}'
    assert DeadLetter.model_validate_json(letter.model_dump_json()) == letter
    many = collector_dead_letter({"p": ["x" * 2000] * 10_000, "writeKey": "secret"}, "big", NOW, "web", DEFAULT_LIMITS)
    assert len(many.value.encode()) <= DEFAULT_LIMITS.dead_letter_bytes
    assert "secret" not in many.value
    odd = collector_dead_letter([2**70, float("nan"), None, True], "odd", NOW, "web", DEFAULT_LIMITS)
    assert odd.value == '["… an integer of 71 bits",null,null,true]'


async def test_forty_identifies_each_adding_traits_are_all_accepted(
    client: TestClient[Any, Any], producer: MemoryProducer
) -> None:
    for n in range(40):
        traits = {f"trait_{n}_{k}": "v" * 100 for k in range(100)}
        response = await client.post("/v1/identify", json={"userId": "u-grow", "traits": traits}, headers=AUTH)
        assert response.status == 200, await response.text()
    assert len(producer.on("unit.events")) == 40


async def test_hostile_webhook_entries_are_rejected_by_index(producer: MemoryProducer) -> None:
    settings = Settings(namespace="unit", allow_unsigned_webhooks=True, hash_secret=HASH_SECRET)
    app = build_app(Collector(settings, producer, clock=lambda: NOW))
    entry = {"event": "open", "email": "a@x.com", "timestamp": int(NOW.timestamp())}
    body = (
        b"["
        + b",".join(
            [
                orjson.dumps(entry),
                b'{"event":"click","email":"a@x.com","timestamp":1,"url":' + nested_raw(600) + b"}",
                orjson.dumps({**entry, "person_id": "p" * 30_000}),
                orjson.dumps({**entry, "email": "e" * 5000}),
            ]
        )
        + b"]"
    )
    async with TestClient(TestServer(app)) as client:
        response = await client.post("/webhooks/sendgrid", data=body, headers={"Content-Type": "application/json"})
        assert response.status == 200, await response.text()
        answer = await response.json()
        assert answer["accepted"] == 1
        assert {entry["index"]: entry["reason"] for entry in answer["rejected"]} == {
            1: "properties.url" + ".a" * 30 + ": nested deeper than 32 levels",
            2: "userId: 30000 characters; at most 256",
            3: f"properties.email: 5000 characters; at most {DEFAULT_LIMITS.string_length}",
        }
        form = {"MessageSid": "SM1", "From": "+1" + "5" * 30_000, "Body": "STOP"}
        response = await client.post(
            "/webhooks/twilio/inbound", data=form, headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
        assert response.status == 200  # the reply is refused (a dead letter), Twilio must not retry it
    assert len(producer.on("unit.events")) == 1
    assert len(producer.on("unit.events.dlq")) == 5
