"""`nudgeflow replay SOURCE`: backfill events from a JSON-lines file or another topic."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from schemas.connections import kafka_python_options
from schemas.settings import Settings
from streams.cli.base import Commands


def command_replay(settings: Settings, arguments: argparse.Namespace) -> int:
    """Events from a JSON-lines file or another topic onto the events topic, within a time range."""
    from kafka import KafkaProducer

    from streams.broker.topics import ensure_topics
    from streams.replay import (
        Invalid,
        Keep,
        Tally,
        TimeRange,
        decide,
        file_line,
        parse_moment,
        parse_source,
        progress_line,
    )

    try:
        source = parse_source(arguments.source)
        window = TimeRange(
            parse_moment(arguments.since) if arguments.since else None,
            parse_moment(arguments.until) if arguments.until else None,
        )
    except ValueError as error:
        print(f"nudgeflow replay: {error}", file=sys.stderr)
        return 2
    target = (
        settings
        if arguments.to_namespace is None
        else settings.model_copy(update={"namespace": arguments.to_namespace})
    )
    ensure_topics(target, [target.events_topic])
    producer = KafkaProducer(**kafka_python_options(settings), acks="all", linger_ms=20)
    tally = Tally()
    started = time.monotonic()
    drawn_at = 0.0

    def handle(raw: bytes, where: str, total: int | None) -> None:
        nonlocal drawn_at
        decision = decide(raw, where, window)
        tally.count(decision)
        if isinstance(decision, Keep):
            producer.send(target.events_topic, key=decision.key, value=decision.value)
        elif isinstance(decision, Invalid):
            # Over the progress bar, then on its own line, so every bad line stays readable.
            print(f"\r{decision.where}: {decision.reason}".ljust(60), file=sys.stderr)
        now = time.monotonic()
        if now - drawn_at >= 0.2:
            drawn_at = now
            print(progress_line(tally.read, total, now - started), end="", file=sys.stderr, flush=True)

    try:
        if source.path is not None:
            path = Path(source.path)
            with path.open("rb") as counting:
                total = sum(1 for line in counting if line.strip())
            with path.open("rb") as lines:
                for number, line in enumerate(lines, start=1):
                    raw = file_line(line)
                    if raw is not None:
                        handle(raw, f"line {number}", total)
        else:
            assert source.topic is not None
            for raw, where, total in _topic_messages(settings, source.topic):
                handle(raw, where, total)
        producer.flush()
    finally:
        producer.close()
    elapsed = time.monotonic() - started
    print(progress_line(tally.read, tally.read, elapsed), file=sys.stderr)
    print(tally.summary(elapsed, target.events_topic), flush=True)
    return 0


def _topic_messages(settings: Settings, topic: str) -> Iterator[tuple[bytes, str, int]]:
    """Every message of a topic as it stands now (later messages are not waited for), with its place."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(**kafka_python_options(settings), enable_auto_commit=False, group_id=None)
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise SystemExit(f"nudgeflow replay: no topic named {topic}")
        assigned = [TopicPartition(topic, partition) for partition in sorted(partitions)]
        consumer.assign(assigned)
        consumer.seek_to_beginning(*assigned)
        ends = consumer.end_offsets(assigned)
        starts = consumer.beginning_offsets(assigned)
        total = sum(ends[tp] - starts[tp] for tp in assigned)
        remaining = {tp for tp in assigned if ends[tp] > starts[tp]}
        while remaining:
            for tp, records in consumer.poll(timeout_ms=500).items():
                for record in records:
                    if record.offset < ends[tp] and record.value:
                        yield record.value, f"{topic}[{tp.partition}]@{record.offset}", total
            remaining = {tp for tp in remaining if consumer.position(tp) < ends[tp]}
    finally:
        consumer.close()


def register(commands: Commands) -> None:
    """Add `nudgeflow replay` to the command line."""
    replay = commands.add_parser("replay", help="backfill events from a JSON-lines file or topic:NAME")
    replay.add_argument("source", help="a JSON-lines file of events, or topic:NAME for an existing topic")
    replay.add_argument("--since", help="ISO time: only events at or after it (event timestamp)")
    replay.add_argument("--until", help="ISO time: only events before it")
    replay.add_argument("--to-namespace", default=None, help="produce to this namespace's events topic instead")
    replay.set_defaults(handler=command_replay)
