"""The collector's one-click unsubscribe with the real broker: a POST with a token the sender signed puts
`Email Unsubscribed` on the events topic once; a GET, a forged or an expired token put nothing there."""

from __future__ import annotations

from datetime import timedelta

import aiohttp
from aiohttp import web

from schemas.events import Event
from schemas.settings import Settings
from schemas.unsubscribe import Unsubscribe, make_token
from streams.collector.app import Collector, build_app
from streams.collector.producer import KafkaEventProducer
from streams.timers import utc_now
from tests.integration.conftest import free_port, read_topic


async def test_one_click_unsubscribe_puts_the_opt_out_on_the_events_topic_once(settings: Settings) -> None:
    app = build_app(Collector(settings, KafkaEventProducer(settings)))
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    expires = int((utc_now() + timedelta(days=1)).timestamp())
    token = make_token(Unsubscribe("shopper-000042", "email", expires, "a" * 32), settings.hash_key)
    forged = make_token(Unsubscribe("shopper-000007", "email", expires, ""), b"not the deployment's key")
    late = make_token(Unsubscribe("shopper-000007", "email", expires - 2 * 86400, ""), settings.hash_key)
    base = f"http://127.0.0.1:{port}/unsubscribe/"
    one_click = {
        "data": b"List-Unsubscribe=One-Click",
        "headers": {"Content-Type": "application/x-www-form-urlencoded"},
    }
    try:
        async with aiohttp.ClientSession() as client:
            async with client.get(base + token) as page:  # a link scanner's GET
                assert page.status == 200 and 'method="post"' in await page.text()
            async with client.post(base + token, **one_click) as answer:
                assert answer.status == 200 and (await answer.json()) == {"success": True}
            async with client.post(base + token, **one_click) as again:  # pressed twice
                assert again.status == 200
            async with client.post(base + token, headers={"Accept": "text/html"}) as from_page:
                assert from_page.status == 200 and "Unsubscribed" in await from_page.text()
            for bad, reason in [(forged, "signature"), (late, "expired"), ("x", "malformed")]:
                async with client.post(base + bad, **one_click) as refused:
                    assert refused.status == 400 and reason in (await refused.json())["error"]
            async with client.get(base + forged) as bad_page:
                assert bad_page.status == 400
    finally:
        await runner.cleanup()
    messages = read_topic(settings.kafka_bootstrap, settings.events_topic, lambda ms: len(ms) >= 2, timeout=5)
    events = [Event.model_validate_json(m.value) for m in messages]
    assert [(e.event, e.person_id, e.properties["trigger_id"]) for e in events] == [
        ("Email Unsubscribed", "shopper-000042", "a" * 32)
    ]
    assert messages[0].key == b"shopper-000042"
