"""Each shipped trigger rule: it fires, it is cancelled, re-entry, and what it carries."""

from __future__ import annotations

import pytest

from schemas.rules import PolicyConfig, RulesConfig
from tests.unit.factories import Feed, added, at, days, identify, ordered, scores, shipped_rules, track


def open_rules(holdout: bool = False) -> RulesConfig:
    """The shipped rules with no caps, quiet hours or holdout, so each test sees one rule at work."""
    rules = shipped_rules()
    triggers = [t if holdout else t.model_copy(update={"holdout_percent": 0.0}) for t in rules.triggers]
    policy = PolicyConfig(caps={}, quiet_hours={}, email_paused_in_segments=["cooling"])
    return rules.model_copy(update={"policy": policy, "triggers": triggers})


def known_person(rules: RulesConfig | None = None, person: str = "p1") -> Feed:
    feed = Feed(rules or open_rules(), person)
    feed.event(identify(0, person, email=f"{person}@example.com", phone="+15551230000"))
    return feed


class TestCartAbandonment:
    def test_fires_after_thirty_minutes_with_the_cart(self) -> None:
        feed = known_person()
        feed.event(added(1, "sku-1", price=12.5))
        feed.event(added(2, "sku-2", price=7.5))
        feed.tick(32)  # 30 minutes after the last add, but not yet past the 5s grace
        assert feed.fired("cart_abandonment") == []
        feed.tick(32.1)
        [trigger] = feed.fired("cart_abandonment")
        assert trigger.due_at == at(32)
        assert trigger.address == "p1@example.com"
        assert trigger.context["cart_id"] == "c1"
        assert [item["product_id"] for item in trigger.context["items"]] == ["sku-1", "sku-2"]
        assert trigger.context["value"] == 20.0
        assert trigger.variant in {"reminder", "discount"}
        assert trigger.template_id == f"cart_abandonment_{trigger.variant}"
        assert trigger.expires_at == at(32 + 24 * 60)

    def test_a_late_add_does_not_bring_the_reminder_forward(self) -> None:
        feed = known_person()
        feed.event(added(10, "sku-1"))
        feed.event(added(1, "sku-2"))  # arrives after the first, stamped before it
        feed.tick(40.05)  # 30 minutes after the later add, within the 5s grace
        assert feed.fired("cart_abandonment") == []
        feed.tick(40.1)
        [trigger] = feed.fired("cart_abandonment")
        assert trigger.due_at == at(40)

    def test_an_order_for_the_cart_cancels_it(self) -> None:
        feed = known_person()
        feed.event(added(1))
        feed.event(ordered(10))
        feed.tick(120)
        assert feed.fired("cart_abandonment") == []

    def test_a_late_order_with_an_earlier_timestamp_cancels_it(self) -> None:
        feed = known_person()
        feed.event(added(1))
        feed.event(track("Page Viewed", 31.05))  # time passes the deadline, not the grace
        feed.event(ordered(30))
        feed.tick(120)
        assert feed.fired("cart_abandonment") == []

    def test_an_order_for_another_cart_does_not(self) -> None:
        feed = known_person()
        feed.event(added(1, cart="c1"))
        feed.event(ordered(5, cart="c2"))
        feed.tick(40)
        assert [t.context["cart_id"] for t in feed.fired("cart_abandonment")] == ["c1"]

    def test_emptied_cart_sends_nothing(self) -> None:
        feed = known_person()
        feed.event(added(1, "sku-1"))
        feed.event(track("Product Removed", 2, product_id="sku-1", cart_id="c1"))
        feed.tick(60)
        assert feed.fired("cart_abandonment") == []

    def test_once_per_cart(self) -> None:
        feed = known_person()
        feed.event(added(1, cart="c1"))
        feed.tick(40)
        feed.event(added(50, "sku-2", cart="c1"))  # the same cart again: no second reminder
        feed.event(added(51, "sku-3", cart="c2"))  # a new cart: its own reminder
        feed.tick(100)
        assert [t.context["cart_id"] for t in feed.fired("cart_abandonment")] == ["c1", "c2"]

    def test_expires_when_it_cannot_go_out_in_time(self) -> None:
        feed = known_person()
        feed.event(added(1))
        feed.tick(days(2))  # the worker was away for two days
        assert feed.fired("cart_abandonment") == []
        assert feed.reasons("cart_abandonment") == ["expired"]

    def test_holdout_is_recorded_not_sent(self) -> None:
        held_out = sent = 0
        for number in range(200):
            person = f"shopper-{number}"
            feed = known_person(open_rules(holdout=True), person)
            feed.event(added(1, person=person))
            feed.tick(40)
            held_out += feed.reasons("cart_abandonment") == ["holdout"]
            sent += len(feed.fired("cart_abandonment"))
        assert held_out + sent == 200
        assert 5 <= held_out <= 40  # 10% of 200, give or take chance


