"""Campaigns in the processor: the registry's bounds and dead letters, the sweep in chunks, the throttle."""

from __future__ import annotations

from datetime import timedelta

import orjson
import pytest

from schemas.campaigns import Campaign, CampaignOp, InvalidCampaign, control_message, parse_campaign, parse_control
from schemas.settings import Settings
from schemas.triggers import DeadLetter, Suppression, SuppressionReason, Trigger
from streams.processing.campaigns import SWEEP_CLOCK_EVERY, CampaignRegistry
from streams.processing.processor import Processor
from streams.rules.engine import apply_event
from streams.rules.person import PersonState, SourcePosition
from streams.timers import PartitionClock
from tests.unit.factories import at, identify, ordered, rules_from
from tests.unit.streams.test_processor import MemoryOutput, MemoryStore, Record

SETTINGS = Settings(hash_secret="unit-secret", partitions=1)
RULES = rules_from(
    """
segments:
  - name: subscribers
    all: [{fact: has_email, op: "==", value: true}]
  - name: buyers
    all: [{fact: order_count, op: ">=", value: 1}]
policy: {caps: {}, quiet_hours: {}}
"""
)
MOMENT = at(60)  # when the campaign is due, an hour after the people were seen


def campaign(name: str = "news", exclude: tuple[str, ...] = (), **extra: object) -> Campaign:
    document = {
        "id": name,
        "audience": {"segments": ["subscribers"], "exclude": list(exclude)},
        "when": {"at": MOMENT.isoformat()},
        "channel": "email",
        "template_id": name,
        **extra,
    }
    return parse_campaign(orjson.dumps(document).decode(), f"{name}.yaml", RULES)


def schedule(name: str = "news", offset: int = 0, **extra: object) -> Record:
    value = control_message(CampaignOp.SCHEDULE, name, at(0), campaign(name, **extra))
    return Record(SETTINGS.campaigns_topic, 0, offset, name.encode(), value)


def cancel(name: str, offset: int) -> Record:
    return Record(SETTINGS.campaigns_topic, 0, offset, name.encode(), control_message(CampaignOp.CANCEL, name, at(1)))


def processor(minutes: float = 0) -> tuple[Processor, MemoryStore, MemoryOutput]:
    """A processor whose clock reads `minutes` past T0 (its partition 0 is caught up)."""
    store, output = MemoryStore(), MemoryOutput()
    clock = PartitionClock(wall=lambda: at(minutes), idle_after=timedelta(seconds=1))
    clock.observe(0, at(minutes), caught_up=True)
    made = Processor(SETTINGS, RULES, store, output, clock)
    made.owned = {0}
    return made, store, output


def stored_people(store: MemoryStore, count: int, email: bool = True) -> list[str]:
    """People seen before any campaign, stored (not in memory), as a restarted runner finds them."""
    names = [f"p{index:04d}" for index in range(count)]
    for offset, name in enumerate(names):
        traits = {"email": f"{name}@example.com"} if email else {"name": name}
        state = apply_event(
            PersonState.new(name), identify(0, name, **traits), SourcePosition("events", 0, offset), RULES
        ).state
        store.stored[name.encode()] = state.to_json()
    return names


def waiting_for(store: MemoryStore, name: str) -> list[str]:
    state = store.get(0, name.encode())
    assert state is not None
    return sorted(state.pending)


def test_the_registry_keeps_at_most_its_bound_of_live_campaigns_and_names_the_limit() -> None:
    registry = CampaignRegistry(RULES, most_live=2)
    assert registry.apply(parse_control(schedule("a").value, b"a"))
    assert registry.apply(parse_control(schedule("b").value, b"b"))
    with pytest.raises(InvalidCampaign, match="over a limit: 2 live campaigns; cancel one first"):
        registry.apply(parse_control(schedule("c").value, b"c"))
    # A cancelled one leaves room; the same campaign read again changes nothing.
    assert not registry.apply(parse_control(cancel("a", 1).value, b"a"))
    assert not registry.apply(parse_control(schedule("b").value, b"b"))
    assert registry.apply(parse_control(schedule("c").value, b"c"))
    assert registry.live() == 2 and registry.plans["campaign:a"].cancelled


def test_bad_control_messages_are_dead_lettered_with_their_reason() -> None:
    made, _, output = processor()
    unknown = campaign().model_copy(update={"audience": campaign().audience.model_copy(update={"segments": ["vip"]})})
    records = [
        Record(SETTINGS.campaigns_topic, 0, 0, b"news", b"{not json"),
        Record(SETTINGS.campaigns_topic, 0, 1, b"other", schedule("news").value),
        Record(SETTINGS.campaigns_topic, 0, 2, b"gone", control_message(CampaignOp.CANCEL, "gone", at(0))),
        Record(SETTINGS.campaigns_topic, 0, 3, b"news", control_message(CampaignOp.SCHEDULE, "news", at(0), unknown)),
    ]
    for record in records:
        made.control(record)
    letters = [DeadLetter.model_validate_json(value) for value in output.on(SETTINGS.dead_letter_topic)]
    reasons = [(letter.offset, letter.reason.split(":")[0]) for letter in letters]
    assert reasons == [
        (0, "not JSON"),
        (1, "keyed b'other', not by its campaign id 'news'"),
        (2, "cancels campaign 'gone', which was never scheduled"),
        (3, "audience names unknown segments"),
    ]
    assert all(letter.topic == SETTINGS.campaigns_topic for letter in letters)
    assert not made.campaigns.plans


