"""Properties of the pure core over arbitrary shopper streams, on the shipped rules and policy:
replay gives what the live run gave, redelivery changes nothing, and no opted-out channel or cap is
ever overstepped."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.events import Event
from schemas.rules import RulesConfig
from schemas.triggers import Channel
from streams.rules.engine import advance_time, apply_event
from streams.rules.person import PersonState, SourcePosition
from tests.unit.factories import added, at, identify, ordered, shipped_rules, track

RULES = shipped_rules()


@st.composite
def shopper_stream(draw: st.DrawFn) -> list[Event]:
    """One known person's events in time order over a few weeks, with consent changes among them."""
    minutes = sorted(draw(st.lists(st.integers(1, 60 * 24 * 20), min_size=1, max_size=30, unique=True)))
    timezone = draw(st.sampled_from(["UTC", "Asia/Shanghai", "America/New_York"]))
    events = [identify(0, email="p@example.com", phone="+15551230000", timezone=timezone, birthday="1990-11-09")]
    for index, minute in enumerate(minutes):
        kind = draw(
            st.sampled_from(["add", "add", "order", "view", "view", "remove", "delivered", "open", "stop", "start",
                             "unsubscribe", "signup", "login", "checkout"])
        )  # fmt: skip
        cart = draw(st.sampled_from(["c1", "c2", None]))
        product = draw(st.sampled_from(["sku-1", "sku-2", "sku-3"]))
        simple = {
            "delivered": "Email Delivered", "open": "Email Opened", "unsubscribe": "Email Unsubscribed",
            "signup": "Signed Up", "login": "Logged In",
        }  # fmt: skip
        if kind == "add":
            events.append(added(minute, product, cart=cart))
        elif kind == "order":
            events.append(ordered(minute, cart=cart))
        elif kind == "remove":
            events.append(track("Product Removed", minute, product_id=product, cart_id=cart, message_id=f"r{index}"))
        elif kind == "view":
            events.append(track("Product Viewed", minute, product_id=product, message_id=f"v{index}"))
        elif kind == "checkout":
            events.append(track("Checkout Started", minute, cart_id=cart, message_id=f"k{index}"))
        elif kind in ("stop", "start"):
            events.append(track("SMS Replied", minute, body=kind.upper(), message_id=f"s{index}"))
        else:
            events.append(track(simple[kind], minute, message_id=f"e{index}"))
    return events


def run(
    events: list[Event], lags: list[int] | None = None, rules: RulesConfig = RULES
) -> tuple[PersonState, list[Any], list[Any]]:
    """Feed events in order; between them, the clock reaches each due moment `lag` seconds late, as a
    timer check would, live (wall clock) or in a replay (stream time)."""
    state = PersonState.new("p1")
    sent: list[Any] = []
    suppressed: list[Any] = []
    check = 0
    lag_index = 0

    def tick_until(limit: datetime) -> None:
        nonlocal state, check, lag_index
        while (due := state.next_deadline()) is not None and due < limit:
            lag = timedelta(seconds=lags[lag_index % len(lags)] if lags else 0)
            lag_index += 1
            step = advance_time(
                state, min(due + lag, limit), SourcePosition(topic="checks", partition=0, offset=check), rules
            )
            check += 1
            state = step.state
            sent.extend(step.triggers)
            suppressed.extend(step.suppressed)

    for offset, event in enumerate(events):
        tick_until(event.timestamp)
        step = apply_event(state, event, SourcePosition(topic="events", partition=0, offset=offset), rules)
        state = step.state
        sent.extend(step.triggers)
        suppressed.extend(step.suppressed)
    tick_until(events[-1].timestamp + timedelta(days=3))
    return state, sent, suppressed


def decisions(sent: list[Any], suppressed: list[Any]) -> tuple[list[Any], list[Any]]:
    # What a sender acts on; fired_at and decided_at say when the worker noticed, which differs run to run.
    return (
        [(t.trigger_id, t.due_at, t.template_id, t.variant, t.context) for t in sent],
        [(s.trigger.trigger_id, s.reason) for s in suppressed],
    )


@settings(max_examples=120, deadline=None)
@given(shopper_stream())
def test_processing_the_same_events_twice_gives_the_same_state_and_output(events: list[Event]) -> None:
    assert run(events) == run(events)


@settings(max_examples=120, deadline=None)
@given(shopper_stream(), st.lists(st.integers(0, 600), min_size=1, max_size=10))
def test_live_run_and_replay_decide_the_same(events: list[Event], lags: list[int]) -> None:
    _, live_sent, live_suppressed = run(events, lags)
    _, replay_sent, replay_suppressed = run(events)
    assert decisions(live_sent, live_suppressed) == decisions(replay_sent, replay_suppressed)


