"""How fast `nudgeflow worker` gets through a backlog of shopper traffic, next to a bare aiokafka consumer.

    .venv/bin/python bench/worker_throughput.py [--events 100000] [--workers 1|2]

One run: start a throw-away broker, produce N events of simulated shopping (an identify with email, phone and
consent per shopper first, so nudges pass the policy gate), read them all with a raw aiokafka consumer (the
client's ceiling on this machine, right now), run the worker(s) from an empty group until their committed
offsets reach the end of the events topic, then read with the raw consumer once more, so the baseline brackets
the worker in time on this shared, noisy machine (docs/architecture.md, principle 10).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
from _harness import (
    Child,
    Children,
    install_signal_handlers,
    nudgeflow_command,
    print_table,
    running_broker,
    scratch_directory,
    worker_environment,
)
from aiokafka import AIOKafkaConsumer
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from schemas.settings import Settings
from streams.broker.topics import ensure_topics
from streams.simulator.shoppers import interleaved_sessions
from streams.timers import utc_now

TIMEZONES = ("America/New_York", "America/Los_Angeles", "Europe/Berlin", "Europe/London", "Asia/Tokyo")
POLL_SECONDS = 0.25


def shopper_traffic(events: int, shoppers: int, span: timedelta, seed: int) -> list[tuple[bytes, bytes]]:
    """Exactly `events` (key, value) messages: one identify per shopper, then their sessions in time order,
    the last one a second ago, so the worker replays the recent past and the rules' timers come due."""
    rng = random.Random(seed)
    now = utc_now()
    # About five events per session; the span only sets how densely sessions overlap.
    gap = span / max(1, events // 5)
    stream = interleaved_sessions(rng, events, shoppers, now - span, gap)
    body: list[tuple[Any, dict[str, Any]]] = []
    people: dict[str, None] = {}  # insertion-ordered set: identifies follow first appearance
    for moment, document in stream:
        person = str(document["userId"])
        if len(body) + len(people) >= events:
            break
        if person not in people and len(body) + len(people) + 2 > events:
            continue  # one slot left but this event would need two (itself and an identify)
        people.setdefault(person)
        body.append((moment, document))
    # Shift event times so the traffic ends just now, whatever the session lengths added up to.
    shift = (now - timedelta(seconds=1)) - body[-1][0]
    first = body[0][0] + shift - timedelta(minutes=1)
    messages: list[tuple[bytes, bytes]] = []
    for person in people:
        identify = {
            "type": "identify",
            "userId": person,
            "messageId": str(uuid.UUID(int=rng.getrandbits(128))),
            "timestamp": first.isoformat(),
            "traits": {
                "email": f"{person}@shop.example",
                "phone": f"+1555{rng.randrange(10**7):07d}",
                "email_consent": "opted_in",
                "sms_consent": "opted_in",
                "timezone": rng.choice(TIMEZONES),
            },
        }
        messages.append((person.encode(), orjson.dumps(identify)))
    for moment, document in body:
        document["timestamp"] = (moment + shift).isoformat()
        messages.append((str(document["userId"]).encode(), orjson.dumps(document)))
    return messages


def produce(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]]) -> float:
    """Seconds to get every message acknowledged; batching on, as a bulk loader would."""
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=20, batch_size=512 * 1024, max_request_size=8 * 1024 * 1024
    )
    try:
        started = time.perf_counter()
        for key, value in messages:
            producer.send(topic, key=key, value=value)
        producer.flush(timeout=120)
        return time.perf_counter() - started
    finally:
        producer.close()


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    try:
        partitions = [TopicPartition(topic, number) for number in sorted(consumer.partitions_for_topic(topic) or [])]
        return {tp.partition: offset for tp, offset in consumer.end_offsets(partitions).items()}
    finally:
        consumer.close()


