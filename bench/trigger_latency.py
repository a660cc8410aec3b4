"""Event-to-trigger latency of `nudgeflow worker`, next to the broker's own round trip.

    .venv/bin/python bench/trigger_latency.py [--rate 50] [--seconds 20] [--people 100] [--load] [--delay 2]
                                             [--campaign]

By default the rule fires at once. With --delay SECONDS it fires that long after its event, plus the grace
(--grace, default 0), and each trigger is timed from its due moment (send + delay + grace) instead: how late a
delayed nudge comes out, which depends on the runner waking at its next deadline rather than on polling.

One run: start a throw-away broker; measure the baseline (produce small messages one at a time at the steady
rate to a plain topic and consume them with the same consumer settings); start one worker on a rules file with
a single trigger that fires at once on Product Added; send an identify (with email) per person and wait until
the worker has published their profiles; then produce Product Added events at the same rate, each with its own
cart_id, and time each one from its send to the arrival of its trigger (matched on the trigger's context.key).
The baseline runs again after the worker stops, so it brackets the worker in time on this shared, noisy machine
(docs/architecture.md, principle 10). With --load, the worker's ceiling is measured on a backlog first and
the latency phase runs once more at half of it. With --campaign, the same phase runs once more right after a
campaign for every identified person was published: the worker sweeps them all (giving each a deadline) while
the live events come, which is what scheduling a campaign costs live traffic.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import orjson
from _harness import (
    Child,
    Children,
    install_signal_handlers,
    nudgeflow_command,
    percentile,
    print_table,
    running_broker,
    scratch_directory,
    worker_environment,
)
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from schemas.campaigns import CampaignOp, control_message, parse_campaign
from schemas.settings import Settings
from streams.broker.topics import ensure_topics
from streams.timers import utc_now


# One rule on Product Added, and a policy with no caps or quiet hours, so every Product Added gives exactly one
# trigger and nothing else is measured. No delay means no grace and no timer: it fires in the event's step.
def rules_yaml(delay_seconds: float, grace_seconds: float) -> str:
    return f"""\
segments:
  - name: subscribers
    all: [{{fact: has_email, op: "==", value: true}}]
triggers:
  - name: instant
    entry: {{event: Product Added}}
    key: cart_id
    delay: {delay_seconds:g}s
    channel: email
    template_id: t
    reentry: every_time
timers:
  grace: {grace_seconds:g}s
policy:
  caps: {{}}
  quiet_hours: {{}}
"""


# Both phases consume with exactly these settings, so the difference is the worker and not the client.
CONSUMER_SETTINGS: dict[str, object] = {"fetch_max_wait_ms": 100, "fetch_min_bytes": 1, "max_poll_records": 10_000}
# linger 0: each message leaves as soon as it is sent, as a tracker's single event would.
PRODUCER_SETTINGS: dict[str, object] = {"linger_ms": 0, "acks": 1}
DRAIN_SECONDS = 15.0

# (key, value, match id) for message number i, built at its send time so event times are "now" (live mode).
MessageFactory = Callable[[int], tuple[bytes, bytes, str]]
# The match id carried by a consumed value, or None for a message that is not ours.
MatchReader = Callable[[bytes], str | None]


@dataclass
class Phase:
    label: str
    sent: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    send_seconds: float = float("nan")

    @property
    def matched(self) -> int:
        return len(self.latencies_ms)

    def quantile(self, fraction: float) -> float:
        return percentile(sorted(self.latencies_ms), fraction)


async def positioned_consumer(bootstrap: str, topic: str, partitions: int) -> AIOKafkaConsumer:
    """A groupless consumer on every partition of `topic`, already positioned at its end, so nothing produced
    after this returns is missed and nothing from before is read."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, **CONSUMER_SETTINGS
    )
    await consumer.start()
    try:
        # Every topic here was created with the run's partition count: assigning by number needs no metadata
        # (a groupless consumer's metadata for a topic seconds old can lag behind).
        assignment = [TopicPartition(topic, number) for number in range(partitions)]
        consumer.assign(assignment)
        await consumer.seek_to_end(*assignment)
        for tp in assignment:
            await consumer.position(tp)  # resolves the end offset now rather than at the first fetch
    except BaseException:
        await consumer.stop()
        raise
    return consumer


