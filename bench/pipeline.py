"""The whole pipeline in one run, each figure beside the raw consumer's ceiling measured in the same run (issue 8).

    .venv/bin/python bench/pipeline.py [--events 1000000] [--budget 2400] [--phase-timeout 900]

Start a throw-away broker and produce N events of simulated shopping (worker_throughput.shopper_traffic: an
identify with email, phone and consent per shopper first) twice, into two namespaces, so each worker group
starts from an empty group and empty state. Then, one phase at a time so none shares the two cores with
another:

  a. a raw aiokafka consumer reads the events topic (the client's ceiling), before and again after the rest;
  c. `nudgeflow sink` reads the events into chDB, progress read from its group's committed offsets;
  b. `nudgeflow worker --runner batched` on the default rules, progress read from group `settings.app_id`'s
     committed offsets on the events topic: once with 1 worker, once with 2 in one group (each its own data
     dir and web port);
  f. a bare Faust agent that reads the events and does nothing (bench/faust_noop_worker.py: Faust's own
     ceiling), and `nudgeflow worker --runner faust` (the same core hosted by Faust agents, its own copy of
     the events so its group and tables start empty), each compared with the raw consumer and the Faust
     runner also with the bare agent;
  and the event-to-trigger latency of a fresh worker on the default rules plus a zero-delay probe rule:
  probes (one per identified person) at --probe-rate amid shopper traffic (stamped as it is sent) at half the
  1-worker rate, once that traffic has flowed for --warm-up-seconds, beside the broker's own produce-to-consume
  round trip at the probe rate.

Rates leave start-up out (first commit to last). Each worker or sink phase gets at most --phase-timeout
seconds and whatever is left of --budget; a phase that runs out reports its partial rate, a phase with no
time left is skipped, and both say so under the table.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import orjson
import yaml
from _harness import (
    Child,
    Children,
    install_signal_handlers,
    nudgeflow_command,
    percentile,
    print_table,
    running_broker,
    scratch_directory,
)
from aiokafka import AIOKafkaProducer
from trigger_latency import (
    MatchReader,
    MessageFactory,
    Phase,
    identify_everyone,
    plain_id,
    plain_message,
    product_added,
    start_worker,
    timed_phase,
    trigger_cart,
)
from worker_throughput import (
    WorkerRun,
    end_offsets,
    produce,
    raw_consume,
    run_workers,
    shopper_traffic,
    steady_rate,
    topic_sizes,
)

from schemas.rules import DEFAULT_RULES_FILE
from schemas.settings import Settings
from streams.broker.topics import ensure_topics
from streams.timers import utc_now

NAN = float("nan")
# A phase with less than this left of the budget is skipped rather than started only to be cut short.
MIN_PHASE_SECONDS = 30.0
# The raw consumer is always timed at the end (every ratio needs it), with at least this long to do it.
RAW_MIN_SECONDS = 60.0


class Budget:
    """Seconds left for the run, and how long the next phase may take."""

    def __init__(self, seconds: float, phase_cap: float) -> None:
        self.deadline = time.monotonic() + seconds
        self.phase_cap = phase_cap

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def for_phase(self) -> float:
        return min(self.phase_cap, self.remaining())

    def allows(self, needed: float = MIN_PHASE_SECONDS) -> bool:
        return self.remaining() >= needed


@dataclass
class Row:
    phase: str
    processes: int | str = "-"
    events: int | str = "-"
    startup_seconds: float = NAN
    total_seconds: float = NAN
    rate: float = NAN
    rss: str = "-"
    p50_ms: float = NAN
    p99_ms: float = NAN
    # Compared with the raw consumer's rate in the ratio column.
    throughput: bool = True
    notes: list[str] = field(default_factory=list)


def group_rate(run: WorkerRun, expected: int) -> tuple[float, list[str]]:
    """Events/s of a group run from its first commit to its last, and what the reader must know about it."""
    steady = steady_rate(run)
    if steady == steady:
        return steady, []
    if run.finished:
        # Everything was committed at the first commit (a backlog smaller than one batch or commit interval).
        return run.processed / run.seconds, ["everything came in one commit: rate includes start-up"]
    if run.first_commit_seconds != run.first_commit_seconds:
        return NAN, [f"no offset committed within {run.seconds:.0f}s"]
    steady_seconds = run.seconds - run.first_commit_seconds
    partial = (run.processed - run.committed_at_first) / steady_seconds if steady_seconds > 0 else NAN
    return partial, [f"capped at {run.seconds:.0f}s with {run.processed:,} of {expected:,} committed: partial rate"]


def peak_rss(children: Sequence[Child]) -> str:
    return " / ".join(f"{child.peak_rss_kib / 1024:,.0f}" for child in children) or "-"


def log_notes(children: Sequence[Child]) -> list[str]:
    notes = []
    for child in children:
        problems, first = child.problems()
        if problems:
            notes.append(f"{child.name}: {problems} log lines with errors/warnings (first below, on stderr)")
            for line in first:
                print(f"{child.name}: {line}", file=sys.stderr)
    return notes


def group_row(label: str, run: WorkerRun, expected: int) -> Row:
    rate, notes = group_rate(run, expected)
    for child in run.workers:
        if not child.running():
            notes.append(f"{child.name} exited early, code {child.process.returncode} (--keep keeps its log)")
        child.stop()  # the next phase must not share the cores with them
    return Row(
        label,
        processes=len(run.workers),
        events=run.processed,
        startup_seconds=run.first_commit_seconds,
        total_seconds=run.seconds,
        rate=rate,
        rss=peak_rss(run.workers),
        notes=notes + log_notes(run.workers),
    )


def raw_row(label: str, settings: Settings, expected: int, time_limit: float) -> Row:
    print(label, file=sys.stderr, flush=True)
    count, seconds = asyncio.run(
        raw_consume(settings.kafka_bootstrap, settings.events_topic, expected, True, time_limit)
    )
    notes = [] if count == expected else [f"read {count:,} of {expected:,} within {time_limit:.0f}s"]
    return Row(label, 1, count, total_seconds=seconds, rate=count / seconds, notes=notes)


def skipped(label: str, budget: Budget) -> Row:
    return Row(label, notes=[f"skipped: {max(0.0, budget.remaining()):.0f}s of the budget left"])


def dead_letters(settings: Settings, label: str) -> list[str]:
    sizes = topic_sizes(
        settings.kafka_bootstrap, {"dlq": settings.dead_letter_topic, "triggers": settings.triggers_topic}
    )
    notes = [f"{label}: {sizes['triggers']:,} triggers published"]
    if sizes["dlq"]:
        notes.append(f"{label}: {sizes['dlq']:,} events dead-lettered (their offsets count as processed)")
    return notes


# The latency probe: a zero-delay rule added to the default rules. Its people are identified with an email
# and consent and receive one probe each, so caps, consent and quiet hours let every probe through.
PROBE_RULE: dict[str, object] = {
    "name": "latency_probe",
    "entry": {"event": "Product Added"},
    "key": "cart_id",
    "delay": "0s",
    "channel": "email",
    "template_id": "probe",
    "reentry": "every_time",
}


def probe_rules() -> str:
    rules = yaml.safe_load(DEFAULT_RULES_FILE.read_text())
    rules["triggers"].append(PROBE_RULE)
    return str(yaml.safe_dump(rules, sort_keys=False))


async def with_background(
    bootstrap: str,
    topic: str,
    messages: list[tuple[bytes, bytes]],
    rate: float,
    measured: Awaitable[Phase],
    warm_up_seconds: float,
) -> Phase:
    """Run `measured` while `messages` go to `topic` at `rate`/s (sent in small bursts on a fixed schedule),
    starting it once the traffic has flowed for `warm_up_seconds`: the latency at a load, not of its onset.

    Each message is stamped with its send time, as live traffic is: sent with the two hours of history the
    traffic was generated over, every reminder would be long overdue by the wall clock and fire at once, a
    storm of nudges real shoppers never cause (runs before this change measured that)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()

    async def background() -> None:
        started = time.perf_counter()
        burst = max(1, round(rate / 100))
        for first in range(0, len(messages), burst):
            delay = started + first / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            sent_at = utc_now().isoformat()
            for key, value in messages[first : first + burst]:
                live = {**orjson.loads(value), "timestamp": sent_at}
                await producer.send(topic, value=orjson.dumps(live), key=key)

    sending = asyncio.create_task(background())
    try:
        await asyncio.sleep(warm_up_seconds)
        return await measured
    finally:
        sending.cancel()
        await producer.stop()