@settings(max_examples=80, deadline=None)
@given(shopper_stream(), st.integers(min_value=0, max_value=30))
def test_redelivery_after_a_crash_changes_nothing(events: list[Event], crash_after: int) -> None:
    state, _, _ = run(events)
    start = min(crash_after, len(events) - 1)
    redelivered = state
    for offset in range(start, len(events)):
        step = apply_event(
            redelivered, events[offset], SourcePosition(topic="events", partition=0, offset=offset), RULES
        )
        assert step.applied is False and step.triggers == [] and step.suppressed == []
        redelivered = step.state
    assert redelivered == state


@settings(max_examples=80, deadline=None)
@given(shopper_stream())
def test_a_state_stored_and_read_back_after_every_event_decides_as_the_one_kept_in_memory(
    events: list[Event],
) -> None:
    kept = stored = PersonState.new("p1")
    for offset, event in enumerate(events):
        position = SourcePosition(topic="events", partition=0, offset=offset)
        kept_step = apply_event(kept, event, position, RULES)
        stored_step = apply_event(PersonState.from_json(stored.to_json()), event, position, RULES)
        assert decisions(stored_step.triggers, stored_step.suppressed) == decisions(
            kept_step.triggers, kept_step.suppressed
        )
        kept, stored = kept_step.state, stored_step.state
        assert PersonState.from_json(stored.to_json()) == kept


def test_a_state_stored_with_fields_this_release_does_not_know_still_decodes() -> None:
    # A newer worker's state (a rolling upgrade, a rollback): what this release knows of it reads back.
    state = run([identify(0), added(1, "sku-1", cart="c1")])[0]
    document = orjson.loads(state.to_json())
    document["campaigns"] = {"spring": {"deadline": "2026-12-01T00:00:00Z"}}
    document["profile"]["predicted_ltv"] = 120.5
    document["carts"]["c1"]["sku-1"]["colour"] = "teal"
    assert PersonState.from_json(orjson.dumps(document)) == state


def test_a_stored_state_of_the_wrong_shape_is_refused_as_a_value_error() -> None:
    for stored in (b'{"profile": {"person_id": "eve"}, "pending": 17}', b"{", b'{"profile": {}}', b"[]"):
        with pytest.raises(ValueError):
            PersonState.from_json(stored)


def consent_timeline(events: list[Event]) -> list[tuple[datetime, Channel, bool]]:
    """(moment, channel, opted_out) for every consent change in the stream."""
    changes = []
    for event in events:
        if event.event == "SMS Replied":
            changes.append((event.timestamp, Channel.SMS, event.properties["body"] == "STOP"))
        if event.event == "Email Unsubscribed":
            changes.append((event.timestamp, Channel.EMAIL, True))
    return changes


def opted_out_throughout(
    changes: list[tuple[datetime, Channel, bool]], channel: Channel, start: datetime, end: datetime
) -> bool:
    before = [opted for moment, ch, opted in changes if ch == channel and moment < start]
    during = [opted for moment, ch, opted in changes if ch == channel and start <= moment <= end]
    return bool(before) and before[-1] and all(during)


@settings(max_examples=150, deadline=None)
@given(shopper_stream(), st.lists(st.integers(0, 600), min_size=1, max_size=10))
def test_nothing_goes_out_on_an_opted_out_channel_and_no_cap_is_exceeded(events: list[Event], lags: list[int]) -> None:
    state, sent, _ = run(events, lags)
    changes = consent_timeline(events)
    for trigger in sent:
        assert not opted_out_throughout(changes, trigger.channel, trigger.due_at, trigger.fired_at), trigger
    for channel, caps in RULES.policy.caps.items():
        moments = sorted(record.at for record in state.sent if record.channel == channel)
        for cap in caps:
            for index, moment in enumerate(moments):
                in_window = [m for m in moments[: index + 1] if m > moment - cap.per]
                assert len(in_window) <= cap.count, (channel, cap, moments)


def test_the_streams_above_do_send_things() -> None:
    # Guard against properties that hold only because nothing is ever sent.
    events = [
        identify(0, email="p@example.com", phone="+15551230000"),
        added(1),
        track("Product Viewed", 2, product_id="x"),
    ]
    _, sent, suppressed = run(events)
    outcomes = {t.rule: "sent" for t in sent} | {s.trigger.rule: s.reason.value for s in suppressed}
    assert outcomes["browse_abandonment"] == "sent"
    assert outcomes["cart_abandonment"] in {"sent", "holdout"}
    assert all(at(0) < t.due_at for t in sent)
