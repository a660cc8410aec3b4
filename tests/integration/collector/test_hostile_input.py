"""Hostile input through the collector against the real broker: never a 5xx, every refusal says which field
and which limit, every good event on the events topic exactly once, every refused batch entry a dead letter.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import requests
from kafka import KafkaConsumer, TopicPartition

from schemas.events import parse_event
from schemas.settings import Settings
from schemas.triggers import DeadLetter
from tests.integration.collector.test_collector import CollectorThread
from tests.integration.conftest import read_topic

pytestmark = pytest.mark.integration

WRITE_KEY = "hostile-write-key"
HEADERS = {
    "Authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode(),
    "Content-Type": "application/json",
}
DEPTH_ERROR = ": nested deeper than 32 levels"


def nested_raw(levels: int) -> bytes:
    # Written as text: orjson.dumps itself stops near 254 levels.
    return b'{"a":' * levels + b"1" + b"}" * levels


@pytest.fixture
def collector(settings: Settings) -> Iterator[CollectorThread]:
    with CollectorThread(settings.model_copy(update={"collector_write_keys": {WRITE_KEY: "hostile"}})) as running:
        yield running


def topic_size(bootstrap: str, topic: str) -> int:
    """Messages on the topic: the sum of its partitions' end offsets (everything was acknowledged already)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    try:
        partitions = [TopicPartition(topic, number) for number in consumer.partitions_for_topic(topic) or ()]
        return sum(consumer.end_offsets(partitions).values())
    finally:
        consumer.close()


