from __future__ import annotations

from datetime import UTC, datetime

import orjson

from schemas.segments import SegmentChange
from schemas.triggers import Channel, Suppression, SuppressionReason, Trigger
from sinks.rows import (
    PROFILE_SNAPSHOTS,
    SEGMENT_CHANGES,
    SUPPRESSIONS,
    TRIGGERS,
    profile_snapshot_row,
    segment_change_row,
    suppression_row,
    trigger_row,
)

NOW = datetime(2026, 11, 3, 12, 0, tzinfo=UTC)


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
    row = trigger_row(a_trigger().to_json())
    assert row is not None
    assert dict(zip(TRIGGERS.columns, row, strict=True))["variant"] == "b"
    assert dict(zip(TRIGGERS.columns, trigger_row(a_trigger(None).to_json()) or [], strict=True))["variant"] is None


def test_suppression_row_is_the_trigger_plus_reason_detail_and_decision_time() -> None:
    suppression = Suppression(
        trigger=a_trigger(), reason=SuppressionReason.QUIET_HOURS, detail="22:00-08:00", decided_at=NOW
    )
    row = suppression_row(suppression.to_json())
    assert row is not None
    named = dict(zip(SUPPRESSIONS.columns, row, strict=True))
    assert named["trigger_id"] == "t1"
    assert named["reason"] == "quiet_hours"
    assert named["detail"] == "22:00-08:00"
    assert named["decided_at"] == NOW
    assert orjson.loads(named["context"]) == {"items": [1]}
    assert suppression_row(b'{"trigger": {}}') is None


def test_segment_change_row() -> None:
    change = SegmentChange(person_id="ana", segment="vip", change="enter", at=NOW)
    assert dict(zip(SEGMENT_CHANGES.columns, segment_change_row(change.to_json()) or [], strict=True)) == {
        "segment": "vip",
        "person_id": "ana",
        "at": NOW,
        "change": "enter",
    }
    assert segment_change_row(b'{"person_id": "ana", "segment": "vip", "change": "stay"}') is None


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
    named = dict(zip(PROFILE_SNAPSHOTS.columns, profile_snapshot_row(raw) or [], strict=True))
    assert named["version"] == named["event_count"] == 42
    assert named["last_seen"] == datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
    assert named["revenue"] == 120.5
    assert named["timezone"] == "Europe/Paris"
    assert orjson.loads(named["profile"]) == document


def test_profile_snapshot_reads_odd_fields_defensively() -> None:
    raw = orjson.dumps({"first_seen": "yesterday", "event_count": -3, "order_count": True, "revenue": "lots"})
    named = dict(zip(PROFILE_SNAPSHOTS.columns, profile_snapshot_row(raw, key=b"ben") or [], strict=True))
    assert named["person_id"] == "ben"  # from the message key when the document lacks it
    assert (named["first_seen"], named["event_count"], named["order_count"], named["revenue"]) == (None, 0, 0, 0.0)
    assert profile_snapshot_row(None, key=b"ben") is None  # a tombstone
    assert profile_snapshot_row(b"[1, 2]") is None
    assert profile_snapshot_row(b"{}") is None
