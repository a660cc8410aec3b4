"""The recommended products a nudge carries: bounded, never a product the person bought or already has in
hand, each seed taken in turn, and the same for the same inputs."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from schemas.recommendations import TOP_K
from streams.rules.recommendations import NO_RECOMMENDATIONS, recommended_for

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
