"""Crediting orders to the nudges that came before them: last-touch and linear multi-touch.

ClickHouse finds the candidate (order, nudge) pairs — same person, nudge fired within the window before
the order; the arithmetic of who gets how much credit is here, pure, so it is tested on its own.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class Model(StrEnum):
    """How an order's credit is shared among the nudges before it: all to the last one, or evenly."""

    LAST_TOUCH = "last_touch"
    LINEAR = "linear"


@dataclass(frozen=True)
class Touch:
    """One nudge that preceded one order inside the attribution window."""

    order_id: str
    revenue: float
    trigger_id: str
    rule: str
    variant: str
    fired_at: datetime


@dataclass(frozen=True)
class Credit:
    """The orders and revenue credited to one arm of one rule."""

    rule: str
    variant: str
    orders: float  # fractional under linear attribution
    revenue: float


def attribute(touches: list[Touch], model: Model) -> list[Credit]:
    """Credit per (rule, variant). Each order is credited once in total, whatever the number of nudges:
    under last-touch to the latest one (ties broken by trigger_id, so the result is deterministic),
    under linear equally to every one."""
    by_order: dict[str, list[Touch]] = defaultdict(list)
    for touch in touches:
        by_order[touch.order_id].append(touch)
    orders: dict[tuple[str, str], float] = defaultdict(float)
    revenue: dict[tuple[str, str], float] = defaultdict(float)
    for order_touches in by_order.values():
        # The same nudge can reach an order twice only through duplicated input; count it once.
        distinct = list({touch.trigger_id: touch for touch in order_touches}.values())
        if model is Model.LAST_TOUCH:
            credited = [max(distinct, key=lambda touch: (touch.fired_at, touch.trigger_id))]
        else:
            credited = distinct
        share = 1.0 / len(credited)
        for touch in credited:
            orders[(touch.rule, touch.variant)] += share
            revenue[(touch.rule, touch.variant)] += touch.revenue * share
    return [Credit(rule, variant, orders[key], revenue[key]) for key in sorted(orders) for rule, variant in [key]]


def converted_triggers(touches: list[Touch]) -> set[str]:
    """Nudges followed by at least one order inside the window."""
    return {touch.trigger_id for touch in touches}
