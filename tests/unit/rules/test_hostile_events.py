"""Random hostile events through the edge parser, the pure core and the state codec: nothing raises but
InvalidEvent, and every state the core returns is stored and read back equal (nothing a producer sends
can leave a state that cannot be written or read)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.events import EventName, InvalidEvent, parse_event
from schemas.limits import DEFAULT_LIMITS
from streams.rules.engine import advance_time, apply_event
from streams.rules.person import PersonState, SourcePosition
from tests.unit.factories import T0, shipped_rules

RULES = shipped_rules()
NAMES = [name.value for name in EventName]
KEYS = [
    *("product_id", "cart_id", "order_id", "price", "quantity", "products", "revenue", "total", "body", "name"),
    *("email", "phone", "birthday", "timezone", "locale", "url", "email_consent", "sms_consent", "value", "x"),
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(["", "STOP", "退订", "1990-02-30", "--13-45", "Mars/Olympus", "+1 (555) 123-0000", "x" * 3000]),
)
documents = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=6), st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), inner, max_size=6)
    ),
    max_leaves=30,
)


@st.composite
def hostile_event(draw: st.DrawFn) -> bytes:
    minutes = draw(st.integers(-10, 60 * 24 * 30))
    document: dict[str, Any] = {
        "type": draw(st.sampled_from(["track", "identify", "page", "alias", "screen", "bogus"])),
        "event": draw(st.sampled_from(NAMES) | st.text(max_size=10)),
        "userId": draw(st.sampled_from(["p1", "p1", "", "u" * 300]) | st.text(max_size=5)),
        "messageId": draw(st.sampled_from(["m1", "m2"]) | st.text(min_size=1, max_size=8)),
        "timestamp": draw(
            st.sampled_from(
                [
                    (T0 + timedelta(minutes=minutes)).isoformat(),
                    "1970-01-01T00:00:00Z",
                    "9999-12-31T23:59:59Z",
                    "yesterday",
                ]
            )
        ),
        "properties": draw(st.dictionaries(st.sampled_from(KEYS), documents, max_size=8)),
        "traits": draw(st.dictionaries(st.sampled_from(KEYS), documents, max_size=8)),
    }
    if draw(st.booleans()):
        document["anonymousId"] = draw(st.sampled_from(["anon-1", "p1"]))
    depth = draw(st.sampled_from([0, 0, 0, 28, 33, 300, 2000]))
    if depth:  # nesting orjson itself refuses to write, spliced in as text where the state would keep it
        document["traits"]["deep"] = "@DEEP@"
    # The standard library writes what orjson refuses to: NaN, Infinity, integers past 64 bits.
    raw = json.dumps(document, allow_nan=True).encode()
    return raw.replace(b'"@DEEP@"', b"[" * depth + b"]" * depth)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(hostile_event(), min_size=1, max_size=12))
def test_hostile_events_never_raise_and_every_state_reads_back_equal(raws: list[bytes]) -> None:
    state = PersonState.new("p1")
    received_at = T0 + timedelta(days=31)
    for offset, raw in enumerate(raws):
        try:
            event = parse_event(raw, DEFAULT_LIMITS, received_at=received_at)
        except InvalidEvent:
            continue
        if event.person_id != "p1":
            continue
        step = apply_event(state, event, SourcePosition(topic="events", partition=0, offset=offset), RULES)
        state = step.state
        stored = state.to_json()
        assert PersonState.from_json(stored) == state
    later = advance_time(state, received_at, SourcePosition(topic="clock", partition=0, offset=10**6), RULES).state
    assert PersonState.from_json(later.to_json()) == later
