"""Memory and disk per person: the serialized state the worker stores, decoded states, and both table stores.

    .venv/bin/python bench/profile_memory.py [--people 100000] [--sessions 2]

No Kafka. Each person gets `--sessions` simulated shopper sessions (streams.simulator.shoppers.shopper_session, which
opens with an identify carrying email and phone) at random moments of the last 30 days, applied through the
pure core's `apply_event` with the default rules, then `advance_time` to now so their abandonment reminders
fire and land in the state as they would have. Then, per person:

- bytes of `state.to_json()` (what the worker writes to its `persons` table) and of the profile alone (as the worker
  publishes it, `encode(profile)`);
- Python heap of a dict of decoded `PersonState`s (the worker's state cache) and of a dict of serialized
  bytes (the memory table store), each built in a fresh child process and measured twice: tracemalloc's
  count of live allocations, and the growth of the resident set (VmRSS), which adds allocator overhead;
- disk of a RocksDB (rocksdict, opened with Faust's own options) holding the serialized states, after a
  flush and a full compaction.

The baseline is the serialized JSON itself: every other figure is shown next to it and as a ratio to it.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import subprocess
import sys
import time
import tracemalloc
import zlib
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from statistics import fmean

import orjson
from _harness import percentile, print_table, scratch_directory

from schemas.encoding import encode
from schemas.events import parse_event
from schemas.rules import RulesConfig, load_rules
from streams.rules.engine import advance_time, apply_event
from streams.rules.person import PersonState, SourcePosition
from streams.simulator.shoppers import shopper_session, stamp
from streams.timers import utc_now

TARGET_BYTES = 2 * 1024
PARTITIONS = 8
HISTORY = timedelta(days=30)


def person_states(
    people: int, sessions: int, rules: RulesConfig, now: datetime, seed: int
) -> Iterator[tuple[str, PersonState]]:
    """One settled state per person, built only through the pure core, one person at a time so the heap of
    this process never holds more than one of them."""
    rng = random.Random(seed)
    offsets = [0] * PARTITIONS
    for number in range(people):
        person = f"shopper-{number:06d}"
        # The worker's partitioner differs, but only the per-partition offsets kept in the state depend on it.
        partition = zlib.crc32(person.encode()) % PARTITIONS
        state = PersonState.new(person)
        starts = sorted(now - HISTORY * rng.random() for _ in range(sessions))
        for start in starts:
            for planned in shopper_session(rng, person):
                document = stamp(planned.document, start + planned.after, rng)
                position = SourcePosition(topic="events", partition=partition, offset=offsets[partition])
                offsets[partition] += 1
                state = apply_event(state, parse_event(orjson.dumps(document)), position, rules).state
        # What a live worker's timers would have done since: due reminders fire (or are suppressed by caps).
        check = SourcePosition(topic="clock", partition=partition, offset=int(now.timestamp() * 1_000_000))
        state = advance_time(state, now, check, rules).state
        yield person, state


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def read_table(path: Path, decode: bool) -> dict[bytes, object]:
    """The dump as a dict, keyed by person id bytes like the worker's table; every key and value is a fresh
    object from the file, so nothing is shared with what the process held before."""
    table: dict[bytes, object] = {}
    with path.open("rb") as dump:
        for line in dump:
            key, _, value = line.rstrip(b"\n").partition(b"\t")
            table[key] = PersonState.from_json(value) if decode else value
    return table


def measure_child(path: Path, decode: bool) -> dict[str, float]:
    """Run in a fresh interpreter: heap growth of a dict of the whole dump, by RSS and by tracemalloc."""
    with path.open("rb") as dump:
        first = dump.readline().rstrip(b"\n").partition(b"\t")[2]
    # Pydantic builds validators lazily; one decode first keeps that one-off cost out of the per-person figure.
    PersonState.from_json(first)
    gc.collect()
    before = rss_bytes()
    table = read_table(path, decode)
    gc.collect()
    rss_growth = rss_bytes() - before
    people = len(table)
    table.clear()
    del table
    gc.collect()
    # Traced separately: tracemalloc's own bookkeeping would otherwise inflate the RSS figure.
    tracemalloc.start()
    baseline = tracemalloc.get_traced_memory()[0]
    table = read_table(path, decode)
    gc.collect()
    traced = tracemalloc.get_traced_memory()[0] - baseline
    tracemalloc.stop()
    del table  # only now: the dict had to be alive while traced
    return {"people": people, "rss_growth": rss_growth, "traced": traced}


def in_child(path: Path, decode: bool) -> dict[str, float]:
    command = [sys.executable, __file__, "--child", "decoded" if decode else "bytes", "--dump", str(path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"the measuring child failed:\n{result.stderr}")
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def rocksdb_size(path: Path, directory: Path) -> tuple[int, int, int, float]:
    """(people, bytes of SST files, bytes of the whole directory, seconds to write), with Faust's options."""
    from faust.stores.rocksdb import RocksDBOptions  # only this phase needs Faust (and its rocksdict binding)

    db = RocksDBOptions().open(directory)
    people = 0
    started = time.perf_counter()
    try:
        with path.open("rb") as dump:
            for line in dump:
                key, _, value = line.rstrip(b"\n").partition(b"\t")
                db.put(key, value)
                people += 1
        # Flush the memtable to SST files and compact, so what is measured is the settled on-disk form
        # rather than the write-ahead log of a database still being loaded.
        db.flush()
        db.compact_range(None, None)
        seconds = time.perf_counter() - started
    finally:
        db.close()
    files = [item for item in directory.rglob("*") if item.is_file()]
    sst = sum(item.stat().st_size for item in files if item.suffix == ".sst")
    total = sum(item.stat().st_size for item in files)
    return people, sst, total, seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--people", type=int, default=100_000, help="distinct people (states) built")
    parser.add_argument("--sessions", type=int, default=2, help="shopper sessions per person over 30 days")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (dump, RocksDB)")
    parser.add_argument("--child", choices=("decoded", "bytes"), help=argparse.SUPPRESS)
    parser.add_argument("--dump", type=Path, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.child:
        print(json.dumps(measure_child(arguments.dump, arguments.child == "decoded")))
        return 0

    rules = load_rules(None)
    with scratch_directory(arguments.keep) as scratch:
        dump = scratch / "states.tsv"
        state_sizes: list[int] = []
        profile_sizes: list[int] = []
        pending = fired = sent = 0
        print(f"building {arguments.people:,} states, {arguments.sessions} sessions each", file=sys.stderr)
        started = time.perf_counter()
        with dump.open("wb") as out:
            for person, state in person_states(arguments.people, arguments.sessions, rules, utc_now(), arguments.seed):
                stored = state.to_json()
                state_sizes.append(len(stored))
                profile_sizes.append(len(encode(state.profile)))
                pending += len(state.pending)
                fired += len(state.fired)
                sent += len(state.sent)
                out.write(person.encode() + b"\t" + stored + b"\n")
        build_seconds = time.perf_counter() - started
        people = len(state_sizes)
        print(f"built in {build_seconds:.0f}s; measuring the heap in child processes", file=sys.stderr, flush=True)
        decoded = in_child(dump, decode=True)
        raw = in_child(dump, decode=False)
        print("writing RocksDB", file=sys.stderr, flush=True)
        stored_people, sst, disk, rocks_seconds = rocksdb_size(dump, scratch / "rocksdb")

        states_sorted = sorted(state_sizes)
        profiles_sorted = sorted(profile_sizes)
        baseline = fmean(state_sizes)

        def row(label: str, per_person: float, how: str) -> tuple[object, ...]:
            return (label, per_person, per_person / baseline, "yes" if per_person <= TARGET_BYTES else "no", how)

        rows = [
            row("stored state JSON, mean (baseline)", baseline, "len(to_json())"),
            row("stored state JSON, p99", float(percentile(states_sorted, 0.99)), "len(to_json())"),
            row("stored state JSON, max", float(states_sorted[-1]), "len(to_json())"),
            row("profile JSON alone, mean", fmean(profile_sizes), "len(encode(profile))"),
            row("profile JSON alone, p99", float(percentile(profiles_sorted, 0.99)), "len(encode(profile))"),
            row("decoded PersonState in a dict", decoded["traced"] / decoded["people"], "tracemalloc, live"),
            row("decoded PersonState in a dict", decoded["rss_growth"] / decoded["people"], "VmRSS growth"),
            row("memory store: dict of bytes", raw["traced"] / raw["people"], "tracemalloc, live"),
            row("memory store: dict of bytes", raw["rss_growth"] / raw["people"], "VmRSS growth"),
            row("rocksdb store: SST files", sst / stored_people, "after flush + compact_range"),
            row("rocksdb store: whole directory", disk / stored_people, "SST + WAL, MANIFEST, LOG, OPTIONS"),
        ]
        print()
        print_table(("bytes per person", "bytes", "x baseline", "<= 2 KB", "measured as"), rows)
        print()
        print_table(
            ("measure", "value"),
            [
                ("people (states)", people),
                ("sessions per person", arguments.sessions),
                ("pending triggers per person", pending / people),
                ("fired entries per person", fired / people),
                ("sent records per person", sent / people),
                ("build s (apply_event + advance_time)", build_seconds),
                ("rocksdb write + flush + compact s", rocks_seconds),
                ("serialized states MiB (sum)", sum(state_sizes) / 2**20),
            ],
        )
        print()
        print(
            f"target: at most 2 KB ({TARGET_BYTES:,} bytes) per profile. Stored state mean {baseline:,.0f} B, "
            f"p99 {percentile(states_sorted, 0.99):,.0f} B; profile alone mean {fmean(profile_sizes):,.0f} B; "
            f"RocksDB SST {sst / stored_people:,.0f} B; memory store {raw['rss_growth'] / raw['people']:,.0f} B "
            f"(RSS); decoded state {decoded['traced'] / decoded['people']:,.0f} B (tracemalloc)."
        )
        return 0


if __name__ == "__main__":
    sys.exit(main())