class TestBrowseAbandonment:
    def test_viewed_and_not_added_sends_an_sms_about_the_product(self) -> None:
        feed = known_person()
        feed.event(track("Product Viewed", 1, product_id="sku-7", name="Headlamp", price=44.0))
        feed.tick(32)
        [trigger] = feed.fired("browse_abandonment")
        assert trigger.channel.value == "sms"
        assert trigger.address == "+15551230000"
        assert trigger.template_id == "browse_on_sale_this_week"
        assert trigger.context["product"]["name"] == "Headlamp"

    def test_adding_the_product_cancels_it(self) -> None:
        feed = known_person()
        feed.event(track("Product Viewed", 1, product_id="sku-7"))
        feed.event(added(5, "sku-7"))
        feed.tick(40)
        assert feed.fired("browse_abandonment") == []

    def test_adding_another_product_does_not(self) -> None:
        feed = known_person()
        feed.event(track("Product Viewed", 1, product_id="sku-7"))
        feed.event(added(5, "sku-8"))
        feed.tick(40)
        assert [t.context["key"] for t in feed.fired("browse_abandonment")] == ["sku-7"]

    def test_at_most_once_a_week(self) -> None:
        feed = known_person()
        feed.event(track("Product Viewed", 1, product_id="sku-7"))
        feed.tick(40)
        feed.event(track("Product Viewed", days(2), product_id="sku-9"))
        feed.tick(days(3))
        feed.event(track("Product Viewed", days(8), product_id="sku-9"))
        feed.tick(days(8) + 40)
        assert [t.context["key"] for t in feed.fired("browse_abandonment")] == ["sku-7", "sku-9"]


class TestCheckoutAbandonment:
    def test_fires_after_fifteen_minutes_unless_the_order_completes(self) -> None:
        abandoned, completed = known_person(), known_person()
        for feed in (abandoned, completed):
            feed.event(added(1))
            feed.event(track("Checkout Started", 2, cart_id="c1", value=10.0))
        completed.event(ordered(10))
        for feed in (abandoned, completed):
            feed.tick(18)
        assert [t.due_at for t in abandoned.fired("checkout_abandonment")] == [at(17)]
        assert completed.fired() == []


class TestWelcomeSeries:
    def test_three_emails_now_after_a_day_and_after_three_days(self) -> None:
        feed = known_person()
        feed.event(track("Signed Up", 1))
        feed.tick(days(4))
        welcome = feed.fired("welcome_series")
        assert [t.template_id for t in welcome] == ["welcome_1", "welcome_2", "welcome_3"]
        assert [t.due_at for t in welcome] == [at(1), at(1 + days(1)), at(1 + days(3))]
        assert len({t.trigger_id for t in welcome}) == 3

    def test_stops_on_unsubscribe(self) -> None:
        feed = known_person()
        feed.event(track("Signed Up", 1))
        feed.event(track("Email Unsubscribed", 60))
        feed.tick(days(4))
        assert [t.template_id for t in feed.fired("welcome_series")] == ["welcome_1"]

    def test_signing_up_twice_does_not_restart_it(self) -> None:
        feed = known_person()
        feed.event(track("Signed Up", 1))
        feed.event(track("Signed Up", days(5)))
        feed.tick(days(10))
        assert len(feed.fired("welcome_series")) == 3


class TestWinBack:
    def test_an_sms_after_seven_days_without_a_visit(self) -> None:
        feed = known_person()
        feed.event(track("Logged In", 10))
        feed.tick(days(7))
        assert feed.fired("win_back") == []
        feed.tick(10 + days(7) + 1)
        [trigger] = feed.fired("win_back")
        assert trigger.channel.value == "sms"
        assert trigger.due_at.replace(microsecond=0) == at(10 + days(7))

    def test_a_visit_in_time_prevents_it(self) -> None:
        feed = known_person()
        feed.event(track("Logged In", 10))
        feed.event(track("Page Viewed", days(6)))
        feed.tick(days(8))
        assert feed.fired("win_back") == []


class TestBirthday:
    def test_nine_in_the_morning_in_the_person_s_timezone(self) -> None:
        feed = Feed(open_rules())
        feed.event(identify(0, email="p1@example.com", birthday="1990-11-05", timezone="Asia/Shanghai"))
        feed.tick(days(4))
        [trigger] = feed.fired("birthday")
        assert trigger.due_at == at(days(3) - 60 * 10 + 60)  # 2026-11-05 09:00 +08:00 = 01:00 UTC
        assert trigger.due_at.hour == 1

    def test_once_a_year(self) -> None:
        feed = Feed(open_rules())
        feed.event(identify(0, email="p1@example.com", birthday="--11-05"))
        feed.tick(days(10))
        feed.event(identify(days(11), email="p1@example.com", name="P One"))
        feed.tick(days(380))
        assert [t.due_at.year for t in feed.fired("birthday")] == [2026, 2027]


