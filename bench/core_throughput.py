"""How fast the pure core gets through shopper traffic, next to parsing the same events.

    .venv/bin/python bench/core_throughput.py [--events 20000] [--repeats 5]

No Kafka. The traffic is worker_throughput.py's (an identify per shopper, then interleaved sessions in time
order), decoded with `parse_event` and applied with `apply_event` and the default rules, each person's
state kept in a dict as the worker's cache does. Parsing alone is the baseline, measured in the same run;
beside it the same traffic under the default rules without the segments the scores and the replies brought
(and the triggers those segments start or pause), the per-event cost of the new profile fields' rules,
the two passes taken in turns. Then the state codec the worker's table uses (`PersonState.to_json` and
`PersonState.from_json`), per final state, next to orjson over the same data as plain builtins (the baseline
a codec cannot beat by much), and the memory one decoded state holds (tracemalloc). Last, the two forms of
plain data the issue weighed, on the core's own operations (a copy with changes, encode, decode, memory):
msgspec Structs (what the core uses) and frozen slotted dataclasses of the same fields. Each figure is the
fastest of `--repeats` passes, as the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
import tracemalloc
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import msgspec
import orjson
from _harness import print_table
from worker_throughput import shopper_traffic

from schemas.encoding import to_plain
from schemas.events import parse_event
from schemas.rules import RulesConfig, load_rules
from streams.rules.engine import apply_event
from streams.rules.person import PersonState, SourcePosition


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


# The default segments that read the scores' and the replies' facts (issue 15): each is checked on every event.
NEW_FIELDS_SEGMENTS = frozenset({"high_value_at_risk", "due_to_reorder", "replied_negatively_recently"})


def without_new_fields_segments(rules: RulesConfig) -> RulesConfig:
    """The rules without NEW_FIELDS_SEGMENTS, the triggers they start, and the pauses that name them."""
    document = rules.model_dump(by_alias=True)
    document["segments"] = [segment for segment in document["segments"] if segment["name"] not in NEW_FIELDS_SEGMENTS]
    document["triggers"] = [
        {**trigger, "paused_in_segments": [n for n in trigger["paused_in_segments"] if n not in NEW_FIELDS_SEGMENTS]}
        for trigger in document["triggers"]
        if (trigger["entry"] or {}).get("segment") not in NEW_FIELDS_SEGMENTS
    ]
    return RulesConfig.model_validate(document)


def decoded_bytes(encoded: list[bytes]) -> float:
    """Mean bytes of memory one decoded state holds (every object it references, as tracemalloc counts)."""
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    kept = [PersonState.from_json(raw) for raw in encoded]
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert kept
    return (after - before) / len(encoded)


def as_dataclass(struct_type: type[msgspec.Struct], made: dict[type, type]) -> type:
    """A frozen slotted dataclass with the Struct's fields (nested Structs turned alike)."""
    if struct_type in made:
        return made[struct_type]
    hints = msgspec.structs.fields(struct_type)
    fields: list[Any] = []
    for info in hints:
        default = (
            dataclasses.field(default_factory=info.default_factory)
            if info.default_factory is not msgspec.NODEFAULT
            else (
                dataclasses.field(default=info.default)
                if info.default is not msgspec.NODEFAULT
                else dataclasses.field()
            )
        )
        fields.append((info.name, _dataclass_type(info.type, made), default))
    made[struct_type] = dataclasses.make_dataclass(
        f"{struct_type.__name__}Data", fields, frozen=True, slots=True, kw_only=True
    )
    return made[struct_type]


def _dataclass_type(kind: Any, made: dict[type, type]) -> Any:
    if isinstance(kind, type) and issubclass(kind, msgspec.Struct):
        return as_dataclass(kind, made)
    origin, arguments = getattr(kind, "__origin__", None), getattr(kind, "__args__", ())
    if origin is None or not arguments:
        return kind
    converted = tuple(_dataclass_type(argument, made) for argument in arguments)
    if origin in (dict, list):
        return origin[converted] if len(converted) > 1 else origin[converted[0]]
    if str(origin) == "typing.Union" or type(kind).__name__ == "UnionType":
        result = converted[0]
        for other in converted[1:]:
            result = result | other
        return result
    return kind


