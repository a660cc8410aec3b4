"""Requests per second through `nudgeflow collector`, next to a bare aiohttp server that only answers 200.

    .venv/bin/python bench/collector_load.py [--track-requests 20000] [--batch-requests 1000] [--concurrency 32]

One run: a throw-away broker, the collector on a free port (acks from Kafka before every 200), a bare aiohttp
server in another process (the HTTP stack's ceiling on this machine, right now) and a load generator in a third
process sending both the same kind of requests: single /v1/track calls, then /v1/batch calls of 100 events,
with Basic auth. The bare server goes first in each pair; both share the machine with the same load generator,
so the ratio is what the collector's work costs (docs/architecture.md, principle 10).

The same file is the bare server (`--role bare`) and the load generator (`--role load`) in the child processes.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
from _harness import (
    LOOPBACK,
    Children,
    free_port,
    install_signal_handlers,
    nudgeflow_command,
    percentile,
    print_table,
    running_broker,
    scratch_directory,
    wait_for_port,
)

WRITE_KEY = "dev-write-key"  # the collector's default write key (settings.collector_write_keys)
SCENARIOS = ("track", "batch")
TARGETS = ("bare", "collector")
WARM_UP_REQUESTS = 50
OK_BODY = b'{"success": true}'


# --- the bare server -------------------------------------------------------------------------------------


def serve_bare(port: int) -> None:
    from aiohttp import web

    async def ok(request: web.Request) -> web.Response:
        await request.read()  # the body is received, as the collector must, and then ignored
        return web.Response(body=OK_BODY, content_type="application/json")

    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_post("/v1/track", ok)
    app.router.add_post("/v1/batch", ok)
    web.run_app(app, host=LOOPBACK, port=port, print=None, access_log=None)


# --- the load generator ----------------------------------------------------------------------------------


def tracking_documents(count: int, seed: int, label: str, track_only: bool) -> list[dict[str, Any]]:
    """Simulated shopper calls from the last minutes, each with a message id unique to `label`, so the
    collector's dedupe window never drops one and every event really goes to Kafka."""
    from streams.simulator.shoppers import interleaved_sessions
    from streams.timers import utc_now

    rng = random.Random(seed)
    now = utc_now()
    documents: list[dict[str, Any]] = []
    span = timedelta(minutes=10)
    sessions = interleaved_sessions(rng, count, max(10, count // 50), now - span, span / count)
    for _, document in sessions:
        if track_only and document.get("type") != "track":
            continue
        document["messageId"] = f"{label}-{len(documents)}-{uuid.uuid4().hex[:8]}"
        documents.append(document)
        if len(documents) == count:
            break
    return documents


def request_bodies(scenario: str, requests: int, batch_size: int, seed: int, label: str) -> list[bytes]:
    if scenario == "track":
        return [orjson.dumps(document) for document in tracking_documents(requests, seed, label, track_only=True)]
    documents = tracking_documents(requests * batch_size, seed, label, track_only=False)
    return [
        orjson.dumps({"batch": documents[start : start + batch_size]}) for start in range(0, len(documents), batch_size)
    ]


@dataclass
class PhaseResult:
    scenario: str
    target: str
    requests: int
    failed: int
    events: int
    seconds: float
    latencies_ms: list[float]
    first_failure: str


@dataclass(frozen=True)
class Limits:
    concurrency: int
    time_limit: float
    min_seconds: float


async def drive(url: str, bodies: list[bytes], events_each: int, limits: Limits, reuse: bool) -> PhaseResult:
    """POST every body (the first WARM_UP_REQUESTS unmeasured) with `concurrency` connections.

    With `reuse`, bodies are sent again until the phase has lasted `min_seconds`: a phase of a fraction of a
    second measures little on a noisy machine, and a server that ignores bodies cannot tell a repeat."""
    import aiohttp

    latencies: list[float] = []
    failed = 0
    first_failure = ""
    position = 0
    auth = aiohttp.BasicAuth(WRITE_KEY, "")
    headers = {"Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=limits.concurrency)
    async with aiohttp.ClientSession(connector=connector, auth=auth, headers=headers) as session:

        async def one(body: bytes) -> None:
            nonlocal failed, first_failure
            sent = time.perf_counter()
            try:
                async with session.post(url, data=body) as response:
                    answer = await response.read()
                    if response.status != 200:
                        failed += 1
                        first_failure = first_failure or f"{response.status} {answer[:200]!r}"
                        return
            except (aiohttp.ClientError, TimeoutError) as error:
                failed += 1
                first_failure = first_failure or repr(error)
                return
            latencies.append((time.perf_counter() - sent) * 1000)

        warm, measured = bodies[:WARM_UP_REQUESTS], bodies[WARM_UP_REQUESTS:]

        async def connection(started: float) -> None:
            nonlocal position
            # Each loop is one client connection: at most `concurrency` requests in flight, never more.
            while True:
                elapsed = time.perf_counter() - started
                if elapsed >= limits.time_limit:
                    break
                if position >= len(measured) and not (reuse and elapsed < limits.min_seconds):
                    break
                body = measured[position % len(measured)]
                position += 1
                await one(body)

        # Warm-up: connections opened, the collector's Kafka producer started; not measured.
        await asyncio.gather(*(one(body) for body in warm))
        latencies.clear()
        failed, first_failure, position = 0, "", 0
        started = time.perf_counter()
        await asyncio.gather(*(connection(started) for _ in range(limits.concurrency)))
        seconds = time.perf_counter() - started
    return PhaseResult("", "", position, failed, (position - failed) * events_each, seconds, latencies, first_failure)


async def generate_load(arguments: argparse.Namespace) -> list[PhaseResult]:
    urls = {
        "bare": f"http://{LOOPBACK}:{arguments.bare_port}",
        "collector": f"http://{LOOPBACK}:{arguments.collector_port}",
    }
    counts = {"track": arguments.track_requests, "batch": arguments.batch_requests}
    limits = Limits(arguments.concurrency, arguments.time_limit, arguments.min_seconds)
    results: list[PhaseResult] = []
    for scenario in SCENARIOS:
        events_each = 1 if scenario == "track" else arguments.batch_size
        for target in TARGETS:
            # Same seed for both targets: the same calls, only the message ids differ.
            bodies = request_bodies(
                scenario, counts[scenario] + WARM_UP_REQUESTS, arguments.batch_size, arguments.seed, target
            )
            print(f"load: {scenario} -> {target}: {len(bodies) - WARM_UP_REQUESTS:,} requests", file=sys.stderr)
            # Only the bare server gets repeats: the collector would drop them as duplicates, unsent to Kafka.
            result = await drive(f"{urls[target]}/v1/{scenario}", bodies, events_each, limits, reuse=target == "bare")
            result.scenario, result.target = scenario, target
            results.append(result)
    return results


def run_load(arguments: argparse.Namespace) -> None:
    results = asyncio.run(generate_load(arguments))
    Path(arguments.out).write_bytes(orjson.dumps([asdict(result) for result in results]))


# --- the driver ------------------------------------------------------------------------------------------


def events_on_topic(bootstrap: str, topic: str) -> int:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    try:
        partitions = [TopicPartition(topic, number) for number in consumer.partitions_for_topic(topic) or []]
        return sum(consumer.end_offsets(partitions).values())
    finally:
        consumer.close()


def run_benchmark(arguments: argparse.Namespace) -> int:
    import os

    from schemas.settings import Settings
    from streams.broker.topics import ensure_topics

    install_signal_handlers()
    with (
        scratch_directory(arguments.keep) as scratch,
        running_broker(scratch / "kafka") as broker,
        Children() as children,
    ):
        settings = Settings(
            demo=True,  # a benchmark is a local development run
            kafka_bootstrap=broker.bootstrap,
            namespace=f"bench{uuid.uuid4().hex[:8]}",
            data_dir=scratch,
        )
        ensure_topics(settings)
        collector_port, bare_port = free_port(), free_port()
        environment = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "NUDGEFLOW_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "NUDGEFLOW_NAMESPACE": settings.namespace,
            "NUDGEFLOW_PARTITIONS": str(settings.partitions),
            "NUDGEFLOW_DATA_DIR": str(scratch),
            "NUDGEFLOW_LOG_LEVEL": "warning",
            "NUDGEFLOW_DEMO": "true",  # the development write key and hash secret, as in the settings above
        }
        me = [sys.executable, str(Path(__file__).resolve())]
        collector = children.start(
            "collector",
            nudgeflow_command("collector", "--host", LOOPBACK, "--port", str(collector_port)),
            environment,
            scratch / "collector.log",
        )
        bare = children.start(
            "bare", [*me, "--role", "bare", "--port", str(bare_port)], environment, scratch / "bare.log"
        )
        wait_for_port(collector_port, 60, collector)
        wait_for_port(bare_port, 60, bare)
        out = scratch / "load.json"
        load = children.start(
            "load",
            [
                *me,
                "--role",
                "load",
                "--out",
                str(out),
                "--bare-port",
                str(bare_port),
                "--collector-port",
                str(collector_port),
                "--track-requests",
                str(arguments.track_requests),
                "--batch-requests",
                str(arguments.batch_requests),
                "--batch-size",
                str(arguments.batch_size),
                "--concurrency",
                str(arguments.concurrency),
                "--time-limit",
                str(arguments.time_limit),
                "--min-seconds",
                str(arguments.min_seconds),
                "--seed",
                str(arguments.seed),
            ],
            environment,
            scratch / "load.log",
        )
        # Generation, warm-up and four measured phases, each bounded by --time-limit.
        budget = 4 * arguments.time_limit + 180
        deadline = time.monotonic() + budget
        while load.running() and time.monotonic() < deadline:
            for child in (collector, bare):
                child.sample_rss()
            time.sleep(0.5)
        if load.running() or load.process.returncode != 0 or not out.exists():
            print(f"the load generator failed or ran over {budget:.0f}s:\n{load.tail()}", file=sys.stderr)
            return 1
        results = [PhaseResult(**row) for row in orjson.loads(out.read_bytes())]
        on_kafka = events_on_topic(broker.bootstrap, settings.events_topic)

        rows: list[list[object]] = []
        rates: dict[tuple[str, str], tuple[float, float]] = {}
        for result in results:
            latencies = sorted(result.latencies_ms)
            per_second = (result.requests - result.failed) / result.seconds
            events_per_second = result.events / result.seconds
            rates[result.scenario, result.target] = (per_second, events_per_second)
            rows.append(
                [
                    f"{result.scenario} -> {result.target}",
                    result.requests,
                    result.failed,
                    result.seconds,
                    per_second,
                    events_per_second,
                    percentile(latencies, 0.5),
                    percentile(latencies, 0.99),
                ]
            )
        print()
        print(
            f"concurrency {arguments.concurrency}, batch size {arguments.batch_size}, "
            f"time limit {arguments.time_limit:.0f}s per phase"
        )
        print_table(("phase", "requests", "failed", "seconds", "req/s", "events/s", "p50 ms", "p99 ms"), rows)
        print()
        ratio_rows: list[list[object]] = []
        for scenario in SCENARIOS:
            bare_rate, collector_rate = rates.get((scenario, "bare")), rates.get((scenario, "collector"))
            if bare_rate and collector_rate:
                ratio_rows.append([scenario, collector_rate[0] / bare_rate[0], collector_rate[1] / bare_rate[1]])
        print_table(("collector/bare", "req/s ratio", "events/s ratio"), ratio_rows)
        print()
        accepted = sum(result.events for result in results if result.target == "collector")
        warm_up = WARM_UP_REQUESTS * (1 + arguments.batch_size)
        problems, first = collector.problems()
        print_table(
            ("check", "value"),
            [
                ("events acknowledged by the collector (measured)", accepted),
                ("events on the Kafka topic (warm-up included)", on_kafka),
                ("of which warm-up requests (at most)", warm_up),
                ("collector peak RSS MiB (VmHWM)", collector.peak_rss_kib / 1024),
                ("bare server peak RSS MiB (VmHWM)", bare.peak_rss_kib / 1024),
                ("collector log lines with errors/warnings", problems),
            ],
        )
        for line in first:
            print(f"collector: {line}", file=sys.stderr)
        for result in results:
            if result.first_failure:
                print(f"{result.scenario} -> {result.target}: first failure: {result.first_failure}", file=sys.stderr)
        return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--track-requests", type=int, default=20_000, help="measured /v1/track calls per target")
    parser.add_argument("--batch-requests", type=int, default=2_000, help="measured /v1/batch calls per target")
    parser.add_argument("--batch-size", type=int, default=100, help="events per /v1/batch call")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight at once")
    parser.add_argument("--time-limit", type=float, default=30.0, help="seconds per phase at most")
    parser.add_argument(
        "--min-seconds", type=float, default=5.0, help="the bare server's phases repeat requests at least this long"
    )
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (broker data, logs)")
    # Internal: the same file runs the bare server and the load generator in their own processes.
    parser.add_argument("--role", choices=("bench", "bare", "load"), default="bench", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--bare-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--collector-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.role == "bare":
        serve_bare(arguments.port)
        return 0
    if arguments.role == "load":
        run_load(arguments)
        return 0
    return run_benchmark(arguments)


if __name__ == "__main__":
    sys.exit(main())
