"""How fast the pure core gets through shopper traffic, next to parsing the same events.

    .venv/bin/python bench/core_throughput.py [--events 20000] [--repeats 5]

No Kafka. The traffic is worker_throughput.py's (an identify per shopper, then interleaved sessions in time
order), decoded with `parse_event` and applied with `apply_event` and the default rules, each person's
state kept in a dict as the worker's cache does. Parsing alone is the baseline, measured in the same run;
then the state codec the worker's table uses (`PersonState.to_json` and `PersonState.from_json`), per final
state, next to pydantic's own serialiser. Each figure is the fastest of `--repeats` passes, as
the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from datetime import timedelta

from _harness import print_table
from worker_throughput import shopper_traffic

from schemas.events import parse_event
from schemas.rules import RulesConfig, load_rules
from streams.rules.engine import apply_event
from streams.rules.state import PersonState, SourcePosition


def fastest(repeats: int, run: Callable[[], object]) -> float:
    """Seconds of the fastest of `repeats` calls of `run`."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best


def parse_all(messages: list[tuple[bytes, bytes]]) -> None:
    for _, value in messages:
        parse_event(value)


def apply_all(messages: list[tuple[bytes, bytes]], rules: RulesConfig) -> dict[str, PersonState]:
    """Every message parsed and applied to its person's state; the final states."""
    states: dict[str, PersonState] = {}
    for offset, (_, value) in enumerate(messages):
        event = parse_event(value)
        person = event.person_id
        state = states.get(person) or PersonState.new(person)
        position = SourcePosition(topic="events", partition=0, offset=offset)
        states[person] = apply_event(state, event, position, rules).state
    return states


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000, help="events applied (identifies included)")
    parser.add_argument("--shoppers", type=int, default=None, help="distinct shoppers (default events/50)")
    parser.add_argument("--span-hours", type=float, default=2.0, help="event times cover this much recent past")
    parser.add_argument("--repeats", type=int, default=5, help="passes per figure; the fastest counts")
    parser.add_argument("--seed", type=int, default=7)
    arguments = parser.parse_args()
    shoppers = arguments.shoppers or max(10, arguments.events // 50)

    messages = shopper_traffic(arguments.events, shoppers, timedelta(hours=arguments.span_hours), arguments.seed)
    rules = load_rules(None)
    states = apply_all(messages, rules)  # once untimed: pydantic builds its validators lazily
    encoded = [state.to_json() for state in states.values()]

    parse_seconds = fastest(arguments.repeats, lambda: parse_all(messages))
    apply_seconds = fastest(arguments.repeats, lambda: apply_all(messages, rules))
    encode_seconds = fastest(arguments.repeats, lambda: [state.to_json() for state in states.values()])
    pydantic_encode_seconds = fastest(
        arguments.repeats, lambda: [state.model_dump_json(exclude_defaults=True) for state in states.values()]
    )
    decode_seconds = fastest(arguments.repeats, lambda: [PersonState.from_json(raw) for raw in encoded])

    events, people = len(messages), len(states)
    rows = [
        ("parse_event (baseline)", events, parse_seconds),
        ("parse_event + apply_event", events, apply_seconds),
        ("apply_event alone (difference)", events, apply_seconds - parse_seconds),
        ("state encode (to_json)", people, encode_seconds),
        ("state encode (pydantic model_dump_json)", people, pydantic_encode_seconds),
        ("state decode (from_json)", people, decode_seconds),
    ]
    print(
        f"{events:,} events of {people:,} shoppers over {arguments.span_hours:g} h, "
        f"mean encoded state {sum(map(len, encoded)) / people:,.0f} bytes, fastest of {arguments.repeats}"
    )
    print_table(
        ("measure", "count", "µs each", "per second", "x parse_event"),
        [
            (name, count, seconds / count * 1e6, count / seconds, (seconds / count) / (parse_seconds / events))
            for name, count, seconds in rows
        ],
    )


if __name__ == "__main__":
    main()
