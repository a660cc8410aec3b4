"""`send_time: best`: the opens and clicks per local hour the state keeps, and the hour the gate defers to."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st
from msgspec.structs import replace

from schemas.profile import Profile
from schemas.rules import QuietHours, RulesConfig
from schemas.triggers import Channel, Trigger
from streams.rules.person import PersonState
from streams.rules.policy import MIN_OWN_OPENS, Defer, best_send_moment, gate, hour_scores, quiet_until
from streams.rules.profiles import OPEN_HOURS_CAP, open_hours_after
from tests.unit.factories import Feed, at, days, identify, rules_from, track

# T0 is 10:00 UTC, 18:00 in Shanghai (no daylight saving time, so the hours below stay put).
SHANGHAI = "Asia/Shanghai"
RULE = "best_browse"


def best_rules(
    window: str = "24h", expires: str | None = None, channel: str = "email", quiet: str = "{}"
) -> RulesConfig:
    expiry = f"\n    expires_after: {expires}" if expires else ""
    return rules_from(
        f"""
policy:
  caps: {{}}
  quiet_hours: {quiet}
  population_best_hour: 10
triggers:
  - name: {RULE}
    entry: {{event: Product Viewed}}
    key: product_id
    delay: 30m
    channel: {channel}
    template_id: browse
    send_time: best
    send_window: {window}{expiry}
