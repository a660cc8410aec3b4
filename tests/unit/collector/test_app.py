"""The collector's HTTP handlers through aiohttp's test client, with an in-memory producer."""

from __future__ import annotations

import base64
import gzip
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from schemas.events import parse_event
from schemas.limits import DEFAULT_LIMITS, Limits
from schemas.privacy import contact_person_id
from schemas.settings import Settings
from schemas.triggers import DeadLetter
from streams.collector import twilio
from streams.collector.app import Collector, build_app
from streams.collector.producer import BrokerUnavailable, Record
from streams.collector.sentiment import classify_reply

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
WRITE_KEY = "unit-write-key"
AUTH = {"Authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()}
TWILIO_TOKEN = "twilio-test-token"
HASH_SECRET = "unit-hash-secret"
API_TOKEN = "unit-api-token"


class MemoryProducer:
    """Keeps what was sent; `down` makes it behave like an unreachable broker."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.down = False

    async def send_all(self, records: Sequence[Record]) -> None:
        if self.down:
            raise BrokerUnavailable("Kafka at test is unavailable")
        self.records.extend(records)

    async def close(self) -> None:
        pass

    def on(self, topic: str) -> list[Record]:
        return [record for record in self.records if record.topic == topic]


@pytest.fixture
def private_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def settings(private_key: ec.EllipticCurvePrivateKey) -> Settings:
    der = private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # Closed, as a shop runs it: a configured write key, verification keys, a hash secret.
    return Settings(
        namespace="unit",
        collector_write_keys={WRITE_KEY: "web"},
        hash_secret=HASH_SECRET,
        api_tokens=[API_TOKEN],
        sendgrid_public_key=base64.b64encode(der).decode(),
        twilio_auth_token=TWILIO_TOKEN,
    )


@pytest.fixture
def producer() -> MemoryProducer:
    return MemoryProducer()


@pytest.fixture
async def client(settings: Settings, producer: MemoryProducer) -> AsyncIterator[TestClient[Any, Any]]:
    app = build_app(Collector(settings, producer, clock=lambda: NOW))
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


def track(person: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "event": "Product Viewed",
        "userId": person,
        "timestamp": "2026-11-29T11:59:00Z",
        "properties": {"product_id": "p1"},
        **extra,
    }


async def test_track_is_produced_keyed_by_person(client: TestClient[Any, Any], producer: MemoryProducer) -> None:
    response = await client.post("/v1/track", json=track("u1", type="identify"), headers=AUTH)
    assert response.status == 200
    assert await response.json() == {"success": True}
    (record,) = producer.records
    assert (record.topic, record.key) == ("unit.events", b"u1")
    event = parse_event(record.value)
    assert event.type == "track"  # the route decides
    assert event.received_at == NOW
    assert event.message_id


async def test_write_key_in_body_and_gzip(client: TestClient[Any, Any], producer: MemoryProducer) -> None:
    body = gzip.compress(orjson.dumps({**track("u2"), "writeKey": WRITE_KEY}))
    response = await client.post(
        "/v1/page", data=body, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"}
    )
    assert response.status == 200, await response.text()
    assert parse_event(producer.records[0].value).type == "page"


@pytest.mark.parametrize(
    ("headers", "body", "error"),
    [
        ({}, track("u"), "missing write key"),
        ({"Authorization": "Basic " + base64.b64encode(b"wrong:").decode()}, track("u"), "unknown write key"),
        ({}, {**track("u"), "writeKey": "wrong"}, "unknown write key"),
    ],
)
async def test_missing_or_unknown_write_key_is_401(
    client: TestClient[Any, Any], producer: MemoryProducer, headers: dict[str, str], body: Any, error: str
) -> None:
    response = await client.post("/v1/track", json=body, headers=headers)
    assert response.status == 401
    assert (await response.json())["error"].startswith(error)
    assert producer.records == []


async def test_malformed_json_and_bad_gzip_are_400(client: TestClient[Any, Any], producer: MemoryProducer) -> None:
    response = await client.post("/v1/track", data=b'{"type": ', headers=AUTH)
    assert response.status == 400
    assert (await response.json())["error"].startswith("malformed JSON")
    # The answer to a body it could not inflate closes the connection: what is left of that body must not
    # be read as the next request's (a kept-alive client would see its next call reset).
    broken = {**AUTH, "Content-Encoding": "gzip"}
    response = await client.post("/v1/batch", data=b"not gzip", headers=broken)
    assert response.status == 400
    assert response.headers.get("Connection", "").lower() == "close"
    assert (await response.json())["success"] is False
    assert producer.records == []
    assert (await client.post("/v1/track", json=track("u"), headers=AUTH)).status == 200  # still serving


async def test_invalid_single_call_is_400_and_dead_lettered(
    client: TestClient[Any, Any], producer: MemoryProducer
) -> None:
    response = await client.post("/v1/track", json={"userId": "u", "event": "Product Viewed"}, headers=AUTH)
    assert response.status == 400
    reason = (await response.json())["error"]
    assert "product_id" in reason
    (record,) = producer.on("unit.events.dlq")
    letter = DeadLetter.model_validate_json(record.value)
    assert (letter.reason, letter.topic, record.key) == (reason, "collector", b"u")
    assert producer.on("unit.events") == []


async def test_oversized_event_and_batch_are_413(client: TestClient[Any, Any], producer: MemoryProducer) -> None:
    # Each string within its limit, the event as a whole over the event_bytes limit.
    big = track("u", properties={"product_id": "p", **{f"blob{n}": "x" * 2000 for n in range(20)}})
    response = await client.post("/v1/track", json=big, headers=AUTH)
    assert response.status == 413
    assert "at most 32768 bytes are accepted per event" in (await response.json())["error"]
    huge = {"batch": [track(f"u{n}", properties={"product_id": "p", "blob": "x" * 30_000}) for n in range(20)]}
    response = await client.post("/v1/batch", json=huge, headers=AUTH)
    assert response.status == 413
    assert f"at most {DEFAULT_LIMITS.batch_bytes} bytes" in (await response.json())["error"]
    # The limit holds for the inflated body too, whatever the compressed size.
    bomb = gzip.compress(orjson.dumps({"batch": [track("u", properties={"product_id": "p", "z": "0" * 600_000})]}))
    response = await client.post("/v1/batch", data=bomb, headers={**AUTH, "Content-Encoding": "gzip"})
    assert response.status == 413
    assert producer.records == []


async def test_batch_keeps_valid_events_and_reports_rejects(
    client: TestClient[Any, Any], producer: MemoryProducer
) -> None:
    batch = {
        "batch": [
            track("u1", messageId="m1"),
            {"type": "track", "userId": "u2"},
            {"type": "identify", "anonymousId": "a3", "traits": {"email": "x@mailinator.com", "phone": "4155552671"}},
        ]
    }
    response = await client.post("/v1/batch", json=batch, headers=AUTH)
    assert response.status == 200
    answer = await response.json()
    assert answer == {
        "success": True,
        "accepted": 2,
        "duplicates": 0,
        "rejected": [{"index": 1, "reason": "event: Value error, a track event needs an event name"}],
    }
    events = [parse_event(record.value) for record in producer.on("unit.events")]
    assert [record.key for record in producer.on("unit.events")] == [b"u1", b"a3"]
    assert events[1].traits == {
        "email": "x@mailinator.com",
        "email_status": "disposable",
        "phone": "+14155552671",
        "phone_status": "valid",
    }
    (letter,) = [DeadLetter.model_validate_json(record.value) for record in producer.on("unit.events.dlq")]
    assert letter.reason == answer["rejected"][0]["reason"]

    # A retry of the same batch: m1 is a duplicate, the event without messageId got a fresh one.
    again = await (await client.post("/v1/import", json=batch, headers=AUTH)).json()
    assert (again["accepted"], again["duplicates"]) == (1, 1)


async def test_batch_with_only_invalid_events_is_400(client: TestClient[Any, Any], producer: MemoryProducer) -> None:
    response = await client.post("/v1/batch", json={"batch": [{"type": "nope", "userId": "u"}]}, headers=AUTH)
    assert response.status == 400
    answer = await response.json()
    assert (answer["success"], answer["accepted"], answer["rejected"][0]["index"]) == (False, 0, 0)
    assert len(producer.on("unit.events.dlq")) == 1


async def test_broker_down_is_503_and_nothing_is_remembered(
    client: TestClient[Any, Any], producer: MemoryProducer
) -> None:
    producer.down = True
    response = await client.post("/v1/track", json=track("u", messageId="m-503"), headers=AUTH)
    assert response.status == 503
    assert "nothing was accepted" in (await response.json())["error"]
    producer.down = False
    response = await client.post("/v1/track", json=track("u", messageId="m-503"), headers=AUTH)
    assert await response.json() == {"success": True}  # the retry is not taken for a duplicate
    assert len(producer.records) == 1


async def test_unknown_route_and_method_are_json(client: TestClient[Any, Any]) -> None:
    response = await client.get("/v1/track")
    assert response.status == 405
    assert (await response.json())["success"] is False
    # Only the listed paths are public: anything else needs a token before it can even be missing.
    assert (await client.post("/v2/track")).status == 401
    assert (await client.post("/v2/track", headers={"Authorization": f"Bearer {API_TOKEN}"})).status == 404


async def test_openapi_lists_every_endpoint(client: TestClient[Any, Any]) -> None:
    document = await (await client.get("/openapi.json")).json()
    assert document["openapi"].startswith("3.")
    for path in ("track", "identify", "page", "screen", "alias", "group", "batch", "import"):
        assert f"/v1/{path}" in document["paths"]
    assert {"/webhooks/sendgrid", "/webhooks/twilio/status", "/webhooks/twilio/inbound"} <= set(document["paths"])


async def test_sendgrid_signed_events(
    client: TestClient[Any, Any], producer: MemoryProducer, private_key: ec.EllipticCurvePrivateKey
) -> None:
    body = orjson.dumps(
        [
            {"event": "open", "email": "ann@x.com", "timestamp": 1764417600, "sg_event_id": "e1", "trigger_id": "t1"},
            {"event": "processed", "email": "ann@x.com", "timestamp": 1764417600},
        ]
    )
    timestamp = str(int(NOW.timestamp()) - 10)
    signature = base64.b64encode(private_key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))).decode()
    headers = {
        "X-Twilio-Email-Event-Webhook-Signature": signature,
        "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
        "Content-Type": "application/json",
    }
    forged = await client.post("/webhooks/sendgrid", data=body.replace(b"open", b"click"), headers=headers)
    assert forged.status == 401
    assert producer.records == []
    response = await client.post("/webhooks/sendgrid", data=body, headers=headers)
    assert response.status == 200
    assert (await response.json())["accepted"] == 1
    (record,) = producer.records
    event = parse_event(record.value)
    # No person_id custom arg: the event is about the address, which the worker maps to its people.
    contact = contact_person_id("email", "ann@x.com", HASH_SECRET.encode())
    assert (record.key, event.event, event.properties["trigger_id"]) == (contact.encode(), "Email Opened", "t1")
    assert event.properties["email"] == "ann@x.com"


def twilio_post(client: TestClient[Any, Any], path: str, form: dict[str, str], token: str = TWILIO_TOKEN) -> Any:
    url = str(client.make_url(path))
    signature = twilio.expected_signature(token, url, form.items())
    return client.post(
        path,
        data=urlencode(form),
        headers={"X-Twilio-Signature": signature, "Content-Type": "application/x-www-form-urlencoded"},
    )


async def test_twilio_inbound_stop_opts_out(client: TestClient[Any, Any], producer: MemoryProducer) -> None:
    form = {"MessageSid": "SM1", "From": "+14155552671", "To": "+18005551212", "Body": "Stop"}
    forged = await twilio_post(client, "/webhooks/twilio/inbound", form, token="wrong")
    assert forged.status == 401
    assert producer.records == []
    response = await twilio_post(client, "/webhooks/twilio/inbound", form)
    assert response.status == 200
    assert "<Response>" in await response.text()
    reply, identify = (parse_event(record.value) for record in producer.records)
    assert (reply.event, identify.type, identify.traits["sms_consent"]) == ("SMS Replied", "identify", "opted_out")
    assert reply.context.consent_source == identify.context.consent_source == "sms_keyword"
    assert identify.traits["phone_status"] == "valid"
    # No person_id in the callback URL: the number's contact id, never the number itself, is the person.
    contact = contact_person_id("phone", "+14155552671", HASH_SECRET.encode())
    assert reply.user_id == identify.user_id == contact
    assert [record.key for record in producer.records] == [contact.encode()] * 2
    assert reply.properties["from"] == "+14155552671"


@pytest.mark.parametrize(
    ("body", "sentiment"),
    [("stop texting me, this is spam", "negative"), ("太好了谢谢", "positive"), ("where is my order", "neutral")],
)
async def test_twilio_inbound_reply_carries_its_sentiment(
    client: TestClient[Any, Any], producer: MemoryProducer, body: str, sentiment: str
) -> None:
    form = {"MessageSid": "SM9", "From": "+14155552671", "To": "+18005551212", "Body": body}
    response = await twilio_post(client, "/webhooks/twilio/inbound?person_id=ann", form)
    assert response.status == 200
    (record,) = producer.records  # not a keyword: no consent change
    reply = parse_event(record.value)
    assert (record.key, reply.event, reply.properties["body"]) == (b"ann", "SMS Replied", body)
    assert reply.properties["sentiment"] == sentiment
    score = reply.properties["sentimentScore"]
    assert {"negative": -1 <= score < 0, "neutral": score == 0, "positive": 0 < score <= 1}[sentiment]


async def test_twilio_inbound_reply_is_classified_from_the_configured_reply_text_length(
    settings: Settings, producer: MemoryProducer
) -> None:
    # Read in full the reply objects; its first 16 characters alone are thanks.
    body = "Thanks, love it! But stop texting me, not interested"
    limited = settings.model_copy(update={"limits": Limits(reply_text_length=16)})
    app = build_app(Collector(limited, producer, clock=lambda: NOW))
    async with TestClient(TestServer(app)) as client:
        form = {"MessageSid": "SM10", "From": "+14155552671", "To": "+18005551212", "Body": body}
        response = await twilio_post(client, "/webhooks/twilio/inbound?person_id=ann", form)
    assert response.status == 200
    (record,) = producer.records
    reply = parse_event(record.value)
    assert (reply.properties["body"], reply.properties["sentiment"]) == (body, "positive")
    assert classify_reply(body).label == "negative"  # what the default limit would have read


async def test_twilio_status_delivered(client: TestClient[Any, Any], producer: MemoryProducer) -> None:
    form = {"MessageSid": "SM2", "MessageStatus": "delivered", "To": "+14155552671"}
    response = await twilio_post(client, "/webhooks/twilio/status?trigger_id=t-5", form)
    assert response.status == 200
    (record,) = producer.records
    event = parse_event(record.value)
    contact = contact_person_id("phone", "+14155552671", HASH_SECRET.encode())
    assert (event.event, event.properties["trigger_id"], record.key) == ("SMS Delivered", "t-5", contact.encode())
    missing = await twilio_post(client, "/webhooks/twilio/status", {"MessageStatus": "delivered"})
    assert missing.status == 400


async def test_metrics_count_requests_and_events_by_outcome(client: TestClient[Any, Any]) -> None:
    batch = {"batch": [track("u1", messageId="m1"), track("u1", messageId="m1"), {"type": "track", "userId": "u2"}]}
    assert (await client.post("/v1/batch", json=batch, headers=AUTH)).status == 200
    assert (await client.post("/v1/track", json=track("u3"))).status == 401
    exposition = await (await client.get("/metrics")).text()
    assert 'nudgeflow_collector_events_total{outcome="accepted",source="web"} 1.0' in exposition
    assert 'nudgeflow_collector_events_total{outcome="duplicate",source="web"} 1.0' in exposition
    assert 'nudgeflow_collector_events_total{outcome="rejected",source="web"} 1.0' in exposition
    assert 'nudgeflow_collector_requests_total{route="/v1/track",status="401"} 1.0' in exposition


async def test_a_consent_statement_keeps_who_sent_it_and_other_calls_do_not(
    client: TestClient[Any, Any], producer: MemoryProducer
) -> None:
    stated = {"userId": "u1", "traits": {"email_consent": "opted_in"}, "context": {"consentSource": "form"}}
    response = await client.post("/v1/identify", json=stated, headers={**AUTH, "User-Agent": "ShopForm/2.1"})
    assert response.status == 200
    browsing = await client.post("/v1/track", json=track("u1"), headers={**AUTH, "User-Agent": "ShopForm/2.1"})
    assert browsing.status == 200
    consent, viewed = (parse_event(record.value) for record in producer.records)
    assert (consent.context.consent_source, consent.context.ip) == ("form", "127.0.0.1")
    assert consent.context.user_agent == "ShopForm/2.1"
    # Data minimisation: a page view is not a consent and keeps no address it was not sent with.
    assert (viewed.context.ip, viewed.context.user_agent) == (None, None)


async def test_a_client_cannot_pass_its_call_off_as_a_reply_or_a_link(
    client: TestClient[Any, Any], producer: MemoryProducer
) -> None:
    forged = {"userId": "u1", "traits": {"sms_consent": "opted_in"}, "context": {"consentSource": "sms_keyword"}}
    response = await client.post("/v1/identify", json=forged, headers=AUTH)
    assert response.status == 400
    error = (await response.json())["error"]
    assert error.startswith("context.consentSource: sms_keyword is set by the collector itself")
    assert [record.topic for record in producer.records] == ["unit.events.dlq"]
