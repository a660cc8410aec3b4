"""The policy gate: consent, caps, quiet hours, dedupe, each refusal with its reason."""

from __future__ import annotations

from datetime import time, timedelta

from schemas.rules import Cap, PolicyConfig, QuietHours, QuietHoursAction, RulesConfig
from schemas.triggers import Channel
from streams.rules.policy import quiet_until
from tests.unit.factories import Feed, at, days, identify, track
from tests.unit.rules.test_triggers import known_person, open_rules

BROWSE = "browse_abandonment"  # an SMS rule, 30 minutes after a product view


def with_policy(**changes: object) -> RulesConfig:
    rules = open_rules()
    return rules.model_copy(update={"policy": rules.policy.model_copy(update=changes)})


def viewed(feed: Feed, minute: float, product: str = "sku-7") -> None:
    feed.event(track("Product Viewed", minute, product_id=product))


def test_anonymous_visitors_get_nothing() -> None:
    feed = Feed(open_rules(), "anon-1")
    feed.event(
        track("Product Viewed", 1, "anon-1", product_id="sku-1").model_copy(
            update={"user_id": None, "anonymous_id": "anon-1"}
        )
    )
    feed.tick(40)
    assert feed.fired() == []
    assert feed.reasons(BROWSE) == ["unknown_person"]


def test_no_phone_no_sms() -> None:
    feed = Feed(open_rules())
    feed.event(identify(0, email="p1@example.com"))
    viewed(feed, 1)
    feed.tick(40)
    assert feed.reasons(BROWSE) == ["no_address"]


def test_sms_stop_reply_opts_out() -> None:
    feed = known_person()
    feed.event(track("SMS Replied", 0.5, body=" STOP "))
    viewed(feed, 1)
    feed.tick(40)
    assert feed.fired(BROWSE) == []
    assert feed.reasons(BROWSE) == ["opted_out"]
    assert feed.state.profile.consent["sms"] == "opted_out"


def test_chinese_unsubscribe_reply_opts_out_and_start_opts_back_in() -> None:
    feed = known_person()
    feed.event(track("SMS Replied", 0.5, body="退订"))
    assert feed.state.profile.consent["sms"] == "opted_out"
    feed.event(track("SMS Replied", 0.7, body="START"))
    viewed(feed, 1)
    feed.tick(40)
    assert len(feed.fired(BROWSE)) == 1


def test_consent_trait_from_identify() -> None:
    feed = known_person()
    feed.event(identify(0.5, sms_consent="opted_out"))
    viewed(feed, 1)
    feed.tick(40)
    assert feed.reasons(BROWSE) == ["opted_out"]


def test_rule_that_needs_opt_in() -> None:
    rules = open_rules()
    strict = [r.model_copy(update={"requires_opt_in": True}) if r.name == BROWSE else r for r in rules.triggers]
    feed = known_person(rules.model_copy(update={"triggers": strict}))
    viewed(feed, 1)
    feed.tick(40)
    assert feed.reasons(BROWSE) == ["no_opt_in"]
    feed.event(identify(days(8), sms_consent="opted_in"))
    viewed(feed, days(8) + 1, "sku-8")
    feed.tick(days(8) + 40)
    assert len(feed.fired(BROWSE)) == 1


def test_frequency_cap_across_rules() -> None:
    feed = known_person(with_policy(caps={Channel.SMS: [Cap(count=1, per=timedelta(days=1))]}))
    viewed(feed, 1, "sku-1")
    feed.tick(40)
    for minute in (1, 2, 3):
        feed.event(track("Email Delivered", 40 + minute))  # cooling: its SMS is the second of the day
    assert [t.rule for t in feed.fired()] == [BROWSE]
    assert feed.reasons() == ["frequency_cap"]
    assert feed.suppressed[0].detail == "at most 1 sms per 1d"


def test_quiet_hours_defer_to_the_morning_in_the_person_s_timezone() -> None:
    feed = known_person(with_policy(quiet_hours={Channel.SMS: QuietHours(start=time(21), end=time(8))}))
    feed.event(identify(0, timezone="America/New_York"))  # 10:00 UTC is 05:00 in New York
    viewed(feed, 1)
    feed.tick(60)
    assert feed.fired() == []
    assert [p.deferred for p in feed.state.pending.values() if p.rule == BROWSE] == [True]
    feed.tick(3 * 60 + 1)  # 13:01 UTC = 08:01 New York
    [trigger] = feed.fired(BROWSE)
    assert trigger.due_at == at(31)  # it is the same nudge, sent when allowed


def test_quiet_hours_can_drop_instead() -> None:
    rules = with_policy(quiet_hours={Channel.SMS: QuietHours(start=time(9), end=time(12))})
    dropping = [
        r.model_copy(update={"quiet_hours": QuietHoursAction.DROP}) if r.name == BROWSE else r for r in rules.triggers
    ]
    feed = known_person(rules.model_copy(update={"triggers": dropping}))
    viewed(feed, 1)
    feed.tick(60)
    assert feed.reasons(BROWSE) == ["quiet_hours"]


def test_deferral_past_the_expiry_drops_it() -> None:
    # Browse reminders expire after 12 hours; a quiet window of 20 hours is too long to wait.
    feed = known_person(with_policy(quiet_hours={Channel.SMS: QuietHours(start=time(10), end=time(6))}))
    viewed(feed, 1)
    feed.tick(60)
    assert feed.reasons(BROWSE) == ["expired"]


def test_quiet_window_arithmetic_across_midnight() -> None:
    from zoneinfo import ZoneInfo

    window = QuietHours(start=time(21), end=time(8))
    utc = ZoneInfo("UTC")
    assert quiet_until(at(0), window, utc) is None  # 10:00
    assert quiet_until(at(12 * 60), window, utc) == at(22 * 60)  # 22:00 -> 08:00 next day
    assert quiet_until(at(16 * 60), window, utc) == at(22 * 60)  # 02:00 -> 08:00 the same day


def test_default_policy_caps_email_at_three_a_week() -> None:
    feed = known_person(
        RulesConfig.model_validate({**open_rules().model_dump(), "policy": PolicyConfig().model_dump()})
    )
    for cart in range(5):
        feed.event(track("Product Added", 1 + cart, product_id="sku-1", cart_id=f"c{cart}"))
    feed.tick(days(1))
    assert len(feed.fired("cart_abandonment")) == 3
    assert feed.reasons("cart_abandonment") == ["frequency_cap", "frequency_cap"]
