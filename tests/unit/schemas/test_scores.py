"""The scores contract: what the stream may take from the scores topic, and what it must refuse."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from schemas.limits import DEFAULT_LIMITS
from schemas.scores import InvalidScore, Score, parse_score

AT = datetime(2026, 6, 1, tzinfo=UTC)


def document(**changes: Any) -> dict[str, Any]:
    score = {
        "personId": "ann",
        "modelVersion": "bgnbd-2026-06-01",
        "scoredAt": AT.isoformat(),
        "horizonDays": 90,
        "pAlive": 0.8,
        "churnRisk": 0.2,
        "expectedOrders": 1.5,
        "predictedClv": 120.0,
        "purchasePropensity": 0.7,
        "expectedNextOrderAt": (AT + timedelta(days=20)).isoformat(),
    }
    return {**score, **changes}


def parsed(key: bytes | None = b"ann", **changes: Any) -> Score | None:
    return parse_score(key, orjson.dumps(document(**changes)), DEFAULT_LIMITS)


def test_a_score_round_trips_through_its_wire_form() -> None:
    score = parsed()
    assert score is not None
    assert (score.person_id, score.churn_risk, score.expected_next_order_at) == ("ann", 0.2, AT + timedelta(days=20))
    assert parse_score(score.key, score.to_json(), DEFAULT_LIMITS) == score


def test_a_tombstone_means_no_scores() -> None:
    assert parse_score(b"ann", None, DEFAULT_LIMITS) is None


def test_fields_a_later_version_adds_are_ignored() -> None:
    score = parsed(segmentHint="vip")
    assert score is not None and "segmentHint" not in score.model_dump(by_alias=True)


def test_no_next_order_expected_is_allowed() -> None:
    score = parsed(expectedNextOrderAt=None)
    assert score is not None and score.expected_next_order_at is None


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"pAlive": 1.2, "churnRisk": -0.2}, "pAlive: Input should be less than or equal to 1"),
        ({"purchasePropensity": -0.1}, "purchasePropensity: Input should be greater than or equal to 0"),
        ({"predictedClv": -5}, "predictedClv: Input should be greater than or equal to 0"),
        ({"expectedOrders": 1e300}, "expectedOrders: number 1e+300 outside ±1e+12"),
        ({"churnRisk": 0.5}, "churnRisk 0.5 is not 1 - pAlive"),
        ({"horizonDays": 0}, "horizonDays: Input should be greater than or equal to 1"),
        ({"personId": ""}, "personId: String should have at least 1 character"),
        ({"personId": "x" * 300}, "personId: 300 characters; at most 256"),
        ({"modelVersion": "v" * 300}, "modelVersion: 300 characters; at most 256"),
        ({"expectedNextOrderAt": (AT + timedelta(days=91)).isoformat()}, "outside the horizon"),
        ({"scoredAt": "yesterday"}, "scoredAt"),
    ],
)
def test_a_score_out_of_bounds_is_refused_with_the_reason(changes: dict[str, Any], reason: str) -> None:
    key = str(changes.get("personId", "ann")).encode()
    with pytest.raises(InvalidScore, match=reason.replace("+", r"\+")):
        parsed(key, **changes)


def test_a_score_keyed_by_someone_else_is_refused() -> None:
    with pytest.raises(InvalidScore, match="key is not its personId"):
        parsed(b"bob")
    with pytest.raises(InvalidScore, match="key is not its personId"):
        parsed(None)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [(b"{not json", "not JSON"), (b"[1, 2]", "not a JSON object"), (b" " * 20_000, "20000 bytes; at most 16384")],
)
def test_a_record_that_is_no_score_is_refused(raw: bytes, reason: str) -> None:
    with pytest.raises(InvalidScore, match=reason):
        parse_score(b"ann", raw, DEFAULT_LIMITS)
