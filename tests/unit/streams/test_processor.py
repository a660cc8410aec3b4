"""The processor on an in-memory store: a failure stays with the record or the person it concerns."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta

import orjson
import pytest

from schemas.settings import Settings
from schemas.triggers import DeadLetter, QuarantinedState, Trigger
from streams.processing.processor import Processor
from streams.processing.types import UnreadableState
from streams.rules import engine
from streams.rules.person import PersonState
from streams.timers import PartitionClock
from tests.unit.factories import T0, at, rules_from

SETTINGS = Settings(hash_secret="unit-secret", partitions=1)
RULES = rules_from(
    "timers:\n  grace: 0s\n"
    "triggers:\n"
    "  - {name: cart, entry: {event: Product Added}, key: cart_id, delay: 1h, channel: email,"
    " template_id: cart, context: cart}\n"
    "policy: {caps: {}, quiet_hours: {}}\n"
)


@dataclass
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass
class MemoryStore:
    states: dict[bytes, PersonState] = field(default_factory=dict)
    stored: dict[bytes, bytes] = field(default_factory=dict)
    erased: set[bytes] = field(default_factory=set)

    def get(self, partition: int, key: bytes) -> PersonState | None:
        if key in self.states:
            return self.states[key]
        if key in self.stored:
            try:
                return PersonState.from_json(self.stored[key])
            except ValueError as error:
                raise UnreadableState(self.stored[key], error) from None
        return None

    def holds(self, key: bytes) -> bool:
        return key in self.states

    def save(self, partition: int, state: PersonState) -> None:
        self.states[state.person_id.encode()] = state

    def delete(self, partition: int, key: bytes) -> None:
        self.states.pop(key, None)

    def is_erased(self, partition: int, hashed: bytes) -> bool:
        return hashed in self.erased

    def mark_erased(self, partition: int, hashed: bytes, at: bytes) -> None:
        self.erased.add(hashed)

    def stored_items(self, partition: int) -> Iterator[tuple[bytes, bytes]]:
        return iter(self.stored.items())

    def unstored(self, partition: int) -> Iterator[PersonState]:
        return iter(self.states.values())


@dataclass
class MemoryOutput:
    records: list[tuple[str, bytes | None, bytes | None]] = field(default_factory=list)

    def add(self, topic: str, key: bytes | None, value: bytes | None, partition: int | None = None) -> None:
        self.records.append((topic, key, value))

    def on(self, topic: str) -> list[bytes]:
        return [value for name, _, value in self.records if name == topic and value is not None]


def processor() -> tuple[Processor, MemoryStore, MemoryOutput]:
    store, output = MemoryStore(), MemoryOutput()
    clock = PartitionClock(wall=lambda: at(10_000), idle_after=timedelta(seconds=1))
    made = Processor(SETTINGS, RULES, store, output, clock)
    made.owned = {0}
    return made, store, output


def added(person: str, offset: int) -> Record:
    document = {
        "type": "track", "event": "Product Added", "userId": person, "messageId": f"{person}-{offset}",
        "timestamp": T0.isoformat(), "properties": {"product_id": "p", "cart_id": "c", "price": 1.0},
        "traits": {"email": f"{person}@example.com"},
    }  # fmt: skip
    return Record(SETTINGS.events_topic, 0, offset, person.encode(), orjson.dumps(document))


def test_a_record_that_fails_to_apply_is_dead_lettered_and_the_next_one_applies(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made, store, output = processor()
    original = engine.apply_event

    def failing_for_eve(state: PersonState, *args: object, **kwargs: object) -> engine.Outcome:
        if state.person_id == "eve":
            raise RuntimeError("boom")
        return original(state, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr("streams.processing.processor.apply_event", failing_for_eve)
    made.handle(added("eve", 1), caught_up=True, received_at=at(0))
    made.handle(added("kim", 2), caught_up=True, received_at=at(0))
    letters = [DeadLetter.model_validate_json(value) for value in output.on(SETTINGS.dead_letter_topic)]
    assert [(letter.offset, letter.reason) for letter in letters] == [(1, "processing failed: RuntimeError: boom")]
    assert b"kim" in store.states and b"eve" not in store.states


def test_a_deadline_that_fails_to_fire_is_quarantined_and_the_others_still_fire(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made, _, output = processor()
    for offset, person in enumerate(["eve", "kim"]):
        made.handle(added(person, offset), caught_up=True, received_at=at(0))
    original = engine.advance_time

    def failing_for_eve(state: PersonState, *args: object, **kwargs: object) -> engine.Outcome:
        if state.person_id == "eve":
            raise RecursionError("too deep")
        return original(state, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr("streams.processing.processor.advance_time", failing_for_eve)
    made.fire_partition(0, at(120))
    quarantined = [QuarantinedState.model_validate_json(value) for value in output.on(SETTINGS.quarantine_topic)]
    assert [(q.person_id, q.stage, q.reason) for q in quarantined] == [("eve", "timer", "RecursionError: too deep")]
    assert [orjson.loads(value)["personId"] for value in output.on(SETTINGS.triggers_topic)] == ["kim"]
    made.fire_partition(0, at(200))  # eve's deadline left the schedule: the loop does not spin on her
    assert len(output.on(SETTINGS.quarantine_topic)) == 1


def test_an_unreadable_stored_state_is_set_aside_as_it_was_and_the_person_starts_afresh() -> None:
    made, store, output = processor()
    store.stored[b"eve"] = b'{"profile": {"person_id": "eve"}, "pending": 17}'
    made.handle(added("eve", 1), caught_up=True, received_at=at(0))
    (quarantined,) = [QuarantinedState.model_validate_json(value) for value in output.on(SETTINGS.quarantine_topic)]
    assert quarantined.stage == "read" and quarantined.value == '{"profile": {"person_id": "eve"}, "pending": 17}'
    assert store.states[b"eve"].profile.event_count == 1


def score_record(person: str, offset: int, value: bytes | None, key: bytes | None = None) -> Record:
    return Record(SETTINGS.scores_topic, 0, offset, person.encode() if key is None else key, value)


def a_score(person: str, churn: float = 0.7) -> bytes:
    return orjson.dumps(
        {
            "personId": person, "modelVersion": "v1", "scoredAt": T0.isoformat(), "horizonDays": 90,
            "pAlive": round(1 - churn, 6), "churnRisk": churn, "expectedOrders": 1.0, "predictedClv": 250.0,
            "purchasePropensity": 0.3,
        }
    )  # fmt: skip


def test_a_malformed_score_is_dead_lettered_and_touches_no_state_and_the_next_one_applies() -> None:
    made, store, output = processor()
    made.handle(score_record("eve", 1, b'{"personId": "eve", "churnRisk": 7}'), caught_up=True, received_at=at(0))
    made.handle(score_record("eve", 2, a_score("kim")), caught_up=True, received_at=at(0))  # keyed by another
    [first, second] = [DeadLetter.model_validate_json(value) for value in output.on(SETTINGS.dead_letter_topic)]
    assert first.reason.startswith("invalid score") and second.reason == "the record's key is not its personId"
    assert store.states == {}
    made.handle(score_record("eve", 3, a_score("eve")), caught_up=True, received_at=at(0))
    scores = store.states[b"eve"].current_scores
    assert scores is not None and scores.churn_risk == 0.7


def test_a_tombstone_for_nobody_creates_no_one_and_a_score_for_the_erased_is_refused_and_tombstoned() -> None:
    made, store, output = processor()
    made.handle(score_record("zoe", 1, None), caught_up=True, received_at=at(0))
    assert store.states == {}
    made.handle(score_record("zoe", 2, a_score("zoe")), caught_up=True, received_at=at(0))
    request = {"kind": "erase", "personId": "zoe", "requestId": "r1", "requestedAt": T0.isoformat()}
    made.handle(Record(SETTINGS.privacy_topic, 0, 3, b"zoe", orjson.dumps(request)), True, at(0))
    assert b"zoe" not in store.states
    output.records.clear()
    made.handle(score_record("zoe", 4, a_score("zoe")), caught_up=True, received_at=at(0))
    assert b"zoe" not in store.states
    assert output.records == [(SETTINGS.scores_topic, b"zoe", None)]  # compaction keeps no copy of it


def recommendation(product: str, offset: int, value: bytes | None, key: bytes | None = None) -> Record:
    return Record(SETTINGS.recommendations_topic, 0, offset, product.encode() if key is None else key, value)


def recommended(product: str, *others: str) -> bytes:
    document = {"productId": product, "modelVersion": "v1", "computedAt": T0.isoformat(), "recommended": others}
    return orjson.dumps(document)


def test_recommendations_are_held_replaced_and_forgotten_and_a_bad_record_is_dead_lettered_leaving_the_old() -> None:
    made, store, output = processor()
    made.recommendation(recommendation("p", 1, recommended("p", "q", "r")))
    assert made.recommendations.view == {"p": ("q", "r")}
    made.recommendation(recommendation("p", 2, b"{not json"))
    made.recommendation(recommendation("p", 3, recommended("p", *[f"x{n}" for n in range(11)])))  # over TOP_K
    made.recommendation(recommendation("p", 4, recommended("p", "p")))
    made.recommendation(recommendation("p", 5, recommended("other", "q")))  # keyed by another product
    reasons = [DeadLetter.model_validate_json(value).reason for value in output.on(SETTINGS.dead_letter_topic)]
    assert reasons[0].startswith("not JSON") and reasons[1].startswith("invalid recommendation")
    assert "names the product itself" in reasons[2] and reasons[3] == "the record's key is not its productId"
    assert len(reasons) == 4 and made.recommendations.view == {"p": ("q", "r")}  # what it had before stays
    made.recommendation(recommendation("p", 6, recommended("p", "s")))
    assert made.recommendations.view == {"p": ("s",)}
    made.recommendation(recommendation("p", 7, None))  # a tombstone
    assert made.recommendations.view == {} and store.states == {}


def test_past_the_bound_one_more_product_is_dead_lettered_while_those_held_still_change() -> None:
    store, output = MemoryStore(), MemoryOutput()
    made = Processor(SETTINGS.model_copy(update={"recommendation_products": 2}), RULES, store, output)
    for offset, product in enumerate(("a", "b", "c")):
        made.recommendation(recommendation(product, offset, recommended(product, "z")))
    [letter] = [DeadLetter.model_validate_json(value) for value in output.on(SETTINGS.dead_letter_topic)]
    assert letter.reason.startswith("over a limit: 2 products") and letter.key == "c"
    made.recommendation(recommendation("b", 3, recommended("b", "y")))
    made.recommendation(recommendation("a", 4, None))
    made.recommendation(recommendation("c", 5, recommended("c", "z")))  # room again
    assert made.recommendations.view == {"b": ("y",), "c": ("z",)}


def test_the_processor_hands_its_recommendations_to_the_core() -> None:
    made, _, output = processor()
    made.recommendation(recommendation("p", 1, recommended("p", "q")))
    made.handle(added("kim", 1), caught_up=True, received_at=at(0))
    made.fire_partition(0, at(61))
    [trigger] = [Trigger.model_validate_json(value) for value in output.on(SETTINGS.triggers_topic)]
    assert trigger.context["recommended"] == ["q"]
