"""Every profile field, updated by events at their own time."""

from __future__ import annotations

from datetime import timedelta

from schemas.events import Event
from schemas.profile import Profile
from schemas.rules import FACT_NAMES, ProfileConfig
from streams.rules.facts import lifecycle_stage, profile_facts, rfm
from streams.rules.profiles import update_profile
from tests.unit.factories import added, at, days, identify, ordered, track

CONFIG = ProfileConfig()


def build(*events: Event) -> Profile:
    profile = Profile(person_id="p1")
    for event in events:
        profile = update_profile(profile, event, CONFIG)
    return profile


def test_first_and_last_seen_overall_and_per_channel_by_event_time() -> None:
    screen = Event.model_validate(
        {"type": "screen", "userId": "p1", "name": "Home", "timestamp": at(50).isoformat(), "messageId": "s"}
    )
    profile = build(track("Product Viewed", 30, product_id="a"), track("Email Opened", 40), screen, track("Page", 10))
    assert (profile.first_seen, profile.last_seen) == (at(10), at(50))
    assert profile.channels["web"].first == at(10) and profile.channels["web"].last == at(30)
    assert profile.channels["email"].first == at(40)
    assert profile.channels["app"].last == at(50)
    assert profile.event_count == 4


def test_rolling_windows_by_event_time() -> None:
    profile = build(
        track("Product Viewed", 0, product_id="a"),
        added(days(20)),
        ordered(days(25), revenue=40),
        track("Product Viewed", days(60), product_id="b"),
        ordered(days(61), revenue=60),
    )
    facts = profile_facts(profile, at(days(62)), CONFIG)
    assert (facts["views_7d"], facts["views_30d"], facts["views_90d"]) == (1, 1, 2)
    assert (facts["orders_7d"], facts["orders_30d"], facts["orders_90d"]) == (1, 1, 2)
    assert (facts["revenue_30d"], facts["revenue_90d"]) == (60, 100)
    assert facts["adds_90d"] == 1 and facts["adds_30d"] == 0


def test_day_buckets_stay_bounded_to_ninety_days() -> None:
    profile = build(*[track("Product Viewed", days(day), product_id="a", message_id=f"v{day}") for day in range(200)])
    assert len(profile.days) == 90
    assert profile_facts(profile, at(days(199)), CONFIG)["views_90d"] == 90


def test_a_late_event_lands_in_its_own_day() -> None:
    profile = build(track("Product Viewed", days(10), product_id="a"), track("Product Viewed", days(2), product_id="b"))
    assert sorted(profile.days) == ["2026-11-04", "2026-11-12"]
    assert profile.last_seen == at(days(10))


def test_a_day_s_revenue_is_kept_to_the_cent() -> None:
    profile = build(ordered(0, cart=None, revenue=0.1), ordered(1, cart=None, revenue=0.2))
    [counts] = profile.days.values()
    assert (counts.orders, counts.revenue, counts.views) == (2, 0.3, 0)
    assert profile_facts(profile, at(2), CONFIG)["revenue_7d"] == 0.3


def test_orders_revenue_and_rfm() -> None:
    profile = build(*[ordered(days(day), cart=None, revenue=150) for day in (1, 10, 20)])
    assert (profile.order_count, profile.revenue) == (3, 450)
    assert (profile.first_order_at, profile.last_order_at) == (at(days(1)), at(days(20)))
    assert rfm(profile, at(days(21))) == (5, 3, 3)
    assert rfm(profile, at(days(400))) == (1, 3, 3)
    assert rfm(Profile(person_id="x"), at(0)) == (1, 1, 1)


def test_engagement_decays_with_the_half_life() -> None:
    profile = build(ordered(0, revenue=1))
    assert profile_facts(profile, at(0), CONFIG)["engagement"] == 10
    assert profile_facts(profile, at(days(14)), CONFIG)["engagement"] == 5
    late = update_profile(profile, track("Email Opened", -days(14)), CONFIG)  # an open from two weeks before
    assert profile_facts(late, at(0), CONFIG)["engagement"] == 11


def test_consecutive_unopened_emails_and_last_open_and_click() -> None:
    profile = build(*[track("Email Delivered", minute) for minute in (1, 2, 3)])
    assert profile.unopened_emails == 3
    profile = update_profile(profile, track("Email Clicked", 4), CONFIG)
    assert profile.unopened_emails == 0
    assert profile.last_email_click_at == at(4) and profile.last_email_open_at == at(4)


def test_lifecycle_stages() -> None:
    profile = build(track("Logged In", 0))
    assert lifecycle_stage(profile, at(days(1)), CONFIG) == "new"
    profile = update_profile(profile, track("Logged In", days(10)), CONFIG)
    assert lifecycle_stage(profile, at(days(11)), CONFIG) == "active"
    assert lifecycle_stage(profile, at(days(41)), CONFIG) == "at_risk"
    assert lifecycle_stage(profile, at(days(101)), CONFIG) == "churned"
    assert profile.last_login_at == at(days(10))


def test_traits_from_identify_and_context() -> None:
    profile = build(
        identify(0, email="a@example.com", phone="+8613800000000", name="An", birthday="1990-02-03", plan="pro"),
        Event.model_validate(
            {"type": "track", "event": "Page", "userId": "p1", "timestamp": at(1).isoformat(),
             "context": {"timezone": "Asia/Shanghai", "locale": "zh-CN"}}
        ),
    )  # fmt: skip
    assert (profile.email, profile.phone, profile.name, profile.birthday) == (
        "a@example.com", "+8613800000000", "An", "1990-02-03",
    )  # fmt: skip
    assert (profile.timezone, profile.locale) == ("Asia/Shanghai", "zh-CN")
    assert profile.traits["plan"] == "pro"
    assert profile.identified


def test_consent_per_channel() -> None:
    profile = build(identify(0, email_consent="opted_in"), track("SMS Replied", 1, body="stop"))
    assert profile.consent == {"email": "opted_in", "sms": "opted_out"}
    profile = update_profile(profile, track("Email Unsubscribed", 2), CONFIG)
    assert profile.consent["email"] == "opted_out"


def test_recently_viewed_products_most_recent_first_and_bounded() -> None:
    views = [track("Product Viewed", minute, product_id=f"sku-{minute % 12}") for minute in range(30)]
    profile = build(*views)
    assert profile.recently_viewed[:3] == ["sku-5", "sku-4", "sku-3"]
    assert len(profile.recently_viewed) == CONFIG.recently_viewed


def test_days_since_facts() -> None:
    profile = build(track("Logged In", 0), ordered(days(1)))
    facts = profile_facts(profile, at(days(8)), CONFIG)
    assert facts["days_since_last_login"] == 8
    assert facts["days_since_last_order"] == 7
    assert facts["days_since_last_email_open"] is None
    assert timedelta(days=1) == at(days(1)) - at(0)


def test_every_fact_a_segment_may_name_is_worked_out() -> None:
    # Conditions are validated against FACT_NAMES; reading a fact the core does not know would give None.
    assert set(profile_facts(Profile(person_id="p1"), at(0), CONFIG)) == FACT_NAMES