def test_the_sweep_gives_every_member_one_deadline_a_chunk_at_a_time() -> None:
    made, store, _ = processor()
    members = stored_people(store, 3 * SWEEP_CLOCK_EVERY)
    made.control(schedule())
    turns = 0
    while made.sweep_campaigns(budget_seconds=0.0):  # no time at all: one clock check's worth per turn
        turns += 1
    assert turns >= 2  # it gave the loop back before it was done
    assert made.sweep.swept == len(members)
    assert all(waiting_for(store, name) == ["campaign:news|once"] for name in members)
    # Going over them again (a rebalance) adds nothing.
    made.rebuild_schedule()
    while made.sweep_campaigns(budget_seconds=1.0):
        pass
    assert all(waiting_for(store, name) == ["campaign:news|once"] for name in members)


def test_people_not_stored_yet_are_swept_a_chunk_at_a_time_too() -> None:
    # New people wait in memory until the next checkpoint; with a million of them a single pass over all of
    # them in one turn held events back for a quarter of a second (bench/campaign_schedule.py).
    made, store, _ = processor()
    names = stored_people(store, 3 * SWEEP_CLOCK_EVERY)
    for name in names:
        made.save(PersonState.from_json(store.stored.pop(name.encode())), 0)
    made.control(schedule())
    turns = 0
    while made.sweep_campaigns(budget_seconds=0.0):
        turns += 1
    assert turns >= 2
    assert all(waiting_for(store, name) == ["campaign:news|once"] for name in names)


def test_at_the_moment_members_are_sent_once_and_someone_who_left_is_suppressed_with_the_reason() -> None:
    made, store, output = processor()
    ana, bo = stored_people(store, 2)
    made.control(schedule(exclude=("buyers",)))
    while made.sweep_campaigns(1.0):
        pass
    # bo buys something before the moment: now in `buyers`, whom the campaign excludes.
    made.handle(Record(SETTINGS.events_topic, 0, 10, bo.encode(), ordered(30, None, bo).to_json()), True, at(30))
    made.fire_partition(0, MOMENT)
    sent = [Trigger.model_validate_json(value) for value in output.on(SETTINGS.triggers_topic)]
    assert [(trigger.person_id, trigger.rule) for trigger in sent] == [(ana, "campaign:news")]
    (left,) = [Suppression.model_validate_json(value) for value in output.on(SETTINGS.suppressed_topic)]
    assert (left.trigger.person_id, left.reason) == (bo, SuppressionReason.NOT_IN_AUDIENCE)
    made.fire_partition(0, MOMENT + timedelta(minutes=1))
    made.rebuild_schedule()
    while made.sweep_campaigns(1.0):
        pass
    made.fire_partition(0, MOMENT + timedelta(minutes=2))
    assert len(output.on(SETTINGS.triggers_topic)) == 1  # once, whatever passes over them again


def test_a_cancelled_campaign_is_suppressed_with_the_reason_for_those_not_reached() -> None:
    made, store, output = processor()
    stored_people(store, 2)
    made.control(schedule())
    while made.sweep_campaigns(1.0):
        pass
    made.control(cancel("news", 1))
    made.fire_partition(0, MOMENT)
    assert output.on(SETTINGS.triggers_topic) == []
    suppressed = [Suppression.model_validate_json(value) for value in output.on(SETTINGS.suppressed_topic)]
    assert [each.reason for each in suppressed] == [SuppressionReason.CANCELLED] * 2


def test_the_throttle_spreads_a_campaigns_messages_over_slots() -> None:
    made, store, output = processor()
    stored_people(store, 3)
    made.control(schedule(throttle_per_minute=60))  # one a second on the only partition
    while made.sweep_campaigns(1.0):
        pass
    sent_by: list[int] = []
    for seconds in range(4):
        made.fire_partition(0, MOMENT + timedelta(seconds=seconds))
        sent_by.append(len(output.on(SETTINGS.triggers_topic)))
    assert sent_by == [1, 2, 3, 3]


def test_someone_known_but_not_in_the_audience_waits_and_is_dropped_quietly() -> None:
    made, store, _ = processor()
    (nameless,) = stored_people(store, 1, email=False)
    made.control(schedule())
    while made.sweep_campaigns(1.0):
        pass
    # Known but not in the audience: a deadline that is dropped quietly at the moment.
    assert waiting_for(store, nameless) == ["campaign:news|once"]
    made.fire_partition(0, MOMENT)
    assert waiting_for(store, nameless) == []
