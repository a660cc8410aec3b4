"""`nudgeflow kafka` (the local broker) and `nudgeflow topics` (create the pipeline's topics)."""

from __future__ import annotations

import argparse
import os
import subprocess

from schemas.settings import Settings
from streams.cli.base import CLUSTER_SCRIPT, KAFKA_SCRIPT, Commands, kafka_environment


def command_kafka(settings: Settings, arguments: argparse.Namespace) -> int:
    """`nudgeflow kafka`: start, stop, check or fetch the local broker, or a three-node cluster."""
    if arguments.nodes == 1:
        return subprocess.call(["bash", str(KAFKA_SCRIPT), arguments.action], env=kafka_environment(settings))
    if arguments.action == "fetch":
        return subprocess.call(["bash", str(KAFKA_SCRIPT), "fetch"], env=kafka_environment(settings))
    # Three nodes share the single node's jars; the client ports are cluster.sh's (KAFKA_PORTS).
    environment = {**os.environ, "KAFKA_DATA_DIR": str((settings.data_dir / "kafka-cluster").resolve())}
    code = subprocess.call(["bash", str(CLUSTER_SCRIPT), arguments.action], env=environment)
    if code == 0 and arguments.action == "start":
        bootstrap = subprocess.run(
            ["bash", str(CLUSTER_SCRIPT), "bootstrap"], env=environment, capture_output=True, text=True, check=False
        ).stdout.strip()
        print(
            f"kafka: three nodes at {bootstrap}; point nudgeflow at them with NUDGEFLOW_KAFKA_BOOTSTRAP={bootstrap} "
            "NUDGEFLOW_REPLICATION_FACTOR=3 NUDGEFLOW_MIN_INSYNC_REPLICAS=2"
        )
    return code


def command_topics(settings: Settings, arguments: argparse.Namespace) -> int:
    """`nudgeflow topics`: create the topics that do not exist yet."""
    from streams.broker.topics import ensure_topics

    created = ensure_topics(settings)
    print(f"created: {', '.join(created)}" if created else "all topics exist")
    return 0


def register(commands: Commands) -> None:
    """Add `nudgeflow kafka` and `nudgeflow topics` to the command line."""
    kafka = commands.add_parser("kafka", help="the local Kafka broker")
    kafka.add_argument("action", choices=["start", "stop", "status", "fetch"])
    kafka.add_argument(
        "--nodes", type=int, choices=[1, 3], default=1, help="1: the single node; 3: a KRaft cluster (cluster.sh)"
    )
    kafka.set_defaults(handler=command_kafka)

    commands.add_parser("topics", help="create nudgeflow's topics").set_defaults(handler=command_topics)
