"""`nudgeflow erase ID`: an erasure request for the worker and the sink."""

from __future__ import annotations

import argparse

from schemas.connections import kafka_python_options
from schemas.settings import Settings
from streams.cli.base import Commands


def command_erase(settings: Settings, arguments: argparse.Namespace) -> int:
    """Ask the worker and the sink to forget a person: an erasure request on the privacy topic."""
    import uuid
    from datetime import UTC, datetime

    from kafka import KafkaProducer

    from schemas.privacy import ErasureRequest
    from streams.broker.topics import ensure_topics

    ensure_topics(settings, [settings.privacy_topic])
    request = ErasureRequest(
        request_id=str(uuid.uuid4()), person_id=arguments.person_id, requested_at=datetime.now(UTC)
    )
    producer = KafkaProducer(**kafka_python_options(settings), acks="all")
    try:
        producer.send(settings.privacy_topic, key=arguments.person_id.encode(), value=request.to_json()).get(timeout=30)
    finally:
        producer.close()
    print(request.request_id)
    return 0


def register(commands: Commands) -> None:
    """Add `nudgeflow erase` to the command line."""
    erase = commands.add_parser("erase", help="forget a person: an erasure request for the worker and the sink")
    erase.add_argument("person_id")
    erase.set_defaults(handler=command_erase)