"""
    )


def person(rules: RulesConfig, opens_at_utc_hour: list[int] = (), zone: str = SHANGHAI) -> Feed:  # type: ignore[assignment]
    """A person in `zone` who opened emails on the days before T0, one a day at each given UTC hour (and 15
    minutes past it)."""
    feed = Feed(rules)
    feed.event(identify(-days(30), email="p1@example.com", phone="+15551230000", timezone=zone))
    for number, hour in enumerate(opens_at_utc_hour, start=1):
        minutes = -days(number) + (hour - 10) * 60 + 15
        feed.event(track("Email Opened", minutes, message_id=f"open-{number}", campaign_id="newsletter"))
    return feed


def local(moment: datetime, zone: str = SHANGHAI) -> datetime:
    return moment.astimezone(ZoneInfo(zone))


# --- the histogram ---------------------------------------------------------------------------------------


def test_opens_and_clicks_count_at_the_person_s_local_hour() -> None:
    feed = person(best_rules())
    assert feed.state.open_hours is msgspec.UNSET
    feed.event(track("Product Viewed", 1, product_id="sku-1"))
    assert feed.state.open_hours is msgspec.UNSET  # only opens and clicks count
    feed.event(track("Email Opened", 135))  # 12:15 UTC, 20:15 in Shanghai
    feed.event(track("Email Clicked", 136))
    hours = feed.state.engagement_hours
    assert len(hours) == 24 and hours[20] == 2 and sum(hours) == 2


def test_a_state_without_opens_is_stored_as_before() -> None:
    feed = person(best_rules())
    feed.event(track("Product Viewed", 1, product_id="sku-1"))
    stored = feed.state.to_json()
    assert b"open_hours" not in stored
    # The same bytes a state type without the field writes.
    assert stored == replace(feed.state, open_hours=msgspec.UNSET).to_json()
    assert PersonState.from_json(stored) == feed.state


def test_the_histogram_stays_bounded_and_keeps_its_shape() -> None:
    zone = ZoneInfo("UTC")
    hours: list[int] | msgspec.UnsetType = msgspec.UNSET
    for number in range(1000):
        hour = 9 if number % 4 else 21
        event = track("Email Opened", (hour - 10) * 60, message_id=f"o{number}")
        hours = open_hours_after(hours, event, zone)
    assert isinstance(hours, list) and len(hours) == 24
    assert max(hours) <= OPEN_HOURS_CAP
    assert hours[9] > hours[21] > 0 and sum(hours) == hours[9] + hours[21]
    assert len(msgspec.json.encode(hours)) <= 24 * 4 + 2


def test_a_stored_histogram_of_the_wrong_length_starts_again() -> None:
    event = track("Email Opened", 0)  # 10:00 UTC
    assert open_hours_after([5, 5], event, ZoneInfo("UTC")) == [0] * 10 + [1] + [0] * 13


# --- the hour chosen -------------------------------------------------------------------------------------


def test_the_nudge_waits_for_the_person_s_own_hour() -> None:
    # Opens at 00:15 UTC, 08:15 in Shanghai; the view at 10:01 UTC is due at 10:31 (18:31 local).
    feed = person(best_rules(), [0, 0, 0])
    feed.event(track("Product Viewed", 1, product_id="sku-1"))
    feed.tick(32)
    feed.tick(13 * 60 + 59)  # 23:59 UTC, 07:59 local: not yet
    assert feed.fired(RULE) == [] and feed.reasons(RULE) == []
    feed.tick(14 * 60)  # 00:00 UTC, 08:00 local
    [trigger] = feed.fired(RULE)
    assert trigger.due_at == at(31)
    assert local(trigger.fired_at).hour == 8
    assert local(feed.state.sent[-1].at) == datetime(2026, 11, 3, 8, tzinfo=ZoneInfo(SHANGHAI))


def test_the_person_s_current_hour_sends_at_once() -> None:
    # Opens at 10:15 UTC, 18:15 local: the nudge due at 18:31 local is in the person's hour already.
    feed = person(best_rules(), [10, 10, 10])
    feed.event(track("Product Viewed", 1, product_id="sku-1"))
    feed.tick(32)
    [trigger] = feed.fired(RULE)
    assert trigger.fired_at == at(32)


def test_little_history_falls_back_to_the_population_s_hour() -> None:
    # Two opens at 08:15 local are fewer than MIN_OWN_OPENS: the policy's population hour, 10:00 local, wins.
    assert MIN_OWN_OPENS == 3
    feed = person(best_rules(), [0, 0])
    feed.event(track("Product Viewed", 1, product_id="sku-1"))
    feed.tick(15 * 60 + 59)  # 01:59 UTC, 09:59 local
    assert feed.fired(RULE) == []
    feed.tick(16 * 60)  # 02:00 UTC, 10:00 local
    [trigger] = feed.fired(RULE)
    assert local(trigger.fired_at).hour == 10


def test_the_population_hour_is_in_the_person_s_zone() -> None:
    feed = person(best_rules(), zone="America/Los_Angeles")  # 02:31 local when due (PST, UTC-8)
    feed.event(track("Product Viewed", 1, product_id="sku-1"))
    feed.tick(8 * 60 - 1)
    assert feed.fired(RULE) == []
    feed.tick(8 * 60)  # 18:00 UTC, 10:00 in Los Angeles
    [trigger] = feed.fired(RULE)
    assert local(trigger.fired_at, "America/Los_Angeles").hour == 10


def test_quiet_hours_win_over_the_best_hour() -> None:
    # SMS quiet 21:00-08:00. The person opens most at 22:xx local (quiet), then at 19:xx: 19:00 it is.
    quiet = "{sms: {start: '21:00', end: '08:00'}}"
    feed = person(best_rules(channel="sms", quiet=quiet), [14, 14, 14, 14, 11, 11])
    feed.event(track("Product Viewed", 1, product_id="sku-1"))
    feed.tick(59)
    assert feed.fired(RULE) == []
    feed.tick(60)  # 11:00 UTC, 19:00 local
    [trigger] = feed.fired(RULE)
    assert local(trigger.fired_at) == datetime(2026, 11, 2, 19, tzinfo=ZoneInfo(SHANGHAI))


def test_a_nudge_due_in_quiet_hours_waits_for_the_best_hour_after_them() -> None:
    # Due at 18:31 local inside quiet hours 18:00-08:00; the person's hour, 12:xx, comes after the quiet end.
    quiet = "{email: {start: '18:00', end: '08:00'}}"
    feed = person(best_rules(quiet=quiet), [4, 4, 4])
    feed.event(track("Product Viewed", 1, product_id="sku-1"))
    feed.tick(14 * 60)  # the quiet end, 08:00 local: not the best hour
    assert feed.fired(RULE) == []
    feed.tick(18 * 60)  # 04:00 UTC, 12:00 local
    [trigger] = feed.fired(RULE)
    assert local(trigger.fired_at).hour == 12


def test_the_expiry_wins_over_the_best_hour() -> None:
    # The person's hour is 14 hours away, the nudge expires 2 hours after it is due: it goes at once.
    feed = person(best_rules(expires="2h"), [0, 0, 0])
    feed.event(track("Product Viewed", 1, product_id="sku-1"))
    feed.tick(32)
    [trigger] = feed.fired(RULE)
    assert trigger.fired_at == at(32)


def test_the_window_limits_the_wait() -> None:
    # The person's hour is 14 hours away, the window 6 hours: it goes at once.
    feed = person(best_rules(window="6h"), [0, 0, 0])
    feed.event(track("Product Viewed", 1, product_id="sku-1"))
    feed.tick(32)
    assert [t.fired_at for t in feed.fired(RULE)] == [at(32)]


def test_the_same_events_decide_the_same_moment() -> None:
    def run() -> tuple[list[Trigger], bytes]:
        feed = person(best_rules(), [0, 0, 3, 0])
        feed.event(track("Product Viewed", 1, product_id="sku-1"))
        for minute in (32, 600, 14 * 60, 14 * 60 + 1):
            feed.tick(minute)
        return feed.fired(RULE), feed.state.to_json()

    first, second = run(), run()
    assert first == second and len(first[0]) == 1


# --- the property ------------------------------------------------------------------------------------------

ZONES = ("UTC", "Asia/Shanghai", "America/New_York", "Europe/Berlin", "Asia/Kolkata", "Australia/Lord_Howe")


def _trigger(due: datetime, expires: datetime | None, channel: Channel) -> Trigger:
    return Trigger(
        trigger_id="t1",
        rule=RULE,
        person_id="p1",
        channel=channel,
        template_id="browse",
        due_at=due,
        fired_at=due,
        address="p1@example.com" if channel is Channel.EMAIL else "+15551230000",
        expires_at=expires,
    )


@settings(max_examples=300, deadline=None)
@given(
    hours=st.lists(st.integers(0, OPEN_HOURS_CAP), min_size=24, max_size=24),
    zone=st.sampled_from(ZONES),
    due=st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2027, 12, 31), timezones=st.just(UTC)),  # noqa: DTZ001
    window_hours=st.integers(1, 7 * 24),
    expires_hours=st.none() | st.floats(0, 200),
    quiet=st.none() | st.tuples(st.integers(0, 23), st.integers(0, 23)).filter(lambda pair: pair[0] != pair[1]),
)
def test_the_chosen_moment_is_in_the_window_before_the_expiry_and_never_quiet(
    hours: list[int],
    zone: str,
    due: datetime,
    window_hours: int,
    expires_hours: float | None,
    quiet: tuple[int, int] | None,
) -> None:
    rules = best_rules(window=f"{window_hours}h")
    window = None if quiet is None else QuietHours(start=time(quiet[0]), end=time(quiet[1]))
    policy = rules.policy.model_copy(update={"quiet_hours": {} if window is None else {Channel.EMAIL: window}})
    [rule] = rules.triggers
    profile = Profile(person_id="p1", identified=True, email="p1@example.com", timezone=zone)
    state = PersonState(profile=profile, open_hours=hours)
    expires = None if expires_hours is None else due + timedelta(hours=expires_hours)
    trigger = _trigger(due, expires, Channel.EMAIL)
    verdict = gate(state, trigger, rule, policy, due, due)
    if not isinstance(verdict, Defer):
        return
    until, tz = verdict.until, ZoneInfo(zone)
    assert until > due
    assert window is None or quiet_until(until, window, tz) is None
    assert expires is None or until <= expires
    quiet_end = None if window is None else quiet_until(due, window, tz)
    assert until <= max(due + timedelta(hours=window_hours), quiet_end or due)
    # Decided again at that moment (deferred), it is not put off again: the same inputs, the same moment.
    again = gate(state, trigger, rule, policy, until, until)
    assert not isinstance(again, Defer)
    assert gate(state, trigger, rule, policy, due, due) == verdict


@settings(max_examples=300, deadline=None)
@given(
    hours=st.lists(st.integers(0, 5), min_size=24, max_size=24),
    zone=st.sampled_from(ZONES),
    earliest=st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2027, 12, 31), timezones=st.just(UTC)),  # noqa: DTZ001
    span=st.integers(0, 7 * 24 * 60),
)
def test_the_best_moment_is_an_hour_start_in_range_scoring_most(
    hours: list[int], zone: str, earliest: datetime, span: int
) -> None:
    tz = ZoneInfo(zone)
    latest = earliest + timedelta(minutes=span)
    scores, _ = hour_scores(hours, 10)
    best = best_send_moment(scores, tz, earliest, latest, None)
    assert earliest <= best <= latest
    if best != earliest:
        assert best.astimezone(tz).minute == 0 or zone == "Australia/Lord_Howe"
        assert scores[best.astimezone(tz).hour] > scores[earliest.astimezone(tz).hour]
    # No hour start in range scores more (every zone's offset is a whole number of quarter hours).
    moment = earliest.replace(minute=0, second=0, microsecond=0)
    moment += timedelta(minutes=15) * -(-(earliest - moment).total_seconds() // 900)
    while moment <= latest:
        if moment.astimezone(tz).minute == 0 and moment.astimezone(tz).second == 0:
            assert scores[moment.astimezone(tz).hour] <= scores[best.astimezone(tz).hour]
        moment += timedelta(minutes=15)
