"""Which recommended products a nudge carries: pure, from the runner's map of the recommendations topic
(product id -> recommended ids, best first), the products the nudge is about, and what to leave out.

docs/architecture.md, "Recommendations". Not wired into the trigger path yet: `build_trigger` is to call it for
cart, browse and post-purchase nudges, after the trigger id is made, so the id never depends on it.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from types import MappingProxyType

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