class TestCooling:
    def test_three_unopened_emails_pause_email_and_send_one_sms(self) -> None:
        feed = known_person()
        for minute in (1, 2, 3):
            feed.event(track("Email Delivered", minute))
        [sms] = feed.fired("cooling_sms")
        assert sms.channel.value == "sms"
        feed.event(added(10))
        feed.tick(60)
        assert feed.fired("cart_abandonment") == []
        assert feed.reasons("cart_abandonment") == ["paused"]

    def test_an_open_ends_the_pause(self) -> None:
        feed = known_person()
        for minute in (1, 2, 3):
            feed.event(track("Email Delivered", minute))
        feed.event(track("Email Opened", 4))
        feed.event(added(10))
        feed.tick(60)
        assert len(feed.fired("cart_abandonment")) == 1


class TestPostPurchase:
    def test_thanks_a_day_later_with_cross_sell_from_what_was_viewed(self) -> None:
        feed = known_person()
        for minute, product in ((1, "sku-1"), (2, "sku-2"), (3, "sku-3")):
            feed.event(track("Product Viewed", minute, product_id=product))
        feed.event(track("Order Completed", 5, order_id="o-9", revenue=30, products=[{"product_id": "sku-3"}]))
        feed.tick(5 + days(1) + 1)
        [thanks] = feed.fired("post_purchase")
        assert thanks.due_at == at(5 + days(1))
        assert thanks.context["cross_sell"] == ["sku-2", "sku-1"]


class TestHighValueWinBack:
    def test_scores_of_a_valuable_customer_slipping_away_send_it_once_a_month(self) -> None:
        feed = known_person()
        feed.score(10, scores(10, clv=450, churn=0.8))
        [email] = feed.fired("high_value_win_back")
        assert (email.channel.value, email.template_id, email.due_at) == ("email", "high_value_win_back", at(10))
        feed.score(20, None)  # erased scores: out of the segment
        feed.score(30, scores(30, clv=450, churn=0.8))  # back in within 30 days
        assert len(feed.fired("high_value_win_back")) == 1

    def test_low_value_or_low_risk_or_no_scores_send_nothing(self) -> None:
        feed = known_person()
        feed.event(added(1))
        feed.score(10, scores(10, clv=50, churn=0.9))
        feed.score(20, scores(20, clv=900, churn=0.2))
        assert feed.fired("high_value_win_back") == []


class TestReorderReminder:
    def test_two_days_before_the_expected_order_without_any_event(self) -> None:
        feed = known_person()
        feed.score(10, scores(10, clv=20, churn=0.1, next_order_in_days=5))
        feed.tick(10 + days(2.9))
        assert feed.fired("reorder_reminder") == []
        feed.tick(10 + days(3.1))
        [reminder] = feed.fired("reorder_reminder")
        assert reminder.template_id == "reorder_reminder"

    def test_an_overdue_order_reminds_once_a_fortnight(self) -> None:
        feed = known_person()
        feed.score(10, scores(10, clv=20, churn=0.1, next_order_in_days=0))
        feed.score(20, scores(20, clv=20, churn=0.1, next_order_in_days=30))  # leaves the segment
        feed.score(30, scores(30, clv=20, churn=0.1, next_order_in_days=0))  # back within 14 days
        assert len(feed.fired("reorder_reminder")) == 1
        feed.score(days(15), scores(days(15), clv=20, churn=0.1, next_order_in_days=30))
        feed.score(days(16), scores(days(16), clv=20, churn=0.1, next_order_in_days=0))
        assert len(feed.fired("reorder_reminder")) == 2


@pytest.mark.parametrize("rule", [rule.name for rule in shipped_rules().triggers])
def test_every_shipped_rule_is_covered_above(rule: str) -> None:
    covered = {
        "cart_abandonment", "browse_abandonment", "checkout_abandonment", "welcome_series",
        "win_back", "birthday", "cooling_sms", "post_purchase", "high_value_win_back", "reorder_reminder",
    }  # fmt: skip
    assert rule in covered


def test_state_stays_bounded_for_someone_who_abandons_cart_after_cart() -> None:
    feed = known_person()
    for number in range(40):
        feed.event(added(days(number), cart=f"c{number}"))
        feed.tick(days(number) + 40)
    assert len(feed.state.carts) <= 5
    assert len([slot for slot in feed.state.fired if slot.startswith("cart_abandonment|")]) <= 31
    assert len(feed.fired("cart_abandonment")) == 40


def test_products_viewed_together_give_one_browse_sms_a_week() -> None:
    feed = known_person()
    for minute, product in ((1, "sku-1"), (2, "sku-2"), (3, "sku-3")):
        feed.event(track("Product Viewed", minute, product_id=product))
    feed.tick(40)
    assert [t.context["key"] for t in feed.fired("browse_abandonment")] == ["sku-1"]
    assert feed.reasons("browse_abandonment") == ["reentry", "reentry"]