def forms_compared(states: list[PersonState], repeats: int) -> list[tuple[str, int, float]]:
    """The core's operations on each form of plain data, over the same states."""
    made: dict[type, type] = {}
    data_type = as_dataclass(PersonState, made)
    profile_type = made[type(states[0].profile)]
    encoder = msgspec.json.Encoder()
    encoded = [encoder.encode(state) for state in states]
    struct_decoder = msgspec.json.Decoder(PersonState)
    data_decoder = msgspec.json.Decoder(data_type)
    as_data = [data_decoder.decode(raw) for raw in encoded]
    assert [orjson.loads(encoder.encode(value)) for value in as_data] == [orjson.loads(raw) for raw in encoded]
    assert profile_type is type(as_data[0].profile)
    people = len(states)
    change = {"event_count": 1, "last_seen": states[0].profile.last_seen, "engagement": 1.5}
    rows = []
    for name, values, replace, decoder in (
        ("msgspec Struct", states, msgspec.structs.replace, struct_decoder),
        ("slotted dataclass", as_data, dataclasses.replace, data_decoder),
    ):

        def copy(values: list[Any] = values, replace: Callable[..., Any] = replace) -> object:
            return [replace(value.profile, **change) for value in values]

        def encode(values: list[Any] = values) -> object:
            return [encoder.encode(value) for value in values]

        def decode(decoder: msgspec.json.Decoder[Any] = decoder) -> object:
            return [decoder.decode(raw) for raw in encoded]

        rows.append((f"{name}: copy a profile with 3 changes", people, fastest(repeats, copy)))
        rows.append((f"{name}: encode a state", people, fastest(repeats, encode)))
        rows.append((f"{name}: decode a state", people, fastest(repeats, decode)))
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        kept = [decoder.decode(raw) for raw in encoded]
        held = (tracemalloc.get_traced_memory()[0] - before) / people
        tracemalloc.stop()
        assert kept
        rows.append((f"{name}: bytes of a decoded state (not a time)", people, held * people / 1e6))
    return rows


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
    older_rules = without_new_fields_segments(rules)
    states = apply_all(messages, rules)  # once untimed: pydantic builds its validators lazily
    apply_all(messages, older_rules)
    encoded = [state.to_json() for state in states.values()]

    parse_seconds = fastest(arguments.repeats, lambda: parse_all(messages))
    # In turns, so a burst of load on the shared machine falls on both alike.
    apply_seconds = older_seconds = float("inf")
    for _ in range(arguments.repeats):
        apply_seconds = min(apply_seconds, fastest(1, lambda: apply_all(messages, rules)))
        older_seconds = min(older_seconds, fastest(1, lambda: apply_all(messages, older_rules)))
    encode_seconds = fastest(arguments.repeats, lambda: [state.to_json() for state in states.values()])
    plain = [to_plain(state) for state in states.values()]
    orjson_encode_seconds = fastest(arguments.repeats, lambda: [orjson.dumps(document) for document in plain])
    decode_seconds = fastest(arguments.repeats, lambda: [PersonState.from_json(raw) for raw in encoded])
    orjson_decode_seconds = fastest(arguments.repeats, lambda: [orjson.loads(raw) for raw in encoded])
    memory = decoded_bytes(encoded)

    events, people = len(messages), len(states)
    rows = [
        ("parse_event (baseline)", events, parse_seconds),
        ("parse_event + apply_event", events, apply_seconds),
        ("apply_event alone (difference)", events, apply_seconds - parse_seconds),
        ("parse + apply, rules without scores' and replies' segments", events, older_seconds),
        ("their segments' cost (difference)", events, apply_seconds - older_seconds),
        ("state encode (to_json, msgspec)", people, encode_seconds),
        ("state encode baseline: orjson.dumps of builtins", people, orjson_encode_seconds),
        ("state decode (from_json, msgspec, typed)", people, decode_seconds),
        ("state decode baseline: orjson.loads to builtins", people, orjson_decode_seconds),
    ]
    print(
        f"{events:,} events of {people:,} shoppers over {arguments.span_hours:g} h, "
        f"mean encoded state {sum(map(len, encoded)) / people:,.0f} bytes, "
        f"a decoded state holds {memory:,.0f} bytes of memory, fastest of {arguments.repeats}"
    )
    print_table(
        ("measure", "count", "µs each", "per second", "x parse_event"),
        [
            (name, count, seconds / count * 1e6, count / seconds, (seconds / count) / (parse_seconds / events))
            for name, count, seconds in rows
        ],
    )
    print("\nThe two forms of plain data on the same states (the memory rows are MB for all states, not seconds):")
    compared = forms_compared(list(states.values()), arguments.repeats)
    print_table(
        ("measure", "count", "µs each (bytes for memory)", "per second"),
        [(name, count, seconds / count * 1e6, count / seconds) for name, count, seconds in compared],
    )


if __name__ == "__main__":
    main()
