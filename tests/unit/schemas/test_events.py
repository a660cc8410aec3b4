import pytest

from schemas.events import InvalidEvent, parse_event


def test_segment_track_call_parses_with_typed_properties():
    event = parse_event(
        b'{"type":"track","event":"Product Added","anonymousId":"anon-1","messageId":"m1",'
        b'"timestamp":"2026-11-02T10:00:00+01:00","properties":{"product_id":"sku-1","price":9.5},'
        b'"context":{"timezone":"Europe/Paris","locale":"fr-FR"}}'
    )
    assert event.person_id == "anon-1"
    assert event.timestamp.isoformat() == "2026-11-02T09:00:00+00:00"
    assert event.context.timezone == "Europe/Paris"


def test_user_id_wins_over_anonymous_id():
    event = parse_event(b'{"type":"identify","userId":"u1","anonymousId":"a1","timestamp":"2026-11-02T10:00:00Z"}')
    assert event.person_id == "u1"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "not JSON"),
        (b"[1,2]", "not a JSON object but list"),
        (b"", "empty message"),
        (
            b'{"type":"track","event":"Product Viewed","timestamp":"2026-11-02T10:00:00Z"}',
            "userId or anonymousId",
        ),
        (b'{"type":"track","userId":"u","timestamp":"2026-11-02T10:00:00Z"}', "needs an event name"),
        (b'{"type":"shout","userId":"u","timestamp":"2026-11-02T10:00:00Z"}', "type: Input should be"),
        (b'{"type":"track","event":"Product Added","userId":"u","timestamp":"yesterday"}', "timestamp"),
        (
            b'{"type":"track","event":"Product Added","userId":"u","timestamp":"2026-11-02T10:00:00Z",'
            b'"properties":{"product_id":"sku-1","price":"cheap"}}',
            "price",
        ),
        (
            b'{"type":"track","event":"Order Completed","userId":"u","timestamp":"2026-11-02T10:00:00Z",'
            b'"properties":{}}',
            "order_id",
        ),
    ],
)
def test_bad_input_is_rejected_with_a_reason(raw: bytes, reason: str):
    with pytest.raises(InvalidEvent, match=reason):
        parse_event(raw)


def test_unknown_track_events_are_accepted_with_free_properties():
    event = parse_event(
        b'{"type":"track","event":"Wishlist Shared","userId":"u","timestamp":"2026-11-02T10:00:00Z",'
        b'"properties":{"anything":[1,2]}}'
    )
    assert event.properties == {"anything": [1, 2]}


def test_a_timestamp_near_the_end_of_the_calendar_is_refused_without_overflow() -> None:
    from datetime import UTC, datetime

    import orjson

    from schemas.limits import DEFAULT_LIMITS

    raw = orjson.dumps({"type": "track", "event": "x", "userId": "u", "timestamp": "9999-12-31T23:59:59Z"})
    with pytest.raises(InvalidEvent, match="after the time it was received"):
        parse_event(raw, DEFAULT_LIMITS, received_at=datetime(2026, 1, 1, tzinfo=UTC))
    raw = orjson.dumps({"type": "track", "event": "x", "userId": "u", "timestamp": "0001-01-01T00:00:00+01:00"})
    with pytest.raises(InvalidEvent, match="outside the range of dates"):
        parse_event(raw)