async def raw_consume(bootstrap: str, topic: str, expected: int, decode: bool, time_limit: float) -> tuple[int, float]:
    """(messages read, seconds) for a groupless consumer reading the topic from the start: the client's ceiling."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    started = time.perf_counter()
    count = 0
    await consumer.start()
    try:
        deadline = started + time_limit
        while count < expected and time.perf_counter() < deadline:
            batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for records in batches.values():
                if decode:
                    for record in records:
                        orjson.loads(record.value)
                count += len(records)
        return count, time.perf_counter() - started
    finally:
        await consumer.stop()


@dataclass
class WorkerRun:
    processed: int = 0
    seconds: float = float("nan")
    first_commit_seconds: float = float("nan")
    committed_at_first: int = 0
    finished: bool = False
    workers: list[Child] = field(default_factory=list)


def committed_total(admin: KafkaAdminClient, group: str, topic: str, ends: dict[int, int]) -> tuple[int, bool]:
    """Events the group has committed on `topic`, and whether every partition is at its end."""
    try:
        offsets = admin.list_group_offsets({group: None}).get(group, {})
    except KafkaError as error:
        if not error.retriable:
            raise
        # Until the worker has joined, the broker may still be creating the offsets topic for the group.
        return 0, False
    committed = {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic and meta.offset >= 0}
    total = sum(min(committed.get(partition, 0), end) for partition, end in ends.items())
    return total, all(committed.get(partition, 0) >= end for partition, end in ends.items() if end > 0)


def run_workers(
    settings: Settings,
    scratch: Path,
    children: Children,
    count: int,
    ends: dict[int, int],
    timeout: float,
    command: Sequence[str] | None = None,
    group: str | None = None,
    label: str = "worker",
) -> WorkerRun:
    expected = sum(ends.values())
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, client_id="bench-monitor")
    run = WorkerRun()
    try:
        started = time.perf_counter()
        for number in range(count):
            data_dir = scratch / f"{label}-{number}"
            data_dir.mkdir()
            environment = worker_environment(settings, data_dir)
            run.workers.append(
                children.start(
                    f"{label}-{number}",
                    command or nudgeflow_command("worker", "--runner", "batched"),
                    environment,
                    scratch / f"{label}-{number}.log",
                )
            )
        deadline = started + timeout
        last_report = started
        while time.perf_counter() < deadline:
            for worker in run.workers:
                worker.sample_rss()
            if not any(worker.running() for worker in run.workers):
                print("every worker exited; last lines of its log:\n" + run.workers[0].tail(), file=sys.stderr)
                break
            total, done = committed_total(admin, group or settings.app_id, settings.events_topic, ends)
            now = time.perf_counter()
            run.processed = total
            if total > 0 and run.first_commit_seconds != run.first_commit_seconds:
                run.first_commit_seconds = now - started
                run.committed_at_first = total
            if done:
                run.finished = True
                run.seconds = now - started
                break
            if now - last_report >= 10:
                last_report = now
                print(f"  {label}: {total:,}/{expected:,} committed after {now - started:.0f}s", file=sys.stderr)
            time.sleep(POLL_SECONDS)
        if not run.finished:
            run.seconds = time.perf_counter() - started
        for worker in run.workers:
            worker.sample_rss()
        return run
    finally:
        admin.close()


def steady_rate(run: WorkerRun) -> float:
    """Events/s from the first commit to the last: start-up left out."""
    steady_seconds = run.seconds - run.first_commit_seconds
    # Undefined when everything was done by the first commit (a backlog smaller than a commit interval).
    if run.finished and steady_seconds > 0:
        return (run.processed - run.committed_at_first) / steady_seconds
    return float("nan")


def topic_sizes(bootstrap: str, topics: dict[str, str]) -> dict[str, int]:
    return {label: sum(end_offsets(bootstrap, topic).values()) for label, topic in topics.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000, help="events produced (identifies included)")
    parser.add_argument("--shoppers", type=int, default=None, help="distinct shoppers (default events/50)")
    parser.add_argument("--workers", type=int, choices=(1, 2), default=1, help="worker processes in one group")
    parser.add_argument("--partitions", type=int, default=8, help="partitions of the topics")
    parser.add_argument("--span-hours", type=float, default=2.0, help="event times cover this much recent past")
    parser.add_argument("--timeout", type=float, default=600.0, help="give the worker at most this many seconds")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (broker data, worker logs)")
    parser.add_argument(
        "--faust-baseline", action="store_true", help="also time a Faust agent that does nothing (Faust's ceiling)"
    )
    arguments = parser.parse_args()
    install_signal_handlers()
    shoppers = arguments.shoppers or max(10, arguments.events // 50)

    with (
        scratch_directory(arguments.keep) as scratch,
        running_broker(scratch / "kafka") as broker,
        Children() as children,
    ):
        settings = Settings(
            demo=True,  # a benchmark is a local development run
            kafka_bootstrap=broker.bootstrap,
            namespace=f"bench{uuid.uuid4().hex[:8]}",
            partitions=arguments.partitions,
            data_dir=scratch,
        )
        ensure_topics(settings)
        messages = shopper_traffic(arguments.events, shoppers, timedelta(hours=arguments.span_hours), arguments.seed)
        print(f"producing {len(messages):,} events for {shoppers:,} shoppers", file=sys.stderr, flush=True)
        produce_seconds = produce(broker.bootstrap, settings.events_topic, messages)
        ends = end_offsets(broker.bootstrap, settings.events_topic)
        events = sum(ends.values())

        def raw() -> tuple[int, float]:
            return asyncio.run(raw_consume(broker.bootstrap, settings.events_topic, events, True, arguments.timeout))

        print("raw aiokafka consumer (before the worker)", file=sys.stderr, flush=True)
        raw_before = raw()
        print(f"worker x{arguments.workers} (table store rocksdb)", file=sys.stderr, flush=True)
        run = run_workers(settings, scratch, children, arguments.workers, ends, arguments.timeout)
        # Stop the workers before the second baseline so it does not share the two cores with them.
        for worker in run.workers:
            worker.stop()
        noop: WorkerRun | None = None
        if arguments.faust_baseline:
            print("bare Faust agent (reads, does nothing)", file=sys.stderr, flush=True)
            noop_command = [sys.executable, str(Path(__file__).with_name("faust_noop_worker.py"))]
            noop = run_workers(
                settings, scratch, children, 1, ends, arguments.timeout, noop_command,
                f"{settings.app_id}-faust-noop", "faust-noop",
            )  # fmt: skip
            for child in noop.workers:
                child.stop()
        print("raw aiokafka consumer (after the worker)", file=sys.stderr, flush=True)
        raw_after = raw()

        raw_rates = [count / seconds for count, seconds in (raw_before, raw_after) if count == events]
        raw_rate = sum(raw_rates) / len(raw_rates) if raw_rates else float("nan")
        with_startup = run.processed / run.seconds if run.finished else float("nan")
        steady = steady_rate(run)
        outputs = topic_sizes(
            broker.bootstrap,
            {
                "triggers": settings.triggers_topic,
                "triggers.suppressed": settings.suppressed_topic,
                "events.dlq": settings.dead_letter_topic,
                "profiles": settings.profiles_topic,
            },
        )

        rows: list[tuple[str, object]] = [
            ("events (identifies included)", events),
            ("shoppers", shoppers),
            ("partitions", settings.partitions),
            ("worker processes", arguments.workers),
            ("producer events/s (kafka-python, linger 20 ms)", events / produce_seconds),
            ("raw consumer events/s, before worker", raw_before[0] / raw_before[1]),
            ("raw consumer events/s, after worker", raw_after[0] / raw_after[1]),
            ("worker finished", "yes" if run.finished else f"no: {run.processed:,} committed in {run.seconds:.0f}s"),
            ("worker start-up s (to first commit)", run.first_commit_seconds),
            ("worker total s (start to all committed)", run.seconds),
            ("worker events/s incl. start-up", with_startup),
            ("worker events/s excl. start-up", steady),
            ("ratio worker/raw, incl. start-up", with_startup / raw_rate),
            ("ratio worker/raw, excl. start-up", steady / raw_rate),
        ]
        if noop is not None:
            noop_steady = steady_rate(noop)
            rows.append(("bare Faust agent events/s excl. start-up", noop_steady))
            rows.append(("ratio bare Faust/raw", noop_steady / raw_rate))
            rows.append(("ratio worker/bare Faust", steady / noop_steady))
        for worker in run.workers:
            rows.append((f"{worker.name} peak RSS MiB (VmHWM)", worker.peak_rss_kib / 1024))
        for label, size in outputs.items():
            rows.append((f"messages on {label}", size))
        for worker in run.workers:
            problems, first = worker.problems()
            rows.append((f"{worker.name} log lines with errors/warnings", problems))
            for line in first:
                print(f"{worker.name}: {line}", file=sys.stderr)
        print()
        print_table(("measure", "value"), rows)
        if outputs["events.dlq"]:
            # Dead letters were "processed" only in the sense that their offsets were committed.
            print(
                f"warning: {outputs['events.dlq']:,} messages were dead-lettered; see the worker log", file=sys.stderr
            )
            return 1
        return 0 if run.finished else 1


if __name__ == "__main__":
    sys.exit(main())
