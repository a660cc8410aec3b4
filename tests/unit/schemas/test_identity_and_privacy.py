"""Identity and privacy messages are bounded like events: a merge cannot smuggle in deeper traits than an
event could have set, and no id in a request is longer than any id."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from schemas.identity import InvalidIdentityMessage, Merge, parse_identity
from schemas.limits import DEFAULT_LIMITS
from schemas.privacy import InvalidPrivacyRequest, parse_erasure


def nested(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


def merge(traits: dict[str, Any]) -> bytes:
    state = {"profile": {"person_id": "anon", "traits": traits}}
    return Merge(anonymous_id="anon", person_id="p", state=state).to_json()


def test_a_merge_within_the_limits_is_read() -> None:
    # An event {"traits": {"t": ...}} within the depth limit: traits hold at most json_depth - 1 levels.
    assert isinstance(parse_identity(merge({"t": nested(DEFAULT_LIMITS.json_depth - 2)}), DEFAULT_LIMITS), Merge)


@pytest.mark.parametrize("levels", [32, 100])
def test_a_merge_whose_traits_nest_deeper_than_an_event_may_is_refused(levels: int) -> None:
    with pytest.raises(InvalidIdentityMessage, match=r"over a limit: merge .*nested deeper than \d+ levels"):
        parse_identity(merge({"t": nested(levels)}), DEFAULT_LIMITS)


def test_a_merge_nested_hundreds_of_levels_is_refused_before_anything_recurses() -> None:
    raw = b'{"kind":"merge","anonymous_id":"a","person_id":"p","state":' + b"[" * 300 + b"]" * 300 + b"}"
    with pytest.raises(InvalidIdentityMessage, match="state"):
        parse_identity(raw, DEFAULT_LIMITS)


def test_an_erasure_request_with_an_overlong_id_is_refused() -> None:
    request = {"kind": "erase", "requestId": "r", "personId": "x" * 30_000, "requestedAt": "2026-01-01T00:00:00Z"}
    with pytest.raises(InvalidPrivacyRequest, match="invalid privacy request: personId: 30000 characters; at most 256"):
        parse_erasure(orjson.dumps(request), DEFAULT_LIMITS)
    assert parse_erasure(orjson.dumps({**request, "personId": "eve"}), DEFAULT_LIMITS).person_id == "eve"
