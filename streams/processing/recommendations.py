"""Recommendations in a runner: the recommendations topic read whole (streams/processing/whole_topic.py) into
a bounded map, product id -> recommended ids, that the core is handed as a read-only view
(docs/architecture.md, "Recommendations").

The map changes only between records, on the runner's loop; the core reads it and never fetches anything.
"""

from __future__ import annotations

from types import MappingProxyType

from schemas.recommendations import InvalidRecommendation, Recommendation
from streams.rules.recommendations import Recommendations


class RecommendationMap:
    """The latest recommendations of each product, for at most `most` products (settings.recommendation_products).

    Past the bound a record for one more product is refused (its dead letter says so) while the products held
    keep being updated, and a tombstone makes room: the first products read stay, as after a restart, rather
    than whichever came last."""

    def __init__(self, most: int) -> None:
        self.most = most
        self._products: dict[str, tuple[str, ...]] = {}
        self.view: Recommendations = MappingProxyType(self._products)

    def __len__(self) -> int:
        return len(self._products)

    def apply(self, product_id: str, recommendation: Recommendation | None) -> None:
        """Take one record (None: a tombstone, the product has none any more). Raises InvalidRecommendation
        with the reason for its dead letter."""
        if recommendation is None:
            self._products.pop(product_id, None)
            return
        if product_id not in self._products and len(self._products) >= self.most:
            raise InvalidRecommendation(
                f"over a limit: {self.most} products with recommendations held (recommendation_products)"
            )
        self._products[product_id] = tuple(recommendation.recommended)