async def timed_phase(
    bootstrap: str,
    label: str,
    produce_topic: str,
    consume_topic: str,
    make: MessageFactory,
    read: MatchReader,
    rate: float,
    count: int,
    partitions: int,
) -> Phase:
    """Send `count` messages one at a time at `rate`/s, each stamped with its send time, and time each one
    until its match arrives on `consume_topic`. Send times follow a fixed schedule, not "previous + gap", so a
    late send does not slow the rate down."""
    phase = Phase(label)
    sent_at: dict[str, float] = {}
    arrived: dict[str, float] = {}
    consumer = await positioned_consumer(bootstrap, consume_topic, partitions)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **PRODUCER_SETTINGS)
    await producer.start()
    finished_sending = asyncio.Event()

    async def consume() -> None:
        drain_until = float("inf")
        while len(arrived) < count and time.perf_counter() < drain_until:
            batches = await consumer.getmany(timeout_ms=50)
            now = time.perf_counter()
            for records in batches.values():
                for record in records:
                    match = read(record.value) if record.value is not None else None
                    if match is not None and match in sent_at and match not in arrived:
                        arrived[match] = now
            if finished_sending.is_set() and drain_until == float("inf"):
                drain_until = time.perf_counter() + DRAIN_SECONDS

    consuming = asyncio.create_task(consume())
    deliveries: list[asyncio.Future[object]] = []
    try:
        started = time.perf_counter()
        for number in range(count):
            delay = started + number / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            key, value, match = make(number)
            sent_at[match] = time.perf_counter()
            deliveries.append(await producer.send(produce_topic, value=value, key=key))
        await asyncio.gather(*deliveries)
        phase.send_seconds = time.perf_counter() - started
        phase.sent = count
        finished_sending.set()
        await consuming
    finally:
        consuming.cancel()
        await producer.stop()
        await consumer.stop()
    phase.latencies_ms = [(arrived[match] - sent_at[match]) * 1000 for match in arrived]
    return phase


def product_added(people: list[str], run: str) -> MessageFactory:
    def make(number: int) -> tuple[bytes, bytes, str]:
        person = people[number % len(people)]
        cart_id = f"cart-{run}-{number:07d}"
        document = {
            "type": "track",
            "event": "Product Added",
            "userId": person,
            "messageId": str(uuid.uuid4()),
            "timestamp": utc_now().isoformat(),
            "properties": {"cart_id": cart_id, "product_id": "sku-0001", "price": 119.0, "quantity": 1},
        }
        return person.encode(), orjson.dumps(document), cart_id

    return make


def trigger_cart(value: bytes) -> str | None:
    key = orjson.loads(value).get("context", {}).get("key")
    return str(key) if key is not None else None


def plain_message(people: list[str], run: str) -> MessageFactory:
    # About the size of the events above, keyed the same way, so the broker does the same work for both.
    def make(number: int) -> tuple[bytes, bytes, str]:
        person = people[number % len(people)]
        match = f"msg-{run}-{number:07d}"
        document = {"id": match, "userId": person, "timestamp": utc_now().isoformat(), "padding": "x" * 160}
        return person.encode(), orjson.dumps(document), match

    return make


def plain_id(value: bytes) -> str | None:
    match = orjson.loads(value).get("id")
    return str(match) if match is not None else None


async def identify_everyone(settings: Settings, people: list[str], limit_seconds: float, worker: Child) -> float:
    """Send one identify with an email per person and wait until the worker has published each one's profile
    snapshot with that email: then it is up, owns its partitions and the policy gate will let nudges through."""
    consumer = AIOKafkaConsumer(
        settings.profiles_topic,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=5)
    await consumer.start()
    await producer.start()
    started = time.perf_counter()
    try:
        now = utc_now().isoformat()
        for person in people:
            identify = {
                "type": "identify",
                "userId": person,
                "messageId": str(uuid.uuid4()),
                "timestamp": now,
                "traits": {"email": f"{person}@shop.example", "email_consent": "opted_in"},
            }
            await producer.send(settings.events_topic, key=person.encode(), value=orjson.dumps(identify))
        await producer.flush()
        waiting = set(people)
        deadline = started + limit_seconds
        while waiting and time.perf_counter() < deadline:
            if not worker.running():
                raise RuntimeError(f"the worker exited while starting:\n{worker.tail()}")
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    profile = orjson.loads(record.value or b"{}")
                    if profile.get("email"):
                        waiting.discard(str(profile.get("person_id")))
        if waiting:
            raise TimeoutError(f"{len(waiting)} of {len(people)} identifies not processed within {limit_seconds:.0f}s")
        return time.perf_counter() - started
    finally:
        await producer.stop()
        await consumer.stop()


