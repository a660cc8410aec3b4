"""Scheduling a campaign for many people: the runner's sweep (streams/processing/campaigns.py) and what it
costs live traffic.

Part 1, in one process, the batched runner's own store and processor over in-memory tables (no broker): N
stored people, a campaign for all of them arrives, and the sweep runs in its turns of SWEEP_BUDGET_SECONDS as
the runner's loop runs it. Printed: how long until everyone has the deadline, people per second, the longest
turn (what an event waiting behind the sweep waits at most), and the encoding of the changed states the next
checkpoint writes (every STORE_EVERY_SECONDS or MOST_UNSTORED_STATES, as the runner does; the broker's part
of it is not in this figure); beside it, in the same run, the floor: decoding every stored state once.

Part 2 (`--live`), against a real broker and a worker process: event-to-trigger latency of live traffic at
`--rate` for `--seconds`, first alone, then while a campaign for every person is being scheduled, in one run.

Run: .venv/bin/python bench/campaign_schedule.py [--people 100000 1000000] [--live --live-people 20000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from schemas.campaigns import CampaignOp, control_message, parse_campaign
from schemas.events import Event
from schemas.rules import RulesConfig, load_rules
from schemas.settings import Settings
from streams.broker.outbox import Outbox
from streams.processing.campaigns import SWEEP_BUDGET_SECONDS
from streams.processing.processor import Processor
from streams.rules.engine import apply_event
from streams.rules.person import PersonState, SourcePosition
from streams.runners.batched import MOST_UNSTORED_STATES, STORE_EVERY_SECONDS, tune_garbage_collector
from streams.state.store import TableStore
from streams.timers import PartitionClock

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
PARTITIONS = 8
CAMPAIGN_ID = "winter-sale"


@dataclass(frozen=True)
class Record:
    """A campaigns-topic record as the processor reads it."""

    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes


def campaign_file(rules: RulesConfig, at: datetime) -> str:
    document = {
        "id": CAMPAIGN_ID,
        "audience": {"segments": ["active_30d"]},
        "when": {"at": at.isoformat()},
        "channel": "email",
        "template_id": "newsletter",
    }
    parse_campaign(orjson.dumps(document).decode(), "bench", rules)  # refused here, not half-way through
    return orjson.dumps(document).decode()


def seen_person(name: str, rules: RulesConfig) -> PersonState:
    """Someone identified with an email a day ago: in `active_30d`, so in the campaign's audience."""
    event = Event.model_validate(
        {
            "type": "identify",
            "userId": name,
            "messageId": f"{name}-identify",
            "timestamp": (NOW - timedelta(days=1)).isoformat(),
            "traits": {"email": f"{name}@example.com", "email_consent": "opted_in"},
        }
    )
    return apply_event(PersonState.new(name), event, SourcePosition("events", 0, 0), rules).state


def stored_store(settings: Settings, rules: RulesConfig, people: int) -> TableStore:
    store = TableStore(settings)
    partitions = set(range(PARTITIONS))
    for table in store.tables:
        table.open(partitions)
    template = seen_person("p0000000", rules).to_json()
    for number in range(people):
        name = f"p{number:07d}"
        # The same person under another name: building a million states through the core would take longer
        # than what is measured.
        stored = template.replace(b"p0000000", name.encode())
        store.persons.restore(number % PARTITIONS, name.encode(), stored, number)
    return store


@dataclass
class SweepFigures:
    people: int
    decode_all_seconds: float
    sweep_seconds: float
    turns: int
    longest_turn_ms: float
    median_turn_ms: float
    scheduled: int
    encode_seconds: float
    longest_checkpoint_ms: float


