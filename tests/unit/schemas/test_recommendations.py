"""The recommendations topic's wire model: a valid record round-trips, a tombstone forgets, and every hostile
or out-of-bounds record is refused with its reason."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from schemas.limits import DEFAULT_LIMITS
from schemas.recommendations import (
    RECOMMENDATION_BYTES,
    TOP_K,
    InvalidRecommendation,
    Recommendation,
    parse_recommendation,
)


def document(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "productId": "p1",
        "modelVersion": "cooc-20260601T000000Z",
        "computedAt": "2026-06-01T00:00:00Z",
        "recommended": ["p2", "p3"],
    }
    return {**base, **changes}


def parsed(key: bytes | None = b"p1", **changes: Any) -> Recommendation | None:
    return parse_recommendation(key, orjson.dumps(document(**changes)), DEFAULT_LIMITS)


def test_a_record_round_trips_and_unknown_fields_are_ignored() -> None:
    recommendation = parsed(extra="later versions may add fields")
    assert recommendation is not None and recommendation.recommended == ["p2", "p3"]
    assert parse_recommendation(recommendation.key, recommendation.to_json(), DEFAULT_LIMITS) == recommendation


def test_a_tombstone_forgets_the_product() -> None:
    assert parse_recommendation(b"p1", None, DEFAULT_LIMITS) is None
    with pytest.raises(InvalidRecommendation, match="without a key"):
        parse_recommendation(None, None, DEFAULT_LIMITS)


@pytest.mark.parametrize(
    ("key", "changes", "reason"),
    [
        (b"p9", {}, "key is not its productId"),
        (None, {}, "key is not its productId"),
        (b"p1", {"recommended": []}, "recommended"),
        (b"p1", {"recommended": [f"q{n}" for n in range(TOP_K + 1)]}, "recommended"),
        (b"p1", {"recommended": ["p2", "p2"]}, "names a product twice"),
        (b"p1", {"recommended": ["p1"]}, "names the product itself"),
        (b"p1", {"recommended": [""]}, "empty product id"),
        (b"p1", {"recommended": [7]}, "recommended"),
        (b"p1", {"recommended": ["x" * (DEFAULT_LIMITS.id_length + 1)]}, r"over a limit: recommended\[0\]"),
        (b"p1", {"computedAt": "yesterday"}, "computedAt"),
        (b"p1", {"modelVersion": ""}, "modelVersion"),
        (b"p1", {"modelVersion": "v" * (DEFAULT_LIMITS.id_length + 1)}, "over a limit: modelVersion"),
    ],
)
def test_an_invalid_record_is_refused_with_the_reason(key: bytes | None, changes: dict[str, Any], reason: str) -> None:
    with pytest.raises(InvalidRecommendation, match=reason):
        parsed(key, **changes)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"productId": "p1", "recommended": ["' + b"x" * RECOMMENDATION_BYTES + b'"]}', "bytes; at most"),
        (b"[" * 100_000, "bytes; at most"),
    ],
)
def test_hostile_bytes_are_refused_before_anything_recurses(raw: bytes, reason: str) -> None:
    with pytest.raises(InvalidRecommendation, match=reason):
        parse_recommendation(b"p1", raw, DEFAULT_LIMITS)
