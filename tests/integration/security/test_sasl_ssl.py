"""Every client over SASL_SSL with SCRAM against the real broker, and the pipeline's journey through them;
wrong credentials fail at start, precisely (the processes' own refusals: test_start_check.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError
from kafka import KafkaAdminClient
from kafka.errors import KafkaTimeoutError

from schemas.connections import aiokafka_options, kafka_python_options
from schemas.settings import Settings
from streams.broker.topics import ensure_topics
from tests.e2e.test_shopper_journey import AUTH, call, eventually
from tests.integration.conftest import API_AUTH
from tests.integration.hostile import Service, collector_service, sink_service, wait_for_http
from tests.integration.security.conftest import SecureBroker, secure_environment, secure_settings
from tests.integration.test_worker import with_rules


async def round_trip(settings: Settings) -> bytes:
    producer = AIOKafkaProducer(**aiokafka_options(settings), acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(settings.events_topic, b"over-tls", key=b"ada")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        settings.events_topic, **aiokafka_options(settings), group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        message = await asyncio.wait_for(consumer.getone(), 60)
    finally:
        await consumer.stop()
    return bytes(message.value)


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_admin_producer_and_consumer_work_over_sasl_ssl(
    secure_broker: SecureBroker, tmp_path: Path, mechanism: str
) -> None:
    settings = secure_settings(secure_broker, tmp_path, kafka_sasl_mechanism=mechanism)
    ensure_topics(settings)  # kafka-python's admin client, through the same options
    assert asyncio.run(round_trip(settings)) == b"over-tls"


async def start_producer(settings: Settings) -> None:
    producer = AIOKafkaProducer(**aiokafka_options(settings))
    try:
        await asyncio.wait_for(producer.start(), 90)  # a hang would end here as a TimeoutError
    finally:
        await producer.stop()


def test_a_wrong_password_fails_at_start(
    secure_broker: SecureBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = secure_settings(secure_broker, tmp_path, kafka_password="wrong")
    # aiokafka raises "Unable to bootstrap" and logs the broker's reason beside it.
    with pytest.raises(KafkaConnectionError, match="Unable to bootstrap"):
        asyncio.run(start_producer(settings))
    assert "invalid credentials" in caplog.text
    caplog.clear()
    # kafka-python gives up after kafka_timeout_seconds (bounded, not a hang).
    with pytest.raises(KafkaTimeoutError, match="Unable to bootstrap"):
        KafkaAdminClient(**kafka_python_options(settings))


def test_an_untrusted_certificate_fails_at_start(secure_broker: SecureBroker, tmp_path: Path) -> None:
    settings = secure_settings(secure_broker, tmp_path, kafka_ca_file=secure_broker.other_ca_file)
    with pytest.raises(Exception) as refused:
        asyncio.run(start_producer(settings))
    assert not isinstance(refused.value, TimeoutError), "the client hung instead of refusing the certificate"


def test_an_event_becomes_a_trigger_in_clickhouse_with_every_process_over_sasl_ssl(
    secure_broker: SecureBroker, tmp_path: Path
) -> None:
    """The collector, the worker and the sink know only the SASL_SSL listener: an abandoned cart posted to the
    collector reaches the worker, whose reminder the sink writes to chDB."""
    settings = with_rules(secure_settings(secure_broker, tmp_path), tmp_path, delay="2s")
    environment = secure_environment(settings, NUDGEFLOW_COLLECTOR_WRITE_KEYS='{"e2e-key": "web"}')
    services = [
        collector_service(settings, environment, tmp_path / "collector.log", settings.collector_port),
        Service("worker", ["worker"], environment, tmp_path / "worker.log"),
        sink_service(settings, environment, tmp_path / "sink.log"),
    ]
    collector = f"http://127.0.0.1:{settings.collector_port}"
    sink = f"http://127.0.0.1:{settings.sink_web_port}"
    try:
        for service in services:
            service.start()
        wait_for_http(f"{collector}/openapi.json", services[0])
        wait_for_http(f"http://127.0.0.1:{settings.worker_web_port}/metrics", services[1])
        wait_for_http(f"{sink}/metrics", services[2])

        login = {"userId": "ada", "traits": {"email": "ada@example.com", "email_consent": "opted_in"}}
        assert call("POST", f"{collector}/v1/identify", login, {"Authorization": AUTH}) == (200, {"success": True})
        added = {"type": "track", "event": "Product Added", "userId": "ada",
                 "properties": {"product_id": "sku-1", "price": 42.0, "cart_id": "c1"}}  # fmt: skip
        assert call("POST", f"{collector}/v1/track", added, {"Authorization": AUTH})[0] == 200

        def reminded() -> Any:
            status, document = call("GET", f"{sink}/api/people/ada/export", headers=API_AUTH)
            return document["tables"]["triggers"] if status == 200 and document["tables"].get("triggers") else None

        try:
            (reminder,) = eventually(reminded, "ada's cart reminder in ClickHouse", within=120)
        except AssertionError:
            raise AssertionError("\n".join(f"--- {s.name}\n{s.log_tail()}" for s in services)) from None
        assert reminder["rule"] == "cart_abandonment"
        assert all(service.alive() for service in services)
    finally:
        for service in services:
            service.stop()
