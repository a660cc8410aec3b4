from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from schemas.limits import Limits
from schemas.segments import SegmentChange
from schemas.triggers import Channel, DeadLetter, Suppression, SuppressionReason, Trigger
from sinks.clickhouse.rows import (
    DEAD_LETTERS,
    EVENTS,
    PROFILE_SNAPSHOTS,
    SEGMENT_CHANGES,
    SUPPRESSIONS,
    TRIGGERS,
    RowOptions,
    Unusable,
    dead_letter_row,
    event_row,
    letter_people,
    profile_snapshot_row,
    segment_change_row,
    suppression_row,
    trigger_row,
)

NOW = datetime(2026, 11, 3, 12, 0, tzinfo=UTC)
OPTIONS = RowOptions(b"unit-test-key")


def a_trigger(variant: str | None = "b") -> Trigger:
    return Trigger(
        trigger_id="t1",
        rule="cart_abandonment",
        person_id="ana",
        channel=Channel.EMAIL,
        template_id="cart-1",
        due_at=NOW,
        fired_at=NOW,
        variant=variant,
        context={"items": [1]},
    )


def test_trigger_row_carries_the_variant_in_its_column() -> None:
    row = trigger_row(a_trigger().to_json(), OPTIONS)
    assert row is not None
    assert dict(zip(TRIGGERS.columns, row, strict=True))["variant"] == "b"
    assert dict(zip(TRIGGERS.columns, trigger_row(a_trigger(None).to_json(), OPTIONS), strict=True))["variant"] is None


def test_suppression_row_is_the_trigger_plus_reason_detail_and_decision_time() -> None:
    suppression = Suppression(
        trigger=a_trigger(), reason=SuppressionReason.QUIET_HOURS, detail="22:00-08:00", decided_at=NOW
    )
    row = suppression_row(suppression.to_json(), OPTIONS)
    named = dict(zip(SUPPRESSIONS.columns, row, strict=True))
    assert named["trigger_id"] == "t1"
    assert named["reason"] == "quiet_hours"
    assert named["detail"] == "22:00-08:00"
    assert named["decided_at"] == NOW
    assert orjson.loads(named["context"]) == {"items": [1]}
    with pytest.raises(Unusable, match=r"invalid Suppression: trigger\.triggerId: Field required"):
        suppression_row(b'{"trigger": {}}', OPTIONS)


def test_segment_change_row() -> None:
    change = SegmentChange(person_id="ana", segment="vip", change="enter", at=NOW)
    assert dict(zip(SEGMENT_CHANGES.columns, segment_change_row(change.to_json(), OPTIONS), strict=True)) == {
        "segment": "vip",
        "person_id": "ana",
        "at": NOW,
        "change": "enter",
    }
    with pytest.raises(Unusable, match="change"):
        segment_change_row(b'{"person_id": "ana", "segment": "vip", "change": "stay"}', OPTIONS)


def test_profile_snapshot_uses_event_count_as_version_and_keeps_the_whole_document() -> None:
    document = {
        "person_id": "ana",
        "first_seen": "2026-10-01T10:00:00Z",
        "last_seen": "2026-11-02T10:00:00+01:00",
        "event_count": 42,
        "order_count": 3,
        "revenue": 120.5,
        "timezone": "Europe/Paris",
        "locale": "fr-FR",
        "a_field_added_later": {"anything": True},
    }
    raw = orjson.dumps(document)
    named = dict(zip(PROFILE_SNAPSHOTS.columns, profile_snapshot_row(raw, None, OPTIONS) or [], strict=True))
    assert named["version"] == named["event_count"] == 42
    assert named["last_seen"] == datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
    assert named["revenue"] == 120.5
    assert named["timezone"] == "Europe/Paris"
    assert orjson.loads(named["profile"]) == document


def test_profile_snapshot_reads_odd_fields_defensively() -> None:
    raw = orjson.dumps({"first_seen": "yesterday", "event_count": -3, "order_count": True, "revenue": "lots"})
    named = dict(zip(PROFILE_SNAPSHOTS.columns, profile_snapshot_row(raw, b"ben", OPTIONS) or [], strict=True))
    assert named["person_id"] == "ben"  # from the message key when the document lacks it
    assert (named["first_seen"], named["event_count"], named["order_count"], named["revenue"]) == (None, 0, 0, 0.0)
    assert profile_snapshot_row(None, b"ben", OPTIONS) is None  # a tombstone
    with pytest.raises(Unusable, match="not a JSON object"):
        profile_snapshot_row(b"[1, 2]", None, OPTIONS)
    with pytest.raises(Unusable, match="without a person_id"):
        profile_snapshot_row(b"{}", None, OPTIONS)


def nested(depth: int) -> str:
    """JSON objects `depth` deep, written out (orjson itself refuses to write more than 255 levels)."""
    return '{"a":' * (depth - 1) + "{}" + "}" * (depth - 1)


def with_field(document: bytes, name: str, raw_json: str) -> bytes:
    return document[:-1] + f',"{name}":{raw_json}}}'.encode()


