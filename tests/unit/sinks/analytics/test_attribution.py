from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sinks.analytics.attribution import Model, Touch, attribute, converted_triggers

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def touch(order: str, revenue: float, trigger: str, rule: str, hours: int, variant: str = "") -> Touch:
    return Touch(order, revenue, trigger, rule, variant, T0 + timedelta(hours=hours))


TOUCHES = [
    touch("o1", 90.0, "t1", "cart", 0, "a"),
    touch("o1", 90.0, "t2", "browse", 5),
    touch("o1", 90.0, "t3", "winback", 2),
    touch("o2", 10.0, "t1", "cart", 0, "a"),
]


def credits(model: Model) -> dict[tuple[str, str], tuple[float, float]]:
    return {(c.rule, c.variant): (c.orders, c.revenue) for c in attribute(TOUCHES, model)}


def test_last_touch_gives_each_order_to_the_latest_nudge() -> None:
    assert credits(Model.LAST_TOUCH) == {("browse", ""): (1.0, 90.0), ("cart", "a"): (1.0, 10.0)}


def test_linear_splits_each_order_equally_and_credits_it_once_in_total() -> None:
    result = credits(Model.LINEAR)
    assert result[("browse", "")] == pytest.approx((1 / 3, 30.0))
    assert result[("winback", "")] == pytest.approx((1 / 3, 30.0))
    assert result[("cart", "a")] == pytest.approx((1 / 3 + 1, 40.0))
    assert sum(orders for orders, _ in result.values()) == pytest.approx(2.0)
    assert sum(revenue for _, revenue in result.values()) == pytest.approx(100.0)


def test_duplicated_touches_do_not_change_the_credit() -> None:
    assert attribute(TOUCHES + TOUCHES, Model.LINEAR) == attribute(TOUCHES, Model.LINEAR)
    assert converted_triggers(TOUCHES) == {"t1", "t2", "t3"}
    assert attribute([], Model.LAST_TOUCH) == []
