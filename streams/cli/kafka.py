"""`nudgeflow kafka` (the local broker) and `nudgeflow topics` (create the pipeline's topics)."""

from __future__ import annotations

import argparse
import subprocess

from schemas.settings import Settings
from streams.cli.base import KAFKA_SCRIPT, Commands, kafka_environment


def command_kafka(settings: Settings, arguments: argparse.Namespace) -> int:
    return subprocess.call(["bash", str(KAFKA_SCRIPT), arguments.action], env=kafka_environment(settings))


def command_topics(settings: Settings, arguments: argparse.Namespace) -> int:
    from streams.topics import ensure_topics

    created = ensure_topics(settings)
    print(f"created: {', '.join(created)}" if created else "all topics exist")
    return 0


def register(commands: Commands) -> None:
    kafka = commands.add_parser("kafka", help="the local Kafka broker")
    kafka.add_argument("action", choices=["start", "stop", "status", "fetch"])
    kafka.set_defaults(handler=command_kafka)

    commands.add_parser("topics", help="create nudgeflow's topics").set_defaults(handler=command_topics)
