from datetime import timedelta

from schemas.rules import CartAbandonmentRule, RulesConfig, TimerPolicy
from streams.rules.engine import Step, advance_time, apply_event, next_deadline
from streams.rules.state import PersonState, SourcePosition
from tests.unit.factories import added, at, ordered, track

RULES = RulesConfig(
    cart_abandonment=CartAbandonmentRule(delay=timedelta(minutes=30)), timers=TimerPolicy(grace=timedelta(0))
)


class Feed:
    """Applies events and clock ticks in order, as the worker does, collecting what fires."""

    def __init__(self, rules: RulesConfig = RULES) -> None:
        self.rules = rules
        self.state = PersonState.new("p1")
        self.offset = 0
        self.fired: list = []

    def _position(self) -> SourcePosition:
        self.offset += 1
        return SourcePosition(topic="events", partition=0, offset=self.offset)

    def event(self, event) -> Step:  # type: ignore[no-untyped-def]
        step = apply_event(self.state, event, self._position(), self.rules)
        self.state = step.state
        self.fired += step.triggers
        return step

    def tick(self, minutes: float) -> Step:
        step = advance_time(self.state, at(minutes), self._position(), self.rules)
        self.state = step.state
        self.fired += step.triggers
        return step


def test_abandoned_cart_fires_once_after_the_delay_with_the_cart_items():
    feed = Feed()
    feed.event(added(0, "sku-1", price=12.5))
    feed.event(added(1, "sku-2", price=7.5))
    assert feed.tick(30.5).triggers == []  # the delay counts from the last cart activity
    [trigger] = feed.tick(31).triggers
    assert trigger.rule == "cart_abandonment"
    assert trigger.person_id == "p1"
    assert trigger.due_at == at(31)
    assert [item["product_id"] for item in trigger.context["items"]] == ["sku-1", "sku-2"]
    assert trigger.context["value"] == 20.0
    assert feed.tick(120).triggers == []
    assert next_deadline(feed.state, RULES) is None


def test_order_inside_the_window_cancels_the_reminder():
    feed = Feed()
    feed.event(added(0))
    feed.event(ordered(10))
    feed.tick(60)
    assert feed.fired == []


def test_late_order_with_an_earlier_timestamp_still_cancels():
    feed = Feed(RULES.model_copy(update={"timers": TimerPolicy(grace=timedelta(minutes=2))}))
    feed.event(added(0))
    feed.event(track("Product Viewed", 31, product_id="sku-9"))  # time passes the deadline but not the grace
    feed.event(ordered(29))  # arrives after, happened before the deadline
    feed.tick(90)
    assert feed.fired == []


def test_order_for_another_cart_does_not_cancel():
    feed = Feed()
    feed.event(added(0, cart="c1"))
    feed.event(ordered(5, cart="c2"))
    feed.tick(31)
    assert [trigger.context["cart_id"] for trigger in feed.fired] == ["c1"]


def test_order_without_cart_id_cancels_every_cart_started_before_it():
    feed = Feed()
    feed.event(added(0, cart="c1"))
    feed.event(added(1, cart="c2"))
    feed.event(ordered(5, cart=None))
    feed.event(added(6, cart="c3"))  # a new cart after the order
    feed.tick(40)
    assert [trigger.context["cart_id"] for trigger in feed.fired] == ["c3"]


def test_removing_the_last_item_empties_the_cart_and_nothing_fires():
    feed = Feed()
    feed.event(added(0, "sku-1"))
    feed.event(track("Product Removed", 2, product_id="sku-1", cart_id="c1"))
    feed.tick(60)
    assert feed.fired == []


def test_a_person_s_own_later_event_fires_an_overdue_reminder_before_it_is_applied():
    feed = Feed()
    feed.event(added(0))
    step = feed.event(added(45, "sku-2"))  # 45 > 30: the first cart was abandoned at minute 30
    [trigger] = step.triggers
    assert trigger.due_at == at(30)
    assert [item["product_id"] for item in trigger.context["items"]] == ["sku-1"]
    # the add at 45 starts a new occurrence with its own id
    [second] = feed.tick(80).triggers
    assert second.trigger_id != trigger.trigger_id


def test_refilled_cart_after_a_purchase_is_a_new_occurrence_with_a_new_id():
    first, second = Feed(), Feed()
    first.event(added(0))
    first.tick(31)
    second.event(added(0))
    second.event(ordered(5))
    second.event(added(10))
    second.tick(41)
    assert first.fired[0].trigger_id != second.fired[0].trigger_id


def test_redelivered_message_changes_nothing():
    feed = Feed()
    event = added(0)
    position = SourcePosition(topic="events", partition=3, offset=7)
    once = apply_event(feed.state, event, position, RULES)
    again = apply_event(once.state, event, position, RULES)
    assert again.applied is False
    assert again.state == once.state
    assert once.state.profile.event_count == 1


def test_disabled_rule_keeps_no_carts():
    rules = RULES.model_copy(update={"cart_abandonment": CartAbandonmentRule(enabled=False)})
    feed = Feed(rules)
    feed.event(added(0))
    feed.tick(100)
    assert feed.fired == []
    assert feed.state.carts == {}
