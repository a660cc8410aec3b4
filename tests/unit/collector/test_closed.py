"""The collector closed by default: write keys, webhook verification and replays, /metrics behind a token."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from schemas.settings import DEMO_WRITE_KEY, Settings
from streams.collector import twilio
from streams.collector.app import Collector, build_app
from tests.unit.collector.test_app import AUTH, HASH_SECRET, NOW, TWILIO_TOKEN, WRITE_KEY, MemoryProducer, track

DEMO_AUTH = {"Authorization": "Basic " + base64.b64encode(f"{DEMO_WRITE_KEY}:".encode()).decode()}
SENDGRID_BODY = orjson.dumps([{"event": "open", "email": "ann@x.com", "timestamp": 1764417600, "person_id": "u1"}])
TWILIO_FORM = {"MessageSid": "SM1", "From": "+14155552671", "Body": "hi", "To": "+18005551212"}
FORM_HEADERS = {"Content-Type": "application/x-www-form-urlencoded"}

Client = TestClient[Any, Any]
Serve = Callable[..., Any]


@pytest.fixture
def serve() -> Serve:
    """An app for the given settings (plus a hash secret), answering with the fixed clock."""

    @asynccontextmanager
    async def running(listen_host: str | None = None, **values: Any) -> AsyncIterator[tuple[Client, MemoryProducer]]:
        producer = MemoryProducer()
        settings = Settings(namespace="unit", hash_secret=HASH_SECRET, **values)
        app = build_app(Collector(settings, producer, clock=lambda: NOW), listen_host=listen_host)
        async with TestClient(TestServer(app)) as client:
            yield client, producer

    return running


def sendgrid_keys() -> tuple[ec.EllipticCurvePrivateKey, str]:
    private = ec.generate_private_key(ec.SECP256R1())
    der = private.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, base64.b64encode(der).decode()


def sendgrid_headers(private: ec.EllipticCurvePrivateKey, timestamp: str, body: bytes) -> dict[str, str]:
    signature = base64.b64encode(private.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))).decode()
    return {
        "X-Twilio-Email-Event-Webhook-Signature": signature,
        "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
        "Content-Type": "application/json",
    }


async def test_the_development_key_works_only_in_demo_mode(serve: Serve) -> None:
    async with serve() as (client, producer):
        response = await client.post("/v1/track", json=track("u"), headers=DEMO_AUTH)
        assert response.status == 401
        assert (await response.json())["error"] == "unknown write key"
    async with serve(collector_write_keys={WRITE_KEY: "web"}) as (client, producer):
        assert (await client.post("/v1/track", json=track("u"), headers=DEMO_AUTH)).status == 401
        assert (await client.post("/v1/track", json=track("u"), headers=AUTH)).status == 200
    async with serve(demo=True) as (client, producer):
        assert (await client.post("/v1/track", json=track("u"), headers=DEMO_AUTH)).status == 200
        assert (await client.post("/v1/track", json=track("u"), headers=AUTH)).status == 401
    assert len(producer.records) == 1


@pytest.mark.parametrize(
    ("path", "setting"),
    [
        ("/webhooks/sendgrid", "NUDGEFLOW_SENDGRID_PUBLIC_KEY"),
        ("/webhooks/twilio/inbound", "NUDGEFLOW_TWILIO_AUTH_TOKEN"),
        ("/webhooks/twilio/status", "NUDGEFLOW_TWILIO_AUTH_TOKEN"),
    ],
)
async def test_webhooks_without_a_verification_key_are_refused(serve: Serve, path: str, setting: str) -> None:
    body, headers = (
        (SENDGRID_BODY, {"Content-Type": "application/json"})
        if "sendgrid" in path
        else (urlencode({**TWILIO_FORM, "MessageStatus": "delivered"}).encode(), FORM_HEADERS)
    )
    async with serve() as (client, producer):
        response = await client.post(path, data=body, headers=headers)
        assert response.status == 401
        assert setting in (await response.json())["error"]
        assert producer.records == []
    for opened in ({"allow_unsigned_webhooks": True}, {"demo": True}):
        async with serve(**opened) as (client, producer):
            response = await client.post(path, data=body, headers=headers)
            assert response.status == 200, await response.text()
            assert producer.records


async def test_sendgrid_signed_posts_must_be_recent(serve: Serve) -> None:
    private, public = sendgrid_keys()
    async with serve(sendgrid_public_key=public, sendgrid_max_age_seconds=300) as (client, _):
        for offset, status in ((-301, 401), (301, 401), (-299, 200), (299, 200)):
            stamp = str(int((NOW + timedelta(seconds=offset)).timestamp()))
            response = await client.post(
                "/webhooks/sendgrid", data=SENDGRID_BODY, headers=sendgrid_headers(private, stamp, SENDGRID_BODY)
            )
            assert response.status == status, (offset, await response.text())
            if status == 401:
                assert "replay" in (await response.json())["error"]
        unsigned = await client.post("/webhooks/sendgrid", data=SENDGRID_BODY, headers={"Content-Type": "x"})
        assert unsigned.status == 401
        # allow_unsigned_webhooks does not lift verification once a key is configured.
    async with serve(sendgrid_public_key=public, allow_unsigned_webhooks=True) as (client, _):
        unsigned = await client.post("/webhooks/sendgrid", data=SENDGRID_BODY, headers={"Content-Type": "x"})
        assert unsigned.status == 401


async def test_twilio_signatures_hold_behind_a_proxy(serve: Serve) -> None:
    public_url = "https://hooks.shop.example"
    path = "/webhooks/twilio/inbound?person_id=u-1&trigger_id=t%201"
    async with serve(twilio_auth_token=TWILIO_TOKEN, webhook_public_url=public_url + "/") as (client, producer):
        local = str(client.make_url(path))
        as_called = twilio.expected_signature(TWILIO_TOKEN, public_url + path, TWILIO_FORM.items())
        as_seen_here = twilio.expected_signature(TWILIO_TOKEN, local, TWILIO_FORM.items())
        response = await client.post(
            path, data=urlencode(TWILIO_FORM), headers={**FORM_HEADERS, "X-Twilio-Signature": as_seen_here}
        )
        assert response.status == 401
        response = await client.post(
            path, data=urlencode(TWILIO_FORM), headers={**FORM_HEADERS, "X-Twilio-Signature": as_called}
        )
        assert response.status == 200, await response.text()
        assert producer.records[0].key == b"u-1"
    async with serve(twilio_auth_token=TWILIO_TOKEN) as (client, _):
        # Without the setting, the URL this server was called on is what is signed.
        as_seen_here = twilio.expected_signature(TWILIO_TOKEN, str(client.make_url(path)), TWILIO_FORM.items())
        response = await client.post(
            path, data=urlencode(TWILIO_FORM), headers={**FORM_HEADERS, "X-Twilio-Signature": as_seen_here}
        )
        assert response.status == 200, await response.text()


async def test_metrics_open_on_loopback_only(serve: Serve) -> None:
    token = {"Authorization": "Bearer metrics-token"}
    async with serve(api_tokens=["metrics-token"]) as (client, _):
        assert (await client.get("/metrics")).status == 200
    async with serve(listen_host="0.0.0.0", api_tokens=["metrics-token"]) as (client, _):
        response = await client.get("/metrics")
        assert response.status == 401
        assert "bearer token" in (await response.json())["error"]
        assert (await client.get("/metrics", headers={"Authorization": "Bearer wrong"})).status == 401
        assert (await client.get("/metrics", headers=token)).status == 200
        # Ingestion, webhooks and the description stay public: write keys and signatures guard them.
        assert (await client.get("/openapi.json")).status == 200
        assert (await client.post("/v1/track", json=track("u"))).status == 401  # the write key's 401
        assert "write key" in (await (await client.post("/v1/batch", json={})).json())["error"]
        assert "NUDGEFLOW_SENDGRID_PUBLIC_KEY" in (await (await client.post("/webhooks/sendgrid")).json())["error"]
    async with serve(collector_host="0.0.0.0") as (client, _):
        assert (await client.get("/metrics")).status == 401  # the collector_host setting decides by default
