"""The collector against the real broker: batches, dead letters, and the real Segment and RudderStack SDKs."""

from __future__ import annotations

import asyncio
import base64
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from aiohttp import web
from rudderstack.analytics.client import Client as RudderClient
from segment.analytics.client import Client as SegmentClient

from schemas.events import Event, parse_event
from schemas.settings import Settings
from schemas.triggers import DeadLetter
from streams.collector.app import Collector, build_app
from streams.collector.producer import KafkaEventProducer
from tests.integration.conftest import free_port, read_topic

pytestmark = pytest.mark.integration

WRITE_KEY = "it-write-key"
AUTH = {"Authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()}


class CollectorThread:
    """The collector app served on its own event loop in a thread, so blocking SDKs can call it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._serve, name="collector", daemon=True)

    def __enter__(self) -> CollectorThread:
        self._thread.start()
        assert self._ready.wait(30), "the collector did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())
        self._loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        runner = web.AppRunner(build_app(Collector(self.settings, KafkaEventProducer(self.settings))))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()


@pytest.fixture
def collector(settings: Settings) -> Iterator[CollectorThread]:
    configured = settings.model_copy(update={"collector_write_keys": {WRITE_KEY: "it"}})
    with CollectorThread(configured) as running:
        yield running


def events_on(settings: Settings, count: int) -> list[Any]:
    return read_topic(settings.kafka_bootstrap, settings.events_topic, until=lambda found: len(found) >= count)


def test_batch_valid_events_on_events_topic_and_invalid_on_dead_letters(
    collector: CollectorThread, settings: Settings
) -> None:
    batch = {
        "batch": [
            {"type": "track", "event": "Product Viewed", "userId": "u-1", "properties": {"product_id": "p1"}},
            {"type": "track", "event": "Order Completed", "userId": "u-2", "properties": {}},
            {"type": "page", "anonymousId": "anon-3", "name": "Home"},
        ]
    }
    response = requests.post(f"{collector.url}/v1/batch", json=batch, headers=AUTH, timeout=30)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["accepted"] == 2
    assert [item["index"] for item in answer["rejected"]] == [1]
    reason = answer["rejected"][0]["reason"]
    assert "order_id" in reason

    messages = events_on(settings, 2)
    assert sorted((message.key, parse_event(message.value).type) for message in messages) == [
        (b"anon-3", "page"),
        (b"u-1", "track"),
    ]
    letters = read_topic(settings.kafka_bootstrap, settings.dead_letter_topic, until=lambda found: len(found) >= 1)
    (letter,) = [DeadLetter.model_validate_json(message.value) for message in letters]
    assert (letter.reason, letter.topic, letters[0].key) == (reason, "collector", b"u-2")
    assert '"Order Completed"' in letter.value


def test_segment_and_rudderstack_sdks_deliver(collector: CollectorThread, settings: Settings) -> None:
    errors: list[Any] = []
    segment = SegmentClient(
        write_key=WRITE_KEY, host=collector.url, sync_mode=True, max_retries=0, on_error=lambda e, b: errors.append(e)
    )
    rudder = RudderClient(
        write_key=WRITE_KEY, host=collector.url, sync_mode=True, max_retries=0, on_error=lambda e, b: errors.append(e)
    )
    run = uuid.uuid4().hex[:8]
    for name, client in (("segment", segment), ("rudder", rudder)):
        person = f"{name}-{run}"
        client.track(user_id=person, event="Product Added", properties={"product_id": "sku-1", "price": 9.5})
        client.identify(user_id=person, traits={"email": f"{person}@Example.com", "phone": "(415) 555-2671"})
        client.page(user_id=person, name="Cart", properties={"url": "https://shop.example/cart"})
    assert errors == []

    messages = events_on(settings, 6)
    events: dict[tuple[str, str], Event] = {}
    for message in messages:
        event = parse_event(message.value)
        assert message.key == event.person_id.encode()
        events[(event.person_id, event.type)] = event
    for name in ("segment", "rudder"):
        person = f"{name}-{run}"
        assert set(events) >= {(person, "track"), (person, "identify"), (person, "page")}
        track = events[(person, "track")]
        assert (track.event, track.properties["product_id"]) == ("Product Added", "sku-1")
        assert track.received_at is not None
        assert track.model_extra is not None and "originalTimestamp" in track.model_extra  # SDKs send sentAt
        traits = events[(person, "identify")].traits
        assert (traits["email"], traits["email_status"]) == (f"{person}@example.com", "valid")
        assert (traits["phone"], traits["phone_status"]) == ("+14155552671", "valid")
        assert events[(person, "page")].name == "Cart"


def test_unreachable_broker_is_503(settings: Settings) -> None:
    nowhere = settings.model_copy(
        update={"kafka_bootstrap": f"127.0.0.1:{free_port()}", "collector_write_keys": {WRITE_KEY: "it"}}
    )
    with CollectorThread(nowhere) as running:
        response = requests.post(
            f"{running.url}/v1/track", json={"userId": "u", "event": "Signed Up"}, headers=AUTH, timeout=60
        )
    assert response.status_code == 503
    assert "unavailable" in response.json()["error"]
