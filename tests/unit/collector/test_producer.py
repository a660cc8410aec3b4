"""The collector's Kafka producer gives up after NUDGEFLOW_COLLECTOR_ACK_TIMEOUT_SECONDS: a broker that takes
the connection but never acknowledges is answered 503 by then, so the client retries instead of hanging."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from schemas.settings import Settings
from streams.collector.app import Collector, build_app
from streams.collector.producer import KafkaEventProducer
from tests.unit.collector.test_app import API_TOKEN, AUTH, HASH_SECRET, WRITE_KEY, track


@pytest.fixture
def silent_broker() -> Iterator[str]:
    """A port whose TCP connections the kernel completes but nobody reads: a broker that never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()


@pytest.mark.parametrize("ack_timeout", [0.5, 1.5])
async def test_a_broker_that_never_acknowledges_is_503_once_the_ack_timeout_passes(
    silent_broker: str, ack_timeout: float
) -> None:
    settings = Settings(
        kafka_bootstrap=silent_broker,
        collector_ack_timeout_seconds=ack_timeout,
        collector_write_keys={WRITE_KEY: "web"},
        hash_secret=HASH_SECRET,
        api_tokens=[API_TOKEN],
    )
    producer = KafkaEventProducer(settings)
    client: TestClient[Any, Any]
    async with TestClient(TestServer(build_app(Collector(settings, producer)))) as client:
        began = time.monotonic()
        response = await client.post("/v1/track", json=track("u", messageId="m-timeout"), headers=AUTH)
        waited = time.monotonic() - began
        answer = await response.json()
    await producer.close()
    assert response.status == 503
    assert "nothing was accepted" in answer["error"]
    # Not before the timeout, and well before the 15 s default: the setting, not a constant, decides.
    assert ack_timeout <= waited < ack_timeout + 5, waited
