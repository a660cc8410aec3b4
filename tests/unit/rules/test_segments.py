"""Segment conditions, membership changes, and leaving a segment as time passes."""

from __future__ import annotations

from schemas.rules import Condition, Operator
from streams.rules.segments import condition_holds
from tests.unit.factories import Feed, at, days, ordered, rules_from, shipped_rules, track


def test_operators() -> None:
    facts = {"views_30d": 3, "lifecycle_stage": "active", "engagement": None}
    assert condition_holds(Condition(fact="views_30d", op=Operator.GE, value=3), facts)
    assert not condition_holds(Condition(fact="views_30d", op=Operator.GT, value=3), facts)
    assert condition_holds(Condition(fact="lifecycle_stage", op=Operator.IN, value=["active", "new"]), facts)
    assert condition_holds(Condition(fact="lifecycle_stage", op=Operator.NE, value="churned"), facts)
    assert not condition_holds(Condition(fact="engagement", op=Operator.LT, value=1), facts)  # unknown is not low


def entered(feed: Feed) -> list[tuple[str, str]]:
    return [(change.segment, change.change) for change in feed.segment_changes]


def test_priority_list_viewed_and_not_bought_in_thirty_days() -> None:
    feed = Feed(shipped_rules())
    feed.event(track("Product Viewed", 0, product_id="a"))
    assert ("priority", "enter") in entered(feed)
    feed.event(ordered(10, cart=None))
    assert ("priority", "exit") in entered(feed)
    assert "priority" not in feed.state.segments


def test_leaving_active_thirty_days_when_thirty_days_pass_without_an_event() -> None:
    feed = Feed(shipped_rules())
    feed.event(track("Product Viewed", 0, product_id="a"))
    assert "active_30d" in feed.state.segments
    feed.tick(days(29))
    assert "active_30d" in feed.state.segments
    feed.tick(days(30) + 1)
    assert "active_30d" not in feed.state.segments
    [exit_change] = [c for c in feed.segment_changes if c.segment == "active_30d" and c.change == "exit"]
    assert exit_change.at <= at(days(30) + 1)


def test_loyal_and_cooling() -> None:
    feed = Feed(shipped_rules())
    feed.event(ordered(0, cart=None, revenue=600))
    for minute in (1, 2, 3):
        feed.event(track("Email Delivered", minute))
    assert {"loyal", "cooling"} <= set(feed.state.segments)
    feed.event(track("Email Opened", 4))
    assert "cooling" not in feed.state.segments


def test_segment_checks_stop_when_nothing_can_change() -> None:
    rules = rules_from("segments:\n  - name: recent\n    all: [{fact: views_7d, op: '>=', value: 1}]\n")
    feed = Feed(rules)
    feed.event(track("Product Viewed", 0, product_id="a"))
    feed.tick(days(200))
    assert feed.state.segments == {}
    assert feed.state.segment_check_at is None