def test_hostile_input_never_breaks_the_collector(collector: CollectorThread, settings: Settings) -> None:
    started = time.monotonic()
    run = uuid.uuid4().hex[:8]
    expected: list[str] = []  # messageIds of the good events

    def call(n: int, **extra: Any) -> dict[str, Any]:
        return {
            "type": "track",
            "event": "Product Viewed",
            "userId": f"shopper-{run}-{n % 3}",
            "messageId": f"{run}-{n}",
            "properties": {"product_id": f"p{n}"},
            **extra,
        }

    def good(document: dict[str, Any]) -> bytes:
        expected.append(document["messageId"])
        return orjson.dumps(document)

    def post(path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        response = requests.post(f"{collector.url}{path}", data=body, headers=HEADERS, timeout=30)
        assert response.status_code < 500, f"{path}: {response.status_code} {response.text}"
        return response.status_code, response.json()

    def identify(traits: bytes) -> bytes:
        return b'{"userId":"deep-' + run.encode() + b'","traits":' + traits + b"}"

    deep_traits = "traits" + ".a" * 31 + DEPTH_ERROR
    products = {"products": [{"product_id": "p"}] * 10_000}
    # (path, body, what the refusal must say, whether it reached the event checks and so is a dead letter)
    hostile: list[tuple[str, bytes, str, bool]] = [
        *(("/v1/identify", identify(nested_raw(levels)), deep_traits, True) for levels in (33, 253, 254, 300)),
        ("/v1/identify", identify(nested_raw(5000)), "malformed JSON: depth limit exceeded", False),
        ("/v1/track", orjson.dumps(call(-1, userId="u" * 30_000)), "userId: 30000 characters; at most 256", True),
        (
            "/v1/track",
            orjson.dumps(call(-2, event="Cart Viewed", properties=products)),
            "properties.products: 10000 items; at most 256",
            True,
        ),
        ("/v1/track", b'{"userId":"u","event":"x","properties":{"v":NaN}}', "NaN and Infinity are not JSON", False),
        ("/v1/track", b'{"userId":"u","event":"x","properties":{"v":1e400}}', "number is infinity", False),
        ("/v1/track", b'{"userId":"u\xff","event":"x"}', "not valid UTF-8", False),
        (
            "/v1/track",
            orjson.dumps(call(-3, timestamp="1970-01-01T00:00:00Z")),
            "timestamp: 1970-01-01T00:00:00+00:00 is before 2000-01-01",
            True,
        ),
        (
            "/v1/track",
            orjson.dumps(call(-4, timestamp="9999-12-31T23:59:59Z")),
            "timestamp: 9999-12-31T23:59:59+00:00 is more than 900s after the time it was received",
            True,
        ),
        (
            "/v1/track",
            orjson.dumps(call(-5, userId="contact:phone:0123")),
            "userId: ids starting with 'contact:' are reserved",
            True,
        ),
        (
            "/v1/alias",
            orjson.dumps({"userId": f"u-{run}", "previousId": "contact:email:0123"}),
            "previousId: ids starting with 'contact:' are reserved",
            True,
        ),
    ]
    dead_letters: list[str] = []
    for path, body, reason, dead_lettered in hostile:
        status, answer = post(path, body)
        assert 400 <= status < 500 and reason in answer["error"], (path, reason, status, answer)
        if dead_lettered:
            dead_letters.append(answer["error"])

    # Good single calls, among them 40 identifies that each bring new traits.
    for n in range(5):
        assert post("/v1/track", good(call(n))) == (200, {"success": True})
    for n in range(40):
        traits = {f"trait_{n}_{k}": f"value {k}" for k in range(60)}
        grown = {"userId": f"grower-{run}", "messageId": f"{run}-identify-{n}", "traits": traits}
        assert post("/v1/identify", good(grown))[0] == 200

    # One batch mixing good and hostile calls: the good are kept, the hostile reported by index.
    hostile_entries = [
        (b'{"type":"identify","userId":"b","traits":' + nested_raw(300) + b"}", deep_traits),
        (b'{"type":"identify","userId":"b","traits":' + nested_raw(1000) + b"}", deep_traits),
        (orjson.dumps(call(-6, anonymousId="a" * 30_000)), "anonymousId: 30000 characters; at most 256"),
        (orjson.dumps(call(-7, userId="contact:email:x")), "userId: ids starting with 'contact:'"),
        (orjson.dumps(call(-8, timestamp="9999-01-01T00:00:00Z")), "timestamp: 9999-01-01T00:00:00+00:00 is more"),
    ]
    entries: list[bytes] = []
    refused: dict[int, str] = {}
    for n, (body, reason) in enumerate(hostile_entries):
        entries.append(good(call(100 + n)))
        refused[len(entries)] = reason
        entries.append(body)
    status, answer = post("/v1/batch", b'{"batch":[' + b",".join(entries) + b"]}")
    assert status == 200, answer
    assert answer["accepted"] == len(hostile_entries)
    reasons = {entry["index"]: entry["reason"] for entry in answer["rejected"]}
    assert set(reasons) == set(refused)
    for index, reason in refused.items():
        assert reasons[index].startswith(reason), (index, reasons[index])
    dead_letters.extend(reasons.values())

    # Every good event exactly once and nothing else; every refusal that reached the checks a dead letter.
    bootstrap = settings.kafka_bootstrap
    messages = read_topic(bootstrap, settings.events_topic, until=lambda found: len(found) >= len(expected))
    assert sorted(parse_event(message.value).message_id or "" for message in messages) == sorted(expected)
    assert topic_size(bootstrap, settings.events_topic) == len(expected)
    letters = read_topic(bootstrap, settings.dead_letter_topic, until=lambda found: len(found) >= len(dead_letters))
    assert topic_size(bootstrap, settings.dead_letter_topic) == len(dead_letters)
    stored = [DeadLetter.model_validate_json(message.value) for message in letters]
    assert sorted(letter.reason for letter in stored) == sorted(dead_letters)
    for letter in stored:
        size = len(letter.value.encode())
        assert size <= settings.limits.dead_letter_bytes
        if size < settings.limits.dead_letter_bytes:
            assert isinstance(orjson.loads(letter.value), dict)  # not cut: the refused call, readable
    assert time.monotonic() - started < 120
