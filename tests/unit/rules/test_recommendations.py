"""The recommended products a nudge carries: bounded, never a product the person bought or already has in
hand, each seed taken in turn, and the same for the same inputs; what the person bought, kept in their state
within its bound; and the cart, browse and post-purchase nudges carrying them without their ids changing."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from schemas.events import Event
from schemas.limits import DEFAULT_LIMITS, Limits
from schemas.recommendations import TOP_K
from schemas.triggers import Trigger
from streams.rules.identity import merge_states
from streams.rules.person import PersonState
from streams.rules.recommendations import NO_RECOMMENDATIONS, bought_after, recommended_for
from tests.unit.factories import Feed, added, days, identify, shipped_rules, track
from tests.unit.rules.test_triggers import open_rules

MAP = {"shoe": ["sock", "lace", "insole"], "hat": ["scarf", "sock", "glove"]}


def test_each_seed_in_turn_without_repeats() -> None:
    assert recommended_for(["shoe", "hat"], MAP) == ["sock", "scarf", "lace", "insole", "glove"]


def test_what_the_person_bought_and_the_seeds_themselves_are_left_out() -> None:
    assert recommended_for(["shoe", "hat"], MAP, excluded={"sock", "glove"}) == ["scarf", "lace", "insole"]
    assert recommended_for(["shoe", "sock"], {"shoe": ["sock", "lace"]}) == ["lace"]


def test_no_map_or_unknown_products_give_nothing() -> None:
    assert recommended_for(["shoe"], NO_RECOMMENDATIONS) == []
    assert recommended_for(["unknown"], MAP) == []


# Few ids, so seeds, map keys and exclusions meet often.
ids = st.sampled_from([f"p{n}" for n in range(8)])


@given(
    recommendations=st.dictionaries(ids, st.lists(ids, max_size=TOP_K, unique=True), max_size=12),
    seeds=st.lists(ids, max_size=6),
    excluded=st.sets(ids, max_size=6),
    most=st.integers(min_value=1, max_value=TOP_K),
)
def test_bounded_excluded_distinct_and_deterministic(
    recommendations: dict[str, list[str]], seeds: list[str], excluded: set[str], most: int
) -> None:
    found = recommended_for(seeds, recommendations, excluded, most)
    assert len(found) <= most and len(set(found)) == len(found)
    assert not set(found) & (excluded | set(seeds))
    offered = {product for seed in seeds for product in recommendations.get(seed, [])}
    assert set(found) <= offered
    assert found == recommended_for(list(seeds), dict(recommendations), set(excluded), most)
    if len(offered - excluded - set(seeds)) >= most:
        assert len(found) == most  # nothing left unused while room is left


def order(minutes: float, *products: str, person: str = "p1", cart: str | None = None) -> Event:
    return track(
        "Order Completed", minutes, person, order_id=f"o-{minutes}", revenue=10.0, cart_id=cart,
        products=[{"product_id": product} for product in products],
    )  # fmt: skip


class TestBought:
    def test_the_latest_orders_products_first_without_repeats_and_the_oldest_dropped_past_the_bound(self) -> None:
        limits = Limits(bought_products=4)
        bought = bought_after(msgspec.UNSET, order(1, "a", "b", "a"), limits)
        assert bought == ["a", "b"]
        bought = bought_after(bought, order(2, "c", "b"), limits)
        assert bought == ["c", "b", "a"]
        assert bought_after(bought, order(3, "d", "e"), limits) == ["d", "e", "c", "b"]

    def test_other_events_and_orders_without_products_change_nothing(self) -> None:
        assert bought_after(msgspec.UNSET, added(1), DEFAULT_LIMITS) is msgspec.UNSET
        assert bought_after(msgspec.UNSET, order(1), DEFAULT_LIMITS) is msgspec.UNSET
        assert bought_after(["a"], track("Product Viewed", 1, product_id="b"), DEFAULT_LIMITS) == ["a"]

    def test_a_person_who_never_ordered_is_stored_exactly_as_before_the_field(self) -> None:
        feed = Feed(open_rules())
        feed.event(identify(0, email="p1@example.com"))
        feed.event(added(1))
        assert feed.state.bought is msgspec.UNSET and b"bought" not in feed.state.to_json()
        feed.event(order(2, "sku-1", "sku-2"))
        assert feed.state.bought_products == ["sku-1", "sku-2"]
        assert PersonState.from_json(feed.state.to_json()).bought_products == ["sku-1", "sku-2"]

    def test_what_the_anonymous_visitor_bought_is_the_person_s_after_the_merge(self) -> None:
        person = msgspec.structs.replace(PersonState.new("p1"), bought=["a", "b"])
        visitor = msgspec.structs.replace(PersonState.new("anon"), bought=["b", "c"])
        limits = Limits(bought_products=3)
        assert merge_states(person, visitor, shipped_rules(), limits).bought_products == ["a", "b", "c"]
        assert merge_states(PersonState.new("p1"), PersonState.new("anon"), shipped_rules()).bought is msgspec.UNSET


CATALOGUE: Mapping[str, Sequence[str]] = MappingProxyType(
    {"sku-1": ("sku-2", "sku-3", "sku-4"), "sku-2": ("sku-1", "sku-5"), "mug": ("tea", "sku-3", "spoon")}
)


def fired(rule: str, recommendations: Mapping[str, Sequence[str]]) -> Trigger:
    """The one `rule` nudge of a person who bought sku-3 a week ago, then put sku-1 and sku-2 in a cart, viewed a
    mug, and ordered the mug the next day; the same events, whatever the recommendations."""
    feed = Feed(open_rules(), recommendations=recommendations)
    feed.event(identify(0, email="p1@example.com", phone="+15551230000"))
    feed.event(order(1, "sku-3"))
    start = days(7)
    if rule == "cart_abandonment":
        feed.event(added(start, "sku-1", cart="c1"))
        feed.event(added(start + 1, "sku-2", cart="c1"))
        feed.tick(start + 40)
    elif rule == "browse_abandonment":
        feed.event(track("Product Viewed", start, product_id="mug", name="Mug"))
        feed.tick(start + 40)
    else:
        feed.event(order(start, "mug"))
        feed.tick(start + days(1) + 1)
    *_, trigger = feed.fired(rule)  # the latest (the first order's thanks went out too)
    return trigger


class TestNudgesCarryThem:
    def test_cart_abandonment_recommends_for_the_cart_s_items_without_them_or_what_was_bought(self) -> None:
        trigger = fired("cart_abandonment", CATALOGUE)
        # sku-1's best (sku-2) is in the cart and sku-3 was bought: sku-5 (sku-2's), then sku-4 (sku-1's).
        assert trigger.context["recommended"] == ["sku-5", "sku-4"]

    def test_browse_abandonment_recommends_for_the_viewed_product(self) -> None:
        assert fired("browse_abandonment", CATALOGUE).context["recommended"] == ["tea", "spoon"]

    def test_post_purchase_recommends_for_the_order_s_products_without_what_was_bought(self) -> None:
        trigger = fired("post_purchase", CATALOGUE)
        assert trigger.context["recommended"] == ["tea", "spoon"] and "cross_sell" in trigger.context

    def test_no_key_when_there_are_none_or_nothing_is_left_and_the_trigger_id_never_changes(self) -> None:
        for rule in ("cart_abandonment", "browse_abandonment", "post_purchase"):
            plain = fired(rule, NO_RECOMMENDATIONS)
            assert "recommended" not in plain.context
            only_bought = fired(rule, {"sku-1": ["sku-3"], "sku-2": ["sku-3"], "mug": ["sku-3"]})
            assert "recommended" not in only_bought.context
            recommended = fired(rule, CATALOGUE)
            assert plain.trigger_id == only_bought.trigger_id == recommended.trigger_id
            assert plain.model_copy(update={"context": recommended.context}) == recommended  # nothing else differs
