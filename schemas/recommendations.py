"""Products often bought with or after one product: what `nudgeflow models train` publishes on the compacted
`recommendations` topic, and the worker adds to the context of cart, browse and post-purchase nudges.

The contract between the job and the stream (docs/architecture.md, "Recommendations"):

* one record per product, keyed by the product id (UTF-8), equal to the record's `productId`; compaction keeps
  the latest, so a reader that starts from the beginning holds every product's current recommendations;
* a record without a value (a tombstone) means the product has no recommendations any more: forget it;
* the value is JSON in camelCase like every other topic (`Recommendation.to_json`); fields may be added in later
  versions, so a reader ignores what it does not know;
* `recommended` lists at most `TOP_K` distinct product ids, best first, none of them the product itself, each
  bounded by `limits.id_length`; a record that does not validate (`parse_recommendation`) is refused with the
  reason, never half-applied.

A record is an aggregate over at least `MIN_SUPPORT` buyers and names nobody, so erasure leaves the topic alone;
the next run leaves the erased person's orders out, as their events are gone.
"""

from __future__ import annotations

from pydantic import ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from schemas.events import UtcDatetime, WireModel
from schemas.limits import LimitExceeded, Limits, check_id, decode_validated

# Recommendations kept per product, and the most a nudge carries. An email shows three to six products; ten
# leaves room for dropping what the person already bought or has in the cart, and keeps every runner's map of
# the catalogue at ten ids per product.
TOP_K = 10

# A pair is recommended only once this many different people bought both: below it a co-occurrence is one
# shopper's taste (or one bot's orders), not a pattern, and no record can point back at a single person.
MIN_SUPPORT = 3

# "Bought after" counts a second order within this many days of the first: later than that, the two orders
# are no longer one need (the next season's shopping).
AFTER_WINDOW_DAYS = 30

# Eleven ids of at most 4096 characters (the largest `limits.id_length`), the version and the field names.
RECOMMENDATION_BYTES = 64 * 1024


class Recommendation(WireModel):
    """One product's recommended products from one run."""

    # Unknown fields are dropped, not kept: a newer writer may add some, and a reader holds only what it knows.
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True)

    product_id: str = Field(min_length=1, description="the product in the cart, viewed or ordered")
    model_version: str = Field(min_length=1, description="which run wrote this (window, support, end of history)")
    computed_at: UtcDatetime = Field(description="the end of the order history the run read")
    recommended: list[str] = Field(
        min_length=1, max_length=TOP_K, description="product ids often bought with or after it, best first"
    )

    @model_validator(mode="after")
    def _distinct(self) -> Recommendation:
        if any(not product for product in self.recommended):
            raise ValueError("recommended holds an empty product id")
        if len(set(self.recommended)) != len(self.recommended):
            raise ValueError("recommended names a product twice")
        if self.product_id in self.recommended:
            raise ValueError("recommended names the product itself")
        return self

    @property
    def key(self) -> bytes:
        return self.product_id.encode()


class InvalidRecommendation(ValueError):
    """A record of the recommendations topic that cannot be used, with the reason (for the dead letter)."""


def parse_recommendation(key: bytes | None, raw: bytes | None, limits: Limits) -> Recommendation | None:
    """The recommendation in a record of the recommendations topic, None for a tombstone, or
    InvalidRecommendation with the reason. The key must be the product the record is about."""
    if raw is None:
        if not key:
            raise InvalidRecommendation("a tombstone without a key")
        return None
    recommendation = decode_validated(
        raw, Recommendation.model_validate, RECOMMENDATION_BYTES, InvalidRecommendation, "recommendation"
    )
    try:
        check_id("productId", recommendation.product_id, limits)
        check_id("modelVersion", recommendation.model_version, limits)
        for index, product in enumerate(recommendation.recommended):
            check_id(f"recommended[{index}]", product, limits)
    except LimitExceeded as error:
        raise InvalidRecommendation(f"over a limit: {error}") from None
    if key is None or key.decode(errors="replace") != recommendation.product_id:
        raise InvalidRecommendation("the record's key is not its productId")
    return recommendation
