"""Pure parts of the collector: skew correction, dedupe window, contact cleaning, Segment call shapes."""

from __future__ import annotations

import base64
import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from schemas.limits import DEFAULT_LIMITS as LIMITS
from streams.collector.cleaning import clean_email, clean_phone, clean_traits
from streams.collector.dead_letters import collector_dead_letter
from streams.collector.dedupe import DedupeWindow
from streams.collector.segment_api import (
    InvalidCall,
    PayloadTooLarge,
    Reception,
    prepare_batch,
    prepare_event,
    source_for,
    write_key_from_authorization,
)
from streams.collector.skew import ImplausibleTimestamps, derived_timestamp

NOW = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def ids() -> Any:
    counter = itertools.count()
    return lambda: f"generated-{next(counter)}"


def reception(**changes: Any) -> Reception:
    """How the collector receives a request at NOW, with `changes`."""
    return Reception(
        **{"limits": LIMITS, "received_at": NOW, "default_region": "US", "new_message_id": ids(), **changes}
    )


def test_skew_is_removed_using_the_device_gap() -> None:
    # The device clock is 1 hour fast; the event was created 5 s before it was sent.
    device_created = NOW + timedelta(hours=1) - timedelta(seconds=5)
    device_sent = NOW + timedelta(hours=1)
    assert derived_timestamp(device_created, device_sent, NOW) == NOW - timedelta(seconds=5)


def test_skew_without_sent_at_keeps_the_timestamp() -> None:
    assert derived_timestamp(NOW - timedelta(days=1), None, NOW) == NOW - timedelta(days=1)


def test_skew_with_sent_before_created_takes_the_receive_time() -> None:
    assert derived_timestamp(NOW + timedelta(seconds=5), NOW, NOW) == NOW


def test_skew_refuses_timestamps_too_far_apart() -> None:
    # Found by schemathesis: year 1 to year 9999 overflows datetime.
    with pytest.raises(ImplausibleTimestamps):
        derived_timestamp(datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 1, 1, tzinfo=UTC), NOW)


def test_dedupe_window_forgets_after_ttl() -> None:
    clock = FakeClock()
    window = DedupeWindow(ttl_seconds=600, max_entries=10, clock=clock)
    window.add("a")
    clock.now += 599
    assert "a" in window
    clock.now += 1
    assert "a" not in window
    assert len(window) == 0


def test_dedupe_window_is_bounded_and_drops_the_oldest() -> None:
    clock = FakeClock()
    window = DedupeWindow(ttl_seconds=600, max_entries=3, clock=clock)
    for name in "abcd":
        window.add(name)
        clock.now += 1
    assert "a" not in window
    assert all(name in window for name in "bcd")
    assert len(window) == 3


def test_dedupe_window_refuses_nonsense_sizes() -> None:
    with pytest.raises(ValueError):
        DedupeWindow(ttl_seconds=0, max_entries=1, clock=FakeClock())


@pytest.mark.parametrize(
    ("raw", "expected", "status"),
    [
        ("  Ann@Example.COM ", "Ann@example.com", "valid"),
        ("ann@mailinator.com", "ann@mailinator.com", "disposable"),
        ("ann@eu.yopmail.com", "ann@eu.yopmail.com", "disposable"),
        ("ann@@example.com", "ann@@example.com", "invalid"),
        ("ann@example", "ann@example", "invalid"),
        ("ann example@x.com", "ann example@x.com", "invalid"),
    ],
)
def test_email_cleaning(raw: str, expected: str, status: str) -> None:
    assert clean_email(raw) == (expected, status)


def test_phone_cleaning_to_e164() -> None:
    assert clean_phone("(415) 555-2671", "US") == ("+14155552671", "valid")
    assert clean_phone("030 901820", "DE") == ("+4930901820", "valid")
    assert clean_phone("+44 20 7946 0958", "US") == ("+442079460958", "valid")
    assert clean_phone("12", "US") == ("12", "invalid")
    assert clean_phone("call me", "US") == ("call me", "invalid")


def test_traits_are_flagged_not_dropped() -> None:
    cleaned = clean_traits({"email": "x@mailinator.com", "phone": "555", "name": "Ann"}, "US")
    assert cleaned == {
        "email": "x@mailinator.com",
        "email_status": "disposable",
        "phone": "555",
        "phone_status": "invalid",
        "name": "Ann",
    }
    assert clean_traits({"email": 42}, "US")["email_status"] == "invalid"
    assert clean_traits({"plan": "pro"}, "US") == {"plan": "pro"}


def test_write_key_from_basic_auth() -> None:
    header = "Basic " + base64.b64encode(b"key-1:").decode()
    assert write_key_from_authorization(header) == "key-1"
    assert write_key_from_authorization("Bearer abc") is None
    assert write_key_from_authorization("Basic !!!") is None
    assert write_key_from_authorization(None) is None


def test_source_for_known_and_unknown_keys() -> None:
    assert source_for("k", {"k": "web"}) == "web"
    with pytest.raises(InvalidCall, match="unknown write key"):
        source_for("nope", {"k": "web"})
    with pytest.raises(InvalidCall, match="missing write key"):
        source_for(None, {"k": "web"})


