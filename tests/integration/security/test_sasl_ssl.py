"""Every client over SASL_SSL with SCRAM against the real broker; wrong credentials fail at start, precisely."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError
from kafka import KafkaAdminClient
from kafka.errors import KafkaTimeoutError

from schemas.connections import aiokafka_options, kafka_python_options
from schemas.settings import Settings
from streams.topics import ensure_topics
from tests.integration.security.conftest import SecureBroker, secure_settings


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
