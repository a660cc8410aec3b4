"""Campaigns in the pure core: each recipient's own local moment, membership at that moment, the same gate,
one trigger id per campaign, occurrence and person, cancellation, the throttle's slots."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.campaigns import Campaign, InvalidCampaign, parse_campaign, parse_control
from schemas.rules import parse_rules
from schemas.triggers import SuppressionReason
from streams.rules.campaigns import (
    Campaigns,
    next_occurrence,
    occurrence_from,
    plan,
    throttle_holds,
)
from streams.rules.engine import Outcome, Surroundings, advance_time, apply_event, schedule_campaigns
from streams.rules.person import PersonState, SourcePosition
from tests.unit.factories import identify, track

RULES = parse_rules(
    """
segments:
  - name: subscribers
    all: [{fact: has_email, op: "==", value: true}]
  - name: buyers
    all: [{fact: order_count, op: ">=", value: 1}]
policy:
  quiet_hours: {}
"""
)

XMAS = """
id: xmas
audience: {segments: [subscribers], exclude: [buyers]}
when: {day: 2026-12-24, local_time: "10:00"}
channel: email
template_id: xmas
"""

SCHEDULED_AT = datetime(2026, 12, 20, 9, 0, tzinfo=UTC)


def campaign(text: str = XMAS) -> Campaign:
    return parse_campaign(text, "xmas.yaml", RULES)


def live(*campaigns: Campaign, cancelled: bool = False) -> Campaigns:
    return Campaigns({each.rule_name: plan(each, cancelled) for each in campaigns})


def person(name: str, zone: str, minutes: float = 0) -> PersonState:
    """Someone known with an email address in `zone`, as of event time T0 + minutes (November 2026)."""
    event = identify(minutes, name, email=f"{name}@example.com", timezone=zone)
    return apply_event(PersonState.new(name), event, SourcePosition(topic="events", partition=0, offset=0), RULES).state


def tick(state: PersonState, now: datetime, campaigns: Campaigns) -> Outcome:
    position = SourcePosition(topic="clock", partition=0, offset=int(now.timestamp() * 1e6))
    return advance_time(state, now, position, RULES, Surroundings(campaigns=campaigns))


def run_until(state: PersonState, until: datetime, campaigns: Campaigns) -> tuple[PersonState, list[Outcome]]:
    steps = []
    now = SCHEDULED_AT
    while now <= until:
        step = tick(state, now, campaigns)
        state = step.state
        steps.append(step)
        now += timedelta(minutes=30)
    return state, steps


@pytest.mark.parametrize("zone", ["America/New_York", "Europe/Berlin", "Asia/Shanghai"])
def test_each_recipient_gets_it_at_their_own_ten_o_clock_once(zone: str) -> None:
    campaigns = live(campaign())
    state = schedule_campaigns(person("ana", zone), SCHEDULED_AT, campaigns, RULES)
    state, steps = run_until(state, datetime(2026, 12, 26, tzinfo=UTC), campaigns)
    triggers = [trigger for step in steps for trigger in step.triggers]
    assert len(triggers) == 1
    local = triggers[0].due_at.astimezone(ZoneInfo(zone))
    assert (local.date(), local.time()) == (date(2026, 12, 24), time(10, 0))
    assert triggers[0].rule == "campaign:xmas" and triggers[0].address == "ana@example.com"
    assert schedule_campaigns(state, datetime(2026, 12, 26, tzinfo=UTC), campaigns, RULES) is state


def test_the_trigger_id_depends_on_campaign_occurrence_and_person_only() -> None:
    campaigns = live(campaign())
    ids: set[str] = set()
    for scheduled in (SCHEDULED_AT, SCHEDULED_AT + timedelta(days=2)):
        state = schedule_campaigns(person("ana", "Europe/Berlin"), scheduled, campaigns, RULES)
        _, steps = run_until(state, datetime(2026, 12, 25, tzinfo=UTC), campaigns)
        ids.update(trigger.trigger_id for step in steps for trigger in step.triggers)
    assert len(ids) == 1
    other = schedule_campaigns(person("bo", "Europe/Berlin"), SCHEDULED_AT, campaigns, RULES)
    _, steps = run_until(other, datetime(2026, 12, 25, tzinfo=UTC), campaigns)
    assert {trigger.trigger_id for step in steps for trigger in step.triggers}.isdisjoint(ids)


def test_membership_is_checked_at_the_moment() -> None:
    campaigns = live(campaign())
    state = schedule_campaigns(person("ana", "UTC"), SCHEDULED_AT, campaigns, RULES)
    # She buys before the 24th: now in the excluded segment.
    order = track("Order Completed", 0, "ana", order_id="o1", revenue=5)
    order = order.model_copy(update={"timestamp": SCHEDULED_AT + timedelta(days=1)})
    position = SourcePosition(topic="events", partition=0, offset=1)
    state = apply_event(state, order, position, RULES, Surroundings(campaigns=campaigns)).state
    _, steps = run_until(state, datetime(2026, 12, 25, tzinfo=UTC), campaigns)
    assert not [t for step in steps for t in step.triggers]
    reasons = [s.reason for step in steps for s in step.suppressed]
    assert reasons == [SuppressionReason.NOT_IN_AUDIENCE]


def test_someone_who_joins_meanwhile_is_included_and_a_non_member_is_dropped_quietly() -> None:
    campaigns = live(campaign())
    anonymous_then_known = schedule_campaigns(PersonState.new("cy"), SCHEDULED_AT, campaigns, RULES)
    assert not anonymous_then_known.pending  # nobody to send to yet
    joined = identify(0, "cy", email="cy@example.com", timezone="UTC").model_copy(
        update={"timestamp": SCHEDULED_AT + timedelta(days=1)}
    )
    position = SourcePosition(topic="events", partition=0, offset=1)
    state = apply_event(anonymous_then_known, joined, position, RULES, Surroundings(campaigns=campaigns)).state
    _, steps = run_until(state, datetime(2026, 12, 25, tzinfo=UTC), campaigns)
    assert len([t for step in steps for t in step.triggers]) == 1

    no_email = identify(0, "dee", timezone="UTC")
    state = apply_event(PersonState.new("dee"), no_email, position, RULES).state
    state = schedule_campaigns(state, SCHEDULED_AT, campaigns, RULES)
    state, steps = run_until(state, datetime(2026, 12, 25, tzinfo=UTC), campaigns)
    assert not [t for step in steps for t in step.triggers] and not [s for step in steps for s in step.suppressed]
    assert "campaign:xmas|2026-12-24" in state.fired  # decided: not scheduled again


def test_an_opt_out_before_the_moment_is_suppressed_by_the_gate() -> None:
    campaigns = live(campaign())
    state = schedule_campaigns(person("ana", "UTC"), SCHEDULED_AT, campaigns, RULES)
    opt_out = identify(0, "ana", email_consent="opted_out").model_copy(
        update={"timestamp": SCHEDULED_AT + timedelta(days=1)}
    )
    position = SourcePosition(topic="events", partition=0, offset=1)
    state = apply_event(state, opt_out, position, RULES, Surroundings(campaigns=campaigns)).state
    _, steps = run_until(state, datetime(2026, 12, 25, tzinfo=UTC), campaigns)
    assert [s.reason for step in steps for s in step.suppressed] == [SuppressionReason.OPTED_OUT]


def test_cancel_stops_what_has_not_gone_out() -> None:
    state = schedule_campaigns(person("ana", "UTC"), SCHEDULED_AT, live(campaign()), RULES)
    _, steps = run_until(state, datetime(2026, 12, 25, tzinfo=UTC), live(campaign(), cancelled=True))
    assert not [t for step in steps for t in step.triggers]
    assert [s.reason for step in steps for s in step.suppressed] == [SuppressionReason.CANCELLED]


def test_a_recurrence_sends_once_per_occurrence() -> None:
    recurrence = '{every: monday, local_time: "10:00", until: 2027-01-10}'
    weekly = campaign(XMAS.replace('{day: 2026-12-24, local_time: "10:00"}', recurrence))
    campaigns = live(weekly)
    state = schedule_campaigns(person("ana", "Asia/Tokyo"), SCHEDULED_AT, campaigns, RULES)
    _, steps = run_until(state, datetime(2027, 1, 20, tzinfo=UTC), campaigns)
    sent = [t for step in steps for t in step.triggers]
    local = [t.due_at.astimezone(ZoneInfo("Asia/Tokyo")) for t in sent]
    assert [moment.date() for moment in local] == [date(2026, 12, 21), date(2026, 12, 28), date(2027, 1, 4)]
    assert all(moment.time() == time(10, 0) for moment in local)
    assert len({t.trigger_id for t in sent}) == 3


def test_the_throttle_gives_each_due_recipient_its_own_slot() -> None:
    campaigns = live(campaign())
    interval = {"campaign:xmas": timedelta(seconds=2)}
    moment = datetime(2026, 12, 24, 10, 0, tzinfo=UTC)
    free: dict[str, datetime] = {}
    holds = []
    for name in ("a", "b", "c"):
        state = schedule_campaigns(person(name, "UTC"), SCHEDULED_AT, campaigns, RULES)
        holds.append(throttle_holds(state, moment, campaigns.plans, interval, free))
    slots = [moment + timedelta(seconds=2), moment + timedelta(seconds=4)]
    assert holds == [{}, {"campaign:xmas": slots[0]}, {"campaign:xmas": slots[1]}]
    # The one held waits until its slot, then goes out without taking another.
    state = schedule_campaigns(person("b", "UTC"), SCHEDULED_AT, campaigns, RULES)
    held = tick(state, moment, Campaigns(campaigns.plans, holds[1]))
    assert not held.triggers
    later = moment + timedelta(seconds=2)
    assert throttle_holds(held.state, later, campaigns.plans, interval, free) == {}
    assert len(tick(held.state, later, campaigns).triggers) == 1


@given(
    st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)),  # noqa: DTZ001
    st.sampled_from(["Pacific/Kiritimati", "Pacific/Pago_Pago", "Europe/London", "America/Sao_Paulo"]),
)
def test_a_weekly_occurrence_is_the_first_on_that_weekday_at_that_local_hour(now: datetime, zone: str) -> None:
    weekly = campaign(XMAS.replace('{day: 2026-12-24, local_time: "10:00"}', '{every: friday, local_time: "10:00"}'))
    found = occurrence_from(weekly.when, ZoneInfo(zone), now)
    assert found is not None and found.due_at >= now and found.due_at - now <= timedelta(days=7, hours=1)
    local = found.due_at.astimezone(ZoneInfo(zone))
    assert local.weekday() == 4 and local.time() == time(10, 0)
    again = next_occurrence(weekly, ZoneInfo(zone), now + weekly.expires_after, lambda label: label == found.label)
    assert again is None or again.due_at > found.due_at


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("when: {day: 2026-12-24}", "when: Value error, `day` and `every` need `local_time`"),
        ("when: {at: 2026-12-24T10:00:00Z, day: 2026-12-24}", "exactly one of"),
        ("throttle_per_minute: 0", "throttle_per_minute: Input should be greater than or equal to 1"),
        ("expires_after: 30d", "expires_after"),
        ("channel: fax", "channel"),
        ("id: Not An Id", "id: String should match pattern"),
    ],
)
def test_a_bad_campaign_file_is_refused_with_the_line_and_reason(change: str, reason: str) -> None:
    key = change.split(":", 1)[0]
    lines = [line for line in XMAS.strip().splitlines() if not line.startswith(f"{key}:")]
    with pytest.raises(InvalidCampaign) as refused:
        parse_campaign("\n".join([*lines, change]), "bad.yaml", RULES)
    assert "bad.yaml:" in str(refused.value) and reason.removeprefix("when: Value error, ") in str(refused.value)


def test_a_campaign_naming_unknown_segments_is_refused() -> None:
    with pytest.raises(InvalidCampaign, match="unknown segments: nobody"):
        parse_campaign(XMAS.replace("exclude: [buyers]", "exclude: [nobody]"), "x.yaml", RULES)


@pytest.mark.parametrize(
    ("raw", "key", "reason"),
    [
        (b"", b"x", "empty message"),
        (b"{", b"x", "not JSON"),
        (b'{"op": "schedule", "campaignId": "x", "at": "2026-12-01T00:00:00Z"}', b"x", "carries its campaign"),
        (b'{"op": "cancel", "campaignId": "x", "at": "2026-12-01T00:00:00Z"}', b"y", "not by its campaign id"),
        (b'{"op": "drop", "campaignId": "x", "at": "2026-12-01T00:00:00Z"}', b"x", "op"),
        (b'{"op": "cancel", "campaignId": "x", "pad": "' + b"a" * 70_000 + b'"}', b"x", "over a limit"),
    ],
)
def test_a_bad_control_message_is_refused_with_the_reason(raw: bytes, key: bytes, reason: str) -> None:
    with pytest.raises(InvalidCampaign, match=reason):
        parse_control(raw, key)


BEST_TIME = """
id: digest
audience: {segments: [subscribers]}
when: {at: 2026-12-24T06:00:00Z}
channel: email
template_id: digest
send_time: best
send_window: 24h
expires_after: 1d
"""


def afternoon_reader(name: str) -> PersonState:
    """Someone in UTC who opened three emails between 15:00 and 16:00 in November."""
    state = person(name, "UTC")
    for day in range(3):
        opened = track("Email Opened", (day + 1) * 24 * 60 + 5 * 60 + 10, name, message_id=f"{name}-open-{day}")
        state = apply_event(state, opened, SourcePosition(topic="events", partition=0, offset=day + 1), RULES).state
    return state


@pytest.mark.parametrize(
    ("text", "hour"), [(BEST_TIME, 15), (BEST_TIME.replace("send_time: best\nsend_window: 24h\n", ""), 6)]
)
def test_a_best_time_campaign_reaches_each_person_at_their_usual_hour_within_its_window(text: str, hour: int) -> None:
    campaigns = live(campaign(text))
    state = schedule_campaigns(afternoon_reader("ana"), SCHEDULED_AT, campaigns, RULES)
    sent_at = []
    now = SCHEDULED_AT
    while now <= datetime(2026, 12, 26, tzinfo=UTC):
        step = tick(state, now, campaigns)
        state = step.state
        sent_at.extend(now for _ in step.triggers)
        now += timedelta(minutes=30)
    assert sent_at == [datetime(2026, 12, 24, hour, tzinfo=UTC)]


def test_a_best_time_campaign_needs_a_window_and_no_local_hour() -> None:
    with pytest.raises(InvalidCampaign, match="send_window"):
        parse_campaign(BEST_TIME.replace("send_window: 24h\n", ""), "bad.yaml", RULES)
    local = BEST_TIME.replace("when: {at: 2026-12-24T06:00:00Z}", 'when: {day: 2026-12-24, local_time: "10:00"}')
    with pytest.raises(InvalidCampaign, match="both choose the hour"):
        parse_campaign(local, "bad.yaml", RULES)
