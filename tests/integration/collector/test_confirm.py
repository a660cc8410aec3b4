"""The collector's double opt-in confirmation link with the real broker: a POST of a link the sender signed puts
one confirming identify on the events topic, with its evidence; a GET, a tampered, an expired, a malformed link,
a link for another person and an unsubscribe token each get their own 4xx and put nothing there."""

from __future__ import annotations

from datetime import timedelta

import aiohttp
from aiohttp import web

from schemas.consent import Confirmation, make_confirmation_token
from schemas.events import Event
from schemas.profile import ConsentSource
from schemas.settings import Settings
from schemas.unsubscribe import Unsubscribe, make_token
from streams.collector.app import Collector, build_app
from streams.collector.producer import KafkaEventProducer
from streams.timers import utc_now
from tests.integration.conftest import free_port, read_topic


def tampered(token: str) -> str:
    payload, mac = token.split(".")
    return f"{payload}.{'A' if mac[0] != 'A' else 'B'}{mac[1:]}"


async def test_a_signed_link_confirms_once_and_every_other_link_is_refused_with_its_reason(settings: Settings) -> None:
    app = build_app(Collector(settings, KafkaEventProducer(settings)))
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    expires = int((utc_now() + timedelta(days=1)).timestamp())
    token = make_confirmation_token(Confirmation("ada", "email", expires, "c" * 32), settings.hash_key)
    bob = make_confirmation_token(Confirmation("bob", "email", expires, "d" * 32), settings.hash_key)
    late = make_confirmation_token(Confirmation("ada", "email", expires - 2 * 86400, "c" * 32), settings.hash_key)
    unsubscribe = make_token(Unsubscribe("ada", "email", expires, "c" * 32), settings.hash_key)
    base = f"http://127.0.0.1:{port}/confirm/"
    refusals = [
        ("ada/" + tampered(token), 403, "signature does not match"),
        ("ada/" + late, 410, "expired"),
        ("ada/" + bob, 403, "someone else"),  # Bob's valid link, put on Ada's
        ("ada/" + unsubscribe, 403, "signature does not match"),  # signed for another purpose
        ("ada/not-a-token", 400, "malformed"),
    ]
    agent = {"User-Agent": "Mozilla/5.0 (test)"}
    try:
        async with aiohttp.ClientSession() as client:
            for path, status, reason in refusals:
                async with client.post(base + path, headers=agent) as refused:
                    assert refused.status == status, path
                    assert reason in (await refused.json())["error"]
                async with client.get(base + path) as page:
                    assert page.status == status and 'method="post"' not in await page.text()
            async with client.get(base + "ada/" + token) as page:  # a link scanner's GET: a button, nothing more
                assert page.status == 200 and 'method="post"' in await page.text()
            async with client.post(base + "ada/" + token, headers=agent) as answer:
                assert answer.status == 200 and "confirmed" in await answer.text()
            async with client.post(base + "ada/" + token, headers=agent) as again:  # pressed twice
                assert again.status == 200
    finally:
        await runner.cleanup()
    messages = read_topic(settings.kafka_bootstrap, settings.events_topic, lambda ms: len(ms) >= 2, timeout=5)
    (event,) = [Event.model_validate_json(m.value) for m in messages]
    assert (event.type, event.person_id, event.traits) == ("identify", "ada", {"email_consent": "opted_in"})
    assert event.properties["trigger_id"] == "c" * 32
    assert event.context.consent_source is ConsentSource.CONFIRMATION_LINK
    assert (event.context.ip, event.context.user_agent) == ("127.0.0.1", "Mozilla/5.0 (test)")
    assert messages[0].key == b"ada"
