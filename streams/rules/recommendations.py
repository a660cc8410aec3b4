"""Which recommended products a nudge carries: pure, from the runner's map of the recommendations topic
(product id -> recommended ids, best first), the products the nudge is about, and what to leave out.

docs/architecture.md, "Recommendations". The runner hands the map to the core's step functions
(streams/rules/engine.py), and `build_trigger` calls `recommended_for` for nudges about a cart, a product or an
order, after the trigger id is made, so the id never depends on it. What the person bought is kept in their
state by `bought_after`, within limits.bought_products.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from types import MappingProxyType

import msgspec

from schemas.events import Event, EventName, OrderProperties
from schemas.limits import Limits
from schemas.recommendations import TOP_K

Recommendations = Mapping[str, Sequence[str]]
NO_RECOMMENDATIONS: Recommendations = MappingProxyType({})


def recommended_for(
    seeds: Iterable[str], recommendations: Recommendations, excluded: Collection[str] = (), most: int = TOP_K
) -> list[str]:
    """At most `most` distinct product ids recommended for `seeds` (the cart's items, the viewed product, the
    order's products), none of them a seed or in `excluded` (what the person already bought).

    Taken in turns, each seed's best first, then each seed's second...: a cart of three products shows
    something for each of them rather than ten ids for the first. The same inputs give the same list."""
    chosen = list(dict.fromkeys(seeds))
    left_out = set(chosen) | set(excluded)
    lists = [recommendations.get(seed, ()) for seed in chosen]
    found: dict[str, None] = {}
    for rank in range(max((len(each) for each in lists), default=0)):
        for each in lists:
            if rank < len(each) and each[rank] not in left_out and each[rank] not in found:
                found[each[rank]] = None
                if len(found) >= most:
                    return list(found)
    return list(found)


def bought_after(bought: list[str] | msgspec.UnsetType, event: Event, limits: Limits) -> list[str] | msgspec.UnsetType:
    """The products a person bought, after `event`: an order's products first (in the order's order), then the
    earlier ones not in it, at most limits.bought_products (the oldest purchases go). The same value, unchanged,
    for any other event (UNSET stays UNSET: a state without orders is stored as before)."""
    if event.type != "track" or event.event != EventName.ORDER_COMPLETED:
        return bought
    products = [product.product_id for product in event.typed_properties(OrderProperties).products]
    return latest_first(products, [] if isinstance(bought, msgspec.UnsetType) else bought, limits) or bought


def latest_first(newer: Iterable[str], older: Iterable[str], limits: Limits) -> list[str]:
    """Distinct products, `newer` before `older`, at most limits.bought_products."""
    return list(dict.fromkeys([*newer, *older]))[: limits.bought_products]