async def worker_ceiling(settings: Settings, people: list[str], events: int, limit_seconds: float) -> float:
    """Triggers per second the worker gets out of a backlog of Product Added events produced as fast as the
    client can: from the first send to the last trigger, so the worker's whole path is in it."""
    make = product_added(people, f"load{uuid.uuid4().hex[:6]}")
    consumer = await positioned_consumer(settings.kafka_bootstrap, settings.triggers_topic, settings.partitions)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=20, max_batch_size=512 * 1024)
    await producer.start()
    wanted: set[str] = set()
    try:
        started = time.perf_counter()
        for number in range(events):
            key, value, match = make(number)
            wanted.add(match)
            await producer.send(settings.events_topic, key=key, value=value)
        await producer.flush()
        deadline = started + limit_seconds
        last = started
        while wanted and time.perf_counter() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for record in records:
                    found = trigger_cart(record.value or b"{}")
                    if found in wanted:
                        wanted.discard(found)
                        last = time.perf_counter()
        done = events - len(wanted)
        return done / (last - started) if done else float("nan")
    finally:
        await producer.stop()
        await consumer.stop()


async def schedule_campaign(settings: Settings) -> None:
    """A campaign for everyone identified, due in an hour: the worker sweeps them all while the phase runs."""
    campaign = parse_campaign(
        orjson.dumps(
            {
                "id": "bench-sweep",
                "audience": {"segments": ["subscribers"]},
                "when": {"at": (utc_now() + timedelta(hours=1)).isoformat()},
                "channel": "email",
                "template_id": "newsletter",
            }
        ).decode(),
        "bench",
    )
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        value = control_message(CampaignOp.SCHEDULE, "bench-sweep", utc_now(), campaign)
        await producer.send_and_wait(settings.campaigns_topic, key=b"bench-sweep", value=value)
    finally:
        await producer.stop()


def start_worker(settings: Settings, scratch: Path, children: Children, rules_file: Path, runner: str) -> Child:
    data_dir = scratch / "worker"
    data_dir.mkdir()
    environment = worker_environment(settings, data_dir, NUDGEFLOW_RULES_FILE=str(rules_file))
    return children.start(
        "worker", nudgeflow_command("worker", "--runner", runner), environment, scratch / "worker.log"
    )


