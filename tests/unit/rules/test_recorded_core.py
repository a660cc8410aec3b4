"""The core decides exactly as the core before it did, on varied recorded traffic (recorded_core.py), and
reads the states that core stored."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest
from msgspec.structs import replace

from schemas.encoding import encode
from streams.rules.person import PersonState
from tests.unit.rules.recorded_core import replay, traffic

RECORDING = Path(__file__).parent / "data" / "core_before_plain_data.json.gz"


def before_new_fields(state: PersonState) -> PersonState:
    """The state as the core before `open_hours` (send_time: best) and `bought` (recommendations) kept it:
    everything else is unchanged."""
    return replace(state, open_hours=msgspec.UNSET, bought=msgspec.UNSET)


def buyers(messages: list[dict[str, Any]]) -> set[str]:
    """Who completed an order with products in it, keyed like `openers`."""
    orders = (m for m in messages if m.get("type") == "track" and m.get("event") == "Order Completed")
    return {str(m.get("userId") or m.get("anonymousId")) for m in orders if m.get("properties", {}).get("products")}


def openers(messages: list[dict[str, Any]]) -> set[str]:
    """Who opened or clicked an email (an anonymous visitor is keyed by the anonymous id, like the runner)."""
    opened = (m for m in messages if m.get("type") == "track" and m.get("event") in ("Email Opened", "Email Clicked"))
    return {str(m.get("userId") or m.get("anonymousId")) for m in opened}


@pytest.fixture(scope="module")
def recording() -> dict[str, Any]:
    document: dict[str, Any] = orjson.loads(gzip.decompress(RECORDING.read_bytes()))
    return document


def test_the_recorded_traffic_is_what_the_generator_makes(recording: dict[str, Any]) -> None:
    # The traffic is kept in the recording; this says the generator was not changed under it.
    assert recording["messages"] == orjson.loads(orjson.dumps(traffic()))


def test_every_output_is_byte_for_byte_the_old_cores(recording: dict[str, Any]) -> None:
    outputs, states = replay(recording["messages"], encode, encode)
    assert len(outputs) == len(recording["outputs"])
    for ours, theirs in zip(outputs, recording["outputs"], strict=True):
        assert ours == theirs  # triggers, suppressions, segment changes as published; the profile's digest
    assert {person: encode(before_new_fields(state)).decode() for person, state in states.items()} == (
        recording["states_json"]
    )
    # Only the people who opened or clicked an email, or bought something (themselves, or as the anonymous
    # visitor they absorbed), store anything new; everybody else's bytes are the same.
    changed = {person for person, state in states.items() if encode(state).decode() != recording["states_json"][person]}
    assert openers(recording["messages"]) | buyers(recording["messages"]) <= changed
    assert changed == {person for person, state in states.items() if state.engagement_hours or state.bought_products}


def test_states_stored_by_the_old_codec_decode_to_the_same_states(recording: dict[str, Any]) -> None:
    _, states = replay(recording["messages"], encode, encode)
    stored: dict[str, str] = recording["states_stored"]
    assert "+00:00" in next(iter(stored.values()))  # the old codec's way of writing UTC
    for person, text in stored.items():
        decoded = PersonState.from_json(text.encode())
        assert decoded == before_new_fields(states[person])
        assert PersonState.from_json(decoded.to_json()) == decoded