def test_prepare_event_sets_type_received_at_message_id_and_corrects_skew() -> None:
    event = prepare_event(
        {
            "event": "Product Viewed",
            "userId": "u1",
            "timestamp": "2026-11-29T13:00:00Z",
            "sentAt": "2026-11-29T13:00:10Z",
            "properties": {"product_id": "p1"},
            "writeKey": "secret",
        },
        reception(source="web"),
        call_type="track",
    )
    assert event.type == "track"
    assert event.received_at == NOW
    assert event.timestamp == NOW - timedelta(seconds=10)
    assert event.model_extra is not None
    assert event.model_extra["originalTimestamp"] == datetime(2026, 11, 29, 13, 0, tzinfo=UTC)
    assert "writeKey" not in event.model_extra
    assert event.message_id == "generated-0"
    assert event.context.model_extra == {"source": "web"}


def test_the_route_overrides_the_type_in_the_body() -> None:
    event = prepare_event(
        {"type": "track", "userId": "u1", "traits": {"email": "A@B.co"}}, reception(), call_type="identify"
    )
    assert event.type == "identify"
    assert event.timestamp == NOW  # no timestamp: Segment takes "now"
    assert event.traits == {"email": "A@b.co", "email_status": "valid"}


def test_prepare_event_explains_invalid_events() -> None:
    with pytest.raises(InvalidCall, match="userId or anonymousId"):
        prepare_event({"event": "x"}, reception(), call_type="track")
    with pytest.raises(InvalidCall, match="not an array"):
        prepare_event([], reception(), call_type="track")
    with pytest.raises(PayloadTooLarge, match=f"at most {LIMITS.event_bytes} bytes"):
        prepare_event(
            {"userId": "u", "event": "x", "properties": {f"b{n}": "x" * 2000 for n in range(20)}},
            reception(),
            call_type="track",
        )


def test_batch_keeps_valid_calls_and_uses_the_batch_sent_at() -> None:
    outcome = prepare_batch(
        {
            "sentAt": "2026-11-29T12:00:30Z",
            "context": {"library": {"name": "analytics-python"}},
            "batch": [
                {"type": "page", "anonymousId": "a1", "name": "Home", "timestamp": "2026-11-29T12:00:00Z"},
                {"type": "track", "userId": "u1"},
                {"userId": "u2", "event": "x"},
                "junk",
            ],
        },
        reception(),
    )
    assert [event.type for event in outcome.accepted] == ["page"]
    assert outcome.accepted[0].timestamp == NOW - timedelta(seconds=30)
    assert outcome.accepted[0].context.model_extra == {"library": {"name": "analytics-python"}}
    assert [(rejection.index, rejection.reason) for rejection in outcome.rejected] == [
        (1, "event: Value error, a track event needs an event name"),
        (2, "type: missing; one of track, identify, page, screen, alias, group"),
        (3, "an event must be a JSON object, not a string"),
    ]


@pytest.mark.parametrize(
    ("document", "reason"),
    [({"batch": []}, "empty"), ({"batch": {}}, "not an array"), ([1], "a batch must be a JSON object")],
)
def test_batch_envelope_errors(document: Any, reason: str) -> None:
    with pytest.raises(InvalidCall, match=reason):
        prepare_batch(document, reception())


def test_dead_letter_keys_are_stable_and_distinct() -> None:
    first = collector_dead_letter({"userId": "u", "event": 1}, "bad", NOW, "web", LIMITS)
    again = collector_dead_letter({"event": 1, "userId": "u"}, "bad", NOW, "web", LIMITS)
    other = collector_dead_letter({"userId": "u", "event": 2}, "bad", NOW, "web", LIMITS)
    assert first.offset == again.offset != other.offset
    assert (first.topic, first.partition, first.key) == ("collector", 0, "u")
    assert 0 <= first.offset < 2**63


def test_identify_traits_from_context_as_rudderstack_sends_them() -> None:
    event = prepare_event(
        {"userId": "u", "context": {"traits": {"phone": "+1 415 555 2671"}}}, reception(), call_type="identify"
    )
    assert event.traits == {"phone": "+14155552671", "phone_status": "valid"}


def test_the_batch_envelope_is_within_the_limits() -> None:
    deep: Any = 1
    for _ in range(300):
        deep = {"a": deep}
    call = {"type": "track", "userId": "u", "event": "x"}
    for envelope, reason in (
        ({"context": deep}, "context.a.a"),
        ({"sentAt": [deep]}, r"sentAt\[0\].a"),
    ):
        with pytest.raises(InvalidCall, match=reason):
            prepare_batch({**envelope, "batch": [call]}, reception())
    # Each part within the limits, the call's context merged with the batch's is not.
    outcome = prepare_batch(
        {"context": {f"b{n}": n for n in range(200)}, "batch": [{**call, "context": {f"c{n}": n for n in range(100)}}]},
        reception(),
    )
    assert [rejection.reason for rejection in outcome.rejected] == ["context: 300 keys; at most 256"]