def sweep(people: int, settings: Settings, rules: RulesConfig) -> SweepFigures:
    store = stored_store(settings, rules, people)
    started = time.perf_counter()
    for partition in range(PARTITIONS):
        for _, stored in store.stored_items(partition):
            PersonState.from_json(stored)
    decode_all = time.perf_counter() - started

    clock = PartitionClock(wall=lambda: NOW, idle_after=timedelta(seconds=1))
    for partition in range(PARTITIONS):
        clock.observe(partition, NOW, caught_up=True)
    processor = Processor(settings, rules, store, Outbox(None), clock)
    processor.owned = set(range(PARTITIONS))
    value = control_message(
        CampaignOp.SCHEDULE,
        CAMPAIGN_ID,
        NOW,
        parse_campaign(campaign_file(rules, NOW + timedelta(hours=1)), "bench", rules),
    )
    processor.control(Record(settings.campaigns_topic, 0, 0, CAMPAIGN_ID.encode(), value))
    turns: list[float] = []
    checkpoints: list[float] = []
    scheduled = 0
    rule = f"campaign:{CAMPAIGN_ID}"

    def checkpoint() -> None:
        """What the runner's checkpoint does to the changed states, the broker aside: encode and write."""
        nonlocal scheduled
        started = time.perf_counter()
        for key, (partition, state) in store.take_unstored().items():
            scheduled += any(slot.startswith(rule) for slot in state.pending)
            store.persons.restore(partition, key, state.to_json(), 0)
        checkpoints.append(time.perf_counter() - started)

    started = stored_at = time.perf_counter()
    while processor.sweep.busy:
        turn = time.perf_counter()
        processor.sweep_campaigns(SWEEP_BUDGET_SECONDS)
        turns.append(time.perf_counter() - turn)
        if time.perf_counter() - stored_at >= STORE_EVERY_SECONDS or store.unstored_count() >= MOST_UNSTORED_STATES:
            checkpoint()
            stored_at = time.perf_counter()
    checkpoint()
    sweep_seconds = time.perf_counter() - started
    return SweepFigures(
        people=people,
        decode_all_seconds=decode_all,
        sweep_seconds=sweep_seconds,
        turns=len(turns),
        longest_turn_ms=max(turns) * 1000,
        median_turn_ms=statistics.median(turns) * 1000,
        scheduled=scheduled,
        encode_seconds=sum(checkpoints),
        longest_checkpoint_ms=max(checkpoints) * 1000,
    )


def print_sweeps(results: list[SweepFigures]) -> None:
    header = (
        "people",
        "scheduled",
        "sweep s",
        "people/s",
        "turns",
        "median turn ms",
        "longest turn ms",
        "decode-all s (floor)",
        "sweep / floor",
        "checkpoints s",
        "longest checkpoint ms",
    )
    rows = [
        (
            f"{each.people:,}",
            f"{each.scheduled:,}",
            f"{each.sweep_seconds:.2f}",
            f"{each.people / each.sweep_seconds:,.0f}",
            f"{each.turns:,}",
            f"{each.median_turn_ms:.1f}",
            f"{each.longest_turn_ms:.1f}",
            f"{each.decode_all_seconds:.2f}",
            f"{each.sweep_seconds / each.decode_all_seconds:.2f}",
            f"{each.encode_seconds:.2f}",
            f"{each.longest_checkpoint_ms:.1f}",
        )
        for each in results
    ]
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    for row in (header, *rows):
        print("  ".join(str(cell).rjust(width) for cell, width in zip(row, widths, strict=True)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--people", type=int, nargs="+", default=[100_000, 1_000_000], help="audiences to sweep")
    arguments = parser.parse_args()
    tune_garbage_collector()  # as `nudgeflow worker` does, whichever runner hosts it
    settings = Settings(hash_secret="bench", table_store="memory", partitions=PARTITIONS, data_dir=Path("unused"))
    rules = load_rules(None)
    results = []
    for people in arguments.people:
        print(f"sweeping {people:,} stored people", file=sys.stderr, flush=True)
        results.append(sweep(people, settings, rules))
    print_sweeps(results)


if __name__ == "__main__":
    main()