def latency_rows(
    settings: Settings, scratch: Path, children: Children, rate: float, arguments: argparse.Namespace
) -> tuple[list[Row], bool]:
    """Event-to-trigger latency of a fresh worker on the default rules plus a zero-delay probe rule, while
    shopper traffic flows at `rate`/s: probes at --probe-rate, each timed from its send to its trigger's
    arrival. Beside it, the broker's own round trip at the probe rate on a plain topic. Also whether every
    message was matched."""
    ensure_topics(settings)
    plain_topic = settings.topic("roundtrip")
    ensure_topics(settings, [plain_topic])
    rules_file = scratch / "latency-rules.yaml"
    rules_file.write_text(probe_rules())
    probe_rate = arguments.probe_rate
    count = max(1, round(probe_rate * arguments.latency_seconds))
    people = [f"latency-{number:06d}" for number in range(count)]  # one probe each
    # Outlasts the warm-up, the phase and its drain.
    background_events = round(rate * (arguments.warm_up_seconds + arguments.latency_seconds + 30))
    background = shopper_traffic(background_events, max(10, background_events // 50), timedelta(hours=2), 11)
    tag = uuid.uuid4().hex[:6]

    def timed(label: str, produce_topic: str, consume_topic: str, make: MessageFactory, read: MatchReader) -> Phase:
        return timed_phase(
            settings.kafka_bootstrap,
            label,
            produce_topic,
            consume_topic,
            make,
            read,
            probe_rate,
            count,
            settings.partitions,
        )

    broker_label = f"broker round trip at {probe_rate:,.0f}/s"
    print(broker_label, file=sys.stderr, flush=True)
    asyncio.run(timed("warming up", plain_topic, plain_topic, plain_message(people, tag + "x"), plain_id))
    broker = asyncio.run(timed(broker_label, plain_topic, plain_topic, plain_message(people, tag + "r"), plain_id))
    worker = start_worker(settings, scratch, children, rules_file)
    print(f"latency worker starting; identifying {len(people):,} people", file=sys.stderr, flush=True)
    startup = asyncio.run(identify_everyone(settings, people, arguments.phase_timeout, worker))
    live_label = f"worker event -> trigger, {probe_rate:,.0f} probes/s in {rate:,.0f} events/s"
    print(live_label, file=sys.stderr, flush=True)
    probes = timed(live_label, settings.events_topic, settings.triggers_topic, product_added(people, tag), trigger_cart)
    live = asyncio.run(
        with_background(
            settings.kafka_bootstrap, settings.events_topic, background, rate, probes, arguments.warm_up_seconds
        )
    )
    worker.sample_rss()
    worker.stop()
    rows = []
    for phase, process in ((broker, None), (live, worker)):
        row = Row(
            phase.label,
            processes=1 if process else "-",
            events=phase.sent,
            startup_seconds=startup if process else NAN,
            total_seconds=phase.send_seconds,
            rate=phase.sent / phase.send_seconds if phase.sent else NAN,
            rss=peak_rss([process]) if process else "-",
            p50_ms=phase.quantile(0.50),
            p99_ms=phase.quantile(0.99),
            throughput=False,
        )
        if phase.matched != phase.sent:
            row.notes.append(f"only {phase.matched:,} of {phase.sent:,} matched")
        if phase.sent and row.rate < 0.95 * probe_rate:
            row.notes.append(f"sent at {row.rate:,.0f}/s, below the {probe_rate:,.0f}/s asked for")
        row.notes.extend(drift(phase))
        if process:
            row.notes.extend(log_notes([process]))
        rows.append(row)
    return rows, broker.matched == broker.sent and live.matched == live.sent


def drift(phase: Phase) -> list[str]:
    """A note when latency climbed through the phase: a queue building up, the rate above what keeps up."""
    tenth = len(phase.latencies_ms) // 10
    if tenth < 10:
        return []
    # Arrival order is close to send order; the first and last tenths' medians show the trend.
    first = percentile(sorted(phase.latencies_ms[:tenth]), 0.5)
    last = percentile(sorted(phase.latencies_ms[-tenth:]), 0.5)
    if last > 3 * first and last > 100:
        return [f"p50 rose from {first:,.0f} ms (first tenth) to {last:,.0f} ms (last tenth): a queue built up"]
    return []


def ratio(value: float, baseline: float) -> float:
    return value / baseline if baseline == baseline and baseline > 0 else NAN


def number(value: float, spec: str) -> str:
    return "-" if value != value else format(value, spec)


def print_results(rows: Sequence[Row], raw_rate: float) -> None:
    print()
    print_table(
        ("phase", "procs", "events", "start-up s", "s", "events/s", "/ raw", "peak RSS MiB", "p50 ms", "p99 ms"),
        [
            (
                row.phase,
                row.processes,
                row.events,
                row.startup_seconds,
                row.total_seconds,
                row.rate,
                ratio(row.rate, raw_rate) if row.throughput else NAN,
                row.rss,
                row.p50_ms,
                row.p99_ms,
            )
            for row in rows
        ],
    )
    notes = [f"{row.phase}: {note}" for row in rows for note in row.notes]
    if notes:
        print("\nnotes:")
        for note in notes:
            print(f"  {note}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000, help="events produced (identifies included)")
    parser.add_argument("--shoppers", type=int, default=None, help="distinct shoppers (default events/50)")
    parser.add_argument("--partitions", type=int, default=8, help="partitions of the topics")
    parser.add_argument("--span-hours", type=float, default=2.0, help="event times cover this much recent past")
    parser.add_argument("--budget", type=float, default=2400.0, help="seconds for the whole run, clean-up aside")
    parser.add_argument("--phase-timeout", type=float, default=900.0, help="at most this long for each phase")
    parser.add_argument("--latency-seconds", type=float, default=15.0, help="length of each latency phase")
    parser.add_argument("--warm-up-seconds", type=float, default=5.0, help="shopper traffic before the probes start")
    parser.add_argument("--latency-rate", type=float, default=None, help="events/s (default half the 1-worker rate)")
    parser.add_argument("--probe-rate", type=float, default=50.0, help="latency probes per second amid the traffic")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (broker data, logs, chDB)")
    arguments = parser.parse_args()
    install_signal_handlers()
    budget = Budget(arguments.budget, arguments.phase_timeout)
    shoppers = arguments.shoppers or max(10, arguments.events // 50)
    run_id = uuid.uuid4().hex[:6]
    rows: list[Row] = []
    complete = True

    with (
        scratch_directory(arguments.keep) as scratch,
        running_broker(scratch / "kafka") as broker,
        Children() as children,
    ):

        def settings_for(tag: str) -> Settings:
            return Settings(
                demo=True,  # a benchmark is a local development run
                kafka_bootstrap=broker.bootstrap,
                namespace=f"bench{run_id}{tag}",
                partitions=arguments.partitions,
                data_dir=scratch,
            )

        one = settings_for("a")  # the raw consumer, the sink, the bare Faust agent and one worker read these
        two = settings_for("b")  # the same events for two workers: their group and state start empty
        faust_runner = settings_for("c")  # and for the Faust runner: its group and tables start empty
        for settings in (one, two, faust_runner):
            ensure_topics(settings)
        messages = shopper_traffic(arguments.events, shoppers, timedelta(hours=arguments.span_hours), arguments.seed)
        print(f"producing {len(messages):,} events for {shoppers:,} shoppers, 3 times", file=sys.stderr, flush=True)
        produce_seconds = produce(broker.bootstrap, one.events_topic, messages)
        produce(broker.bootstrap, two.events_topic, messages)
        produce(broker.bootstrap, faust_runner.events_topic, messages)
        del messages
        ends = end_offsets(broker.bootstrap, one.events_topic)
        ends_two = end_offsets(broker.bootstrap, two.events_topic)
        ends_faust = end_offsets(broker.bootstrap, faust_runner.events_topic)

        def group_phase(
            label: str,
            settings: Settings,
            count: int,
            offsets: dict[int, int],
            command: Sequence[str],
            group: str | None,
            name: str,
        ) -> Row:
            """One worker group's phase (or its skipped row): its rate, its dead letters, whether it finished."""
            nonlocal complete
            if not budget.allows():
                complete = False
                return skipped(label, budget)
            print(label, file=sys.stderr, flush=True)
            run = run_workers(
                settings,
                scratch,
                children,
                count,
                offsets,
                budget.for_phase(),
                command=command,
                group=group,
                label=name,
            )
            row = group_row(label, run, sum(offsets.values()))
            if group is None:  # a nudgeflow worker: its bad messages went to the dead-letter topic
                row.notes.extend(dead_letters(settings, name))
            complete &= run.finished
            return row

        events = sum(ends.values())
        rows.append(
            Row(
                "producer (kafka-python, linger 20 ms)",
                1,
                events,
                total_seconds=produce_seconds,
                rate=events / produce_seconds,
                throughput=False,
            )
        )

        raw_before = raw_row("raw aiokafka consumer, before", one, events, max(RAW_MIN_SECONDS, budget.for_phase()))
        rows.append(raw_before)

        sink_label = "sink into chDB (nudgeflow sink)"
        if budget.allows():
            print(sink_label, file=sys.stderr, flush=True)
            sink = run_workers(
                one,
                scratch,
                children,
                1,
                ends,
                budget.for_phase(),
                command=nudgeflow_command("sink"),
                group=f"{one.app_id}-sink",  # ClickHouseSink's group
                label="sink",
            )
            rows.append(group_row(sink_label, sink, events))
            complete &= sink.finished
        else:
            rows.append(skipped(sink_label, budget))
            complete = False
        sink_row = rows[-1]

        noop_command = [sys.executable, str(Path(__file__).with_name("faust_noop_worker.py"))]
        noop_row = group_phase(
            "bare Faust agent (reads, does nothing)", one, 1, ends, noop_command, f"{one.app_id}-faust-noop", "noop"
        )
        rows.append(noop_row)
        faust_row = group_phase(
            "Faust runner x1 (--runner faust)",
            faust_runner,
            1,
            ends_faust,
            nudgeflow_command("worker", "--runner", "faust"),
            None,
            "faust-worker",
        )
        rows.append(faust_row)

        batched = nudgeflow_command("worker", "--runner", "batched")
        one_row = group_phase("batched runner x1 (--runner batched)", one, 1, ends, batched, None, "one-worker")
        rows.append(one_row)
        one_rate = one_row.rate

        latency_rate = arguments.latency_rate or one_rate / 2
        # Start-up, identifies, two timed phases and their drains: about three phase lengths and a minute.
        latency_needs = 3 * arguments.latency_seconds + 60
        if latency_rate == latency_rate and budget.allows(latency_needs):
            latency, matched = latency_rows(settings_for("lat"), scratch, children, latency_rate, arguments)
            rows.extend(latency)
            complete &= matched
        else:
            why = "no 1-worker rate to halve" if latency_rate != latency_rate else "not enough budget left"
            rows.append(Row("worker event -> trigger", throughput=False, notes=[f"skipped: {why}"]))
            complete = False
        latency_row = rows[-1]

        two_row = group_phase("batched runner x2, one group", two, 2, ends_two, batched, None, "two-workers")
        rows.append(two_row)

        raw_after = raw_row("raw aiokafka consumer, after", one, events, max(RAW_MIN_SECONDS, budget.for_phase()))
        rows.append(raw_after)

        raw_rates = [row.rate for row in (raw_before, raw_after) if row.events == events]
        raw_rate = sum(raw_rates) / len(raw_rates) if raw_rates else NAN
        print_results(rows, raw_rate)
        print(
            f"\nratios to the raw consumer ({number(raw_rate, ',.0f')} events/s, mean of before and after): "
            f"b/a batched 1 worker {number(ratio(one_row.rate, raw_rate), '.4f')}, "
            f"2 workers {number(ratio(two_row.rate, raw_rate), '.4f')}; "
            f"f/a bare Faust agent {number(ratio(noop_row.rate, raw_rate), '.4f')}, "
            f"Faust runner {number(ratio(faust_row.rate, raw_rate), '.4f')}; "
            f"Faust runner / bare Faust agent {number(ratio(faust_row.rate, noop_row.rate), '.4f')} (aim 0.70); "
            f"c/a sink {number(ratio(sink_row.rate, raw_rate), '.4f')}; "
            f"event-to-trigger at {number(latency_rate, ',.0f')}/s: "
            f"p50 {number(latency_row.p50_ms, '.1f')} ms, p99 {number(latency_row.p99_ms, '.1f')} ms"
        )
        return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