def test_every_input_is_read_within_the_limits() -> None:
    limits = Limits()
    deep = nested(300)
    with pytest.raises(Unusable, match="nested deeper"):
        trigger_row(with_field(a_trigger().to_json(), "context", deep), OPTIONS)
    with pytest.raises(Unusable, match="nested deeper"):
        profile_snapshot_row(with_field(b'{"person_id": "ana"}', "traits", deep), None, OPTIONS)
    with pytest.raises(Unusable, match="over a limit"):
        profile_snapshot_row(b'{"person_id": "ana", "x": "' + b"y" * limits.batch_bytes + b'"}', None, OPTIONS)
    with pytest.raises(Unusable, match="bytes"):
        segment_change_row(b" " * (limits.event_bytes + 1), OPTIONS)
    # An event over a limit is the worker's to dead-letter: the sink stores nothing of it.
    event = orjson.dumps({"type": "track", "event": "X", "userId": "ana", "timestamp": NOW.isoformat()})
    assert event_row(with_field(event, "properties", deep), "events", 0, 1, OPTIONS) is None
    strict = RowOptions(b"k", limits=Limits(json_depth=4))
    assert event_row(with_field(event, "properties", nested(4)), "events", 0, 1, strict) is None
    assert event_row(with_field(event, "properties", nested(3)), "events", 0, 1, strict) is not None


def letter(value: str, key: str | None = "ana", reason: str = "r") -> bytes:
    return (
        DeadLetter(reason=reason, topic="events", partition=0, offset=1, key=key, value=value, received_at=NOW)
        .model_dump_json()
        .encode()
    )


def test_dead_letters_are_cut_to_dead_letter_bytes_and_deep_values_kept_as_text() -> None:
    limits = Limits(dead_letter_bytes=256)
    options = RowOptions(b"k", limits=limits)
    named = dict(zip(DEAD_LETTERS.columns, dead_letter_row(letter("é" * 400, reason="r" * 999), options), strict=True))
    assert named["value"] == "é" * 128 and named["reason"] == "r" * 256
    deep = nested(300)  # within the bytes, too deep to walk or to write again: scanned as text
    assert dead_letter_row(letter(deep), OPTIONS)[DEAD_LETTERS.columns.index("value")] == deep
    with pytest.raises(Unusable, match="over a limit"):
        dead_letter_row(letter("x" * (limits.event_bytes + 6 * limits.dead_letter_bytes)), options)
    with pytest.raises(Unusable, match="invalid DeadLetter"):
        dead_letter_row(b'{"reason": "r"}', OPTIONS)


def test_a_dead_letter_names_its_people_by_key_and_by_the_ids_in_its_value() -> None:
    row = dead_letter_row(letter('{"userId": "ben", "anonymousId": "anon-1"}', key="ana"), OPTIONS)
    assert letter_people(row) == ["ana", "ben", "anon-1"]
    email_key = dead_letter_row(letter("not json", key="ana@example.com"), OPTIONS)
    assert letter_people(email_key) == [OPTIONS.person("ana@example.com")]
    assert OPTIONS.person("ana@example.com").startswith("contact:email:")
    assert letter_people(dead_letter_row(letter("[]", key=None), OPTIONS)) == []


def test_a_person_id_that_is_an_address_is_stored_as_its_contact_id_in_every_table() -> None:
    email = "ana@example.com"
    stored = OPTIONS.person(email)
    event = {"type": "track", "event": "X", "userId": email, "timestamp": NOW.isoformat()}
    rows = {
        EVENTS: event_row(orjson.dumps(event), "events", 0, 1, OPTIONS),
        TRIGGERS: trigger_row(a_trigger().model_copy(update={"person_id": email}).to_json(), OPTIONS),
        PROFILE_SNAPSHOTS: profile_snapshot_row(orjson.dumps({"person_id": email}), None, OPTIONS),
        SEGMENT_CHANGES: segment_change_row(
            SegmentChange(person_id=email, segment="vip", change="enter", at=NOW).to_json(), OPTIONS
        ),
    }
    for spec, row in rows.items():
        assert row is not None
        assert dict(zip(spec.columns, row, strict=True))["person_id"] == stored, spec.table
        assert email not in orjson.dumps(row, default=str).decode(), spec.table
    plain = RowOptions(b"k", plain_contacts=True)
    assert event_row(orjson.dumps(event), "events", 0, 1, plain)[1] == email  # type: ignore[index]


def test_an_event_dated_far_past_the_readers_clock_is_no_row_as_the_worker_drops_it() -> None:
    document = {"type": "track", "event": "Product Viewed", "userId": "ana", "messageId": "m1",
                "timestamp": "2027-12-01T00:00:00Z", "properties": {"product_id": "p"}}  # fmt: skip
    now = datetime(2026, 12, 1, tzinfo=UTC)
    assert event_row(orjson.dumps(document), "events", 0, 1, OPTIONS, now) is None
    assert (
        event_row(orjson.dumps({**document, "timestamp": "9999-12-31T23:59:59Z"}), "events", 0, 2, OPTIONS, now) is None
    )
    assert event_row(orjson.dumps({**document, "timestamp": "2026-11-30T00:00:00Z"}), "events", 0, 3, OPTIONS, now)
