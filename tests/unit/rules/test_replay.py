"""Replays: the same events give the same state and triggers, live or replayed, once or twice."""

from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.events import Event
from schemas.rules import CartAbandonmentRule, RulesConfig, TimerPolicy
from schemas.triggers import Trigger
from streams.rules.engine import advance_time, apply_event
from streams.rules.state import PersonState, SourcePosition
from tests.unit.factories import added, at, ordered, track

RULES = RulesConfig(
    cart_abandonment=CartAbandonmentRule(delay=timedelta(minutes=30)),
    timers=TimerPolicy(grace=timedelta(minutes=1)),
)


@st.composite
def shopper_stream(draw: st.DrawFn) -> list[Event]:
    """Events of one person in time order: views, adds, removals and orders on a few carts."""
    minutes = sorted(draw(st.lists(st.integers(min_value=0, max_value=300), min_size=1, max_size=25)))
    events = []
    for index, minute in enumerate(minutes):
        kind = draw(st.sampled_from(["add", "add", "order", "view", "remove"]))
        cart = draw(st.sampled_from(["c1", "c2", None]))
        product = draw(st.sampled_from(["sku-1", "sku-2", "sku-3"]))
        if kind == "add":
            events.append(added(minute, product, cart=cart))
        elif kind == "order":
            events.append(ordered(minute, cart=cart))
        elif kind == "remove":
            events.append(track("Product Removed", minute, product_id=product, cart_id=cart, message_id=f"r{index}"))
        else:
            events.append(track("Product Viewed", minute, product_id=product, message_id=f"v{index}"))
    return events


def run(events: list[Event], ticks_after: list[int] | None = None) -> tuple[PersonState, list[Trigger]]:
    """Feed events at offsets 0.. and, when given, a wall-clock tick after each event (live mode)."""
    state = PersonState.new("p1")
    fired: list[Trigger] = []
    tick_offset = 0
    for offset, event in enumerate(events):
        step = apply_event(state, event, SourcePosition(topic="events", partition=0, offset=offset), RULES)
        state, fired = step.state, fired + step.triggers
        if ticks_after is not None:
            # The wall clock reaches some moment before the next event happens.
            following = events[offset + 1].timestamp if offset + 1 < len(events) else at(10_000)
            moment = event.timestamp + (following - event.timestamp) * (ticks_after[offset] / 100)
            step = advance_time(state, moment, SourcePosition(topic="checks", partition=0, offset=tick_offset), RULES)
            tick_offset += 1
            state, fired = step.state, fired + step.triggers
    step = advance_time(state, at(10_000), SourcePosition(topic="checks", partition=0, offset=10_000), RULES)
    return step.state, fired + step.triggers


def decisions(triggers: list[Trigger]) -> list[tuple[str, object, object]]:
    # What a sender acts on; fired_at is when the worker noticed, which differs live and in replay.
    return [(trigger.trigger_id, trigger.due_at, trigger.context) for trigger in triggers]


@settings(max_examples=150, deadline=None)
@given(shopper_stream())
def test_processing_the_same_events_twice_gives_the_same_state_and_triggers(events: list[Event]) -> None:
    assert run(events) == run(events)


@settings(max_examples=150, deadline=None)
@given(shopper_stream(), st.data())
def test_live_run_and_replay_fire_the_same_triggers(events: list[Event], data: st.DataObject) -> None:
    ticks = data.draw(st.lists(st.integers(0, 100), min_size=len(events), max_size=len(events)))
    _, live = run(events, ticks_after=ticks)
    _, replayed = run(events)
    assert decisions(live) == decisions(replayed)


@settings(max_examples=100, deadline=None)
@given(shopper_stream(), st.integers(min_value=0, max_value=24))
def test_redelivery_after_a_crash_changes_nothing(events: list[Event], crash_after: int) -> None:
    state, _ = run(events)
    # At-least-once delivery hands back everything from some offset on: all of it was applied already.
    redelivered = state
    for offset, event in enumerate(
        events[min(crash_after, len(events) - 1) :], start=min(crash_after, len(events) - 1)
    ):
        step = apply_event(redelivered, event, SourcePosition(topic="events", partition=0, offset=offset), RULES)
        assert step.applied is False and step.triggers == []
        redelivered = step.state
    assert redelivered == state