def summary_row(phase: Phase) -> tuple[object, ...]:
    return (
        phase.label,
        phase.sent,
        phase.matched,
        phase.sent / phase.send_seconds if phase.sent else float("nan"),
        phase.quantile(0.50),
        phase.quantile(0.90),
        phase.quantile(0.99),
        max(phase.latencies_ms, default=float("nan")),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=50.0, help="messages per second in each timed phase")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each timed phase")
    parser.add_argument(
        "--people",
        type=int,
        default=1000,
        # Each event opens a new cart and open carts stay in the state: few people would mean huge states.
        help="distinct people the events rotate through",
    )
    parser.add_argument("--partitions", type=int, default=8, help="partitions of the topics")
    parser.add_argument("--runner", choices=("batched", "faust"), default="batched", help="what hosts the worker")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds the rule waits after its event")
    parser.add_argument("--grace", type=float, default=0.0, help="the rules' grace for late events, in seconds")
    parser.add_argument("--load", action="store_true", help="also time the worker at half its measured ceiling")
    parser.add_argument(
        "--campaign", action="store_true", help="also time the worker while it schedules a campaign for everyone"
    )
    parser.add_argument("--load-events", type=int, default=10_000, help="backlog that measures the ceiling")
    parser.add_argument("--timeout", type=float, default=180.0, help="longest wait for worker start-up or backlog")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (broker data, worker log)")
    arguments = parser.parse_args()
    if arguments.load and arguments.delay:
        parser.error("--load measures the ceiling from first send to last trigger: a delay would be in it")
    # A delayed trigger is timed from its due moment: the delay and the grace are the rule's, not latency.
    due_after_ms = (arguments.delay + arguments.grace) * 1000 if arguments.delay else 0.0
    install_signal_handlers()
    count = max(1, round(arguments.rate * arguments.seconds))
    people = [f"latency-{number:05d}" for number in range(arguments.people)]
    run = uuid.uuid4().hex[:6]

    with (
        scratch_directory(arguments.keep) as scratch,
        running_broker(scratch / "kafka") as broker,
        Children() as children,
    ):
        settings = Settings(
            demo=True,  # a benchmark is a local development run
            kafka_bootstrap=broker.bootstrap,
            namespace=f"bench{run}",
            partitions=arguments.partitions,
            data_dir=scratch,
        )
        plain_topic = settings.topic("roundtrip")
        ensure_topics(settings)
        ensure_topics(settings, [plain_topic])
        rules_file = scratch / "rules.yaml"
        rules_file.write_text(rules_yaml(arguments.delay, arguments.grace))

        def baseline(label: str, tag: str) -> Phase:
            print(f"{label}: {count:,} messages at {arguments.rate:g}/s", file=sys.stderr, flush=True)
            return asyncio.run(
                timed_phase(
                    broker.bootstrap,
                    label,
                    plain_topic,
                    plain_topic,
                    plain_message(people, f"{run}{tag}"),
                    plain_id,
                    arguments.rate,
                    count,
                    settings.partitions,
                )
            )

        def through_worker(label: str, tag: str, rate: float, messages: int) -> Phase:
            print(f"{label}: {messages:,} events at {rate:,.0f}/s", file=sys.stderr, flush=True)
            phase = asyncio.run(
                timed_phase(
                    broker.bootstrap,
                    label,
                    settings.events_topic,
                    settings.triggers_topic,
                    product_added(people, f"{run}{tag}"),
                    trigger_cart,
                    rate,
                    messages,
                    settings.partitions,
                )
            )
            phase.latencies_ms = [latency - due_after_ms for latency in phase.latencies_ms]
            return phase

        # A broker seconds old is still warming up (JIT, page cache, first metadata): unrecorded traffic first.
        warm = max(1, round(arguments.rate * min(arguments.seconds, 3.0)))
        print("warming up the broker", file=sys.stderr, flush=True)
        asyncio.run(
            timed_phase(
                broker.bootstrap,
                "warm-up",
                plain_topic,
                plain_topic,
                plain_message(people, f"{run}warm"),
                plain_id,
                arguments.rate,
                warm,
                settings.partitions,
            )
        )
        before = baseline("broker round trip, before worker", "a")
        worker = start_worker(settings, scratch, children, rules_file, arguments.runner)
        print(f"worker starting; identifying {len(people)} people", file=sys.stderr, flush=True)
        startup = asyncio.run(identify_everyone(settings, people, arguments.timeout, worker))
        label = (
            f"worker due ({arguments.delay:g}s + {arguments.grace:g}s grace) -> trigger"
            if arguments.delay
            else "worker event -> trigger"
        )
        live = through_worker(label, "w", arguments.rate, count)
        phases = [before, live]
        if arguments.campaign:
            asyncio.run(schedule_campaign(settings))
            phases.append(through_worker(f"{label}, campaign for all being scheduled", "c", arguments.rate, count))
        ceiling = float("nan")
        if arguments.load:
            print(f"worker ceiling: backlog of {arguments.load_events:,} events", file=sys.stderr, flush=True)
            ceiling = asyncio.run(worker_ceiling(settings, people, arguments.load_events, arguments.timeout))
            if ceiling == ceiling:
                half = ceiling / 2
                phases.append(
                    through_worker("worker at half its ceiling", "h", half, max(1, round(half * arguments.seconds)))
                )
        worker.sample_rss()
        # Stop the worker before the second baseline so it does not share the two cores with it.
        worker.stop()
        after = baseline("broker round trip, after worker", "b")
        phases.insert(1, after)

        pooled = Phase("broker round trip, both", before.sent + after.sent)
        pooled.latencies_ms = before.latencies_ms + after.latencies_ms
        print()
        print_table(
            ("phase", "sent", "matched", "sent/s", "p50 ms", "p90 ms", "p99 ms", "max ms"),
            [summary_row(phase) for phase in [*phases, pooled]],
        )
        print()
        rows: list[tuple[str, object]] = [
            ("worker start-up + identifies s", startup),
            ("rule delay + grace s", (arguments.delay + arguments.grace) if arguments.delay else 0.0),
            ("partitions", settings.partitions),
            ("people", len(people)),
            ("worker p50 - broker p50 ms", live.quantile(0.50) - pooled.quantile(0.50)),
            ("worker p90 - broker p90 ms", live.quantile(0.90) - pooled.quantile(0.90)),
            ("worker p99 - broker p99 ms", live.quantile(0.99) - pooled.quantile(0.99)),
            ("worker p50 / broker p50", live.quantile(0.50) / pooled.quantile(0.50)),
        ]
        if arguments.load:
            rows.append(("worker ceiling triggers/s (backlog)", ceiling))
        rows.append(("worker peak RSS MiB (VmHWM)", worker.peak_rss_kib / 1024))
        problems, first = worker.problems()
        rows.append(("worker log lines with errors/warnings", problems))
        for line in first:
            print(f"worker: {line}", file=sys.stderr)
        print_table(("measure", "value"), rows)
        complete = all(phase.matched == phase.sent for phase in phases)
        if not complete:
            print("warning: some messages were never matched; see the table", file=sys.stderr)
            print(f"worker log, last lines:\n{worker.tail(40)}", file=sys.stderr)
        return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
