"""Turning Kafka messages into ClickHouse rows: pure functions, one per table."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError

from schemas.events import InvalidEvent, UtcDatetime, parse_event
from schemas.segments import SegmentChange
from schemas.triggers import DeadLetter, Suppression, Trigger


@dataclass(frozen=True)
class TableSpec:
    table: str
    columns: tuple[str, ...]


EVENTS = TableSpec(
    "events",
    (
        "message_id",
        "person_id",
        "type",
        "event",
        "timestamp",
        "received_at",
        "properties",
        "context",
        "topic",
        "partition",
        "offset",
    ),
)
TRIGGERS = TableSpec(
    "triggers",
    (
        "trigger_id",
        "rule",
        "person_id",
        "channel",
        "template_id",
        "due_at",
        "fired_at",
        "cause_event_id",
        "variant",
        "context",
    ),
)
SUPPRESSIONS = TableSpec("suppressions", (*TRIGGERS.columns, "reason", "detail", "decided_at"))
SEGMENT_CHANGES = TableSpec("segment_changes", ("segment", "person_id", "at", "change"))
PROFILE_SNAPSHOTS = TableSpec(
    "profile_snapshots",
    (
        "person_id",
        "version",
        "first_seen",
        "last_seen",
        "event_count",
        "order_count",
        "revenue",
        "timezone",
        "locale",
        "profile",
    ),
)
DEAD_LETTERS = TableSpec("dead_letters", ("topic", "partition", "offset", "reason", "value", "received_at"))


def event_row(value: bytes, topic: str, partition: int, offset: int) -> list[Any] | None:
    """The events row of one message, or None for a message the worker sends to the dead-letter topic."""
    try:
        event = parse_event(value)
    except InvalidEvent:
        return None
    # A producer that sets no messageId still gets a stable key: where the message sits in the log.
    message_id = event.message_id or f"{topic}/{partition}/{offset}"
    return [
        message_id,
        event.person_id,
        event.type,
        event.event or event.name or "",
        event.timestamp,
        event.received_at,
        orjson.dumps(event.properties).decode(),
        event.context.model_dump_json(exclude_none=True),
        topic,
        partition,
        offset,
    ]


def trigger_row(value: bytes) -> list[Any] | None:
    try:
        trigger = Trigger.model_validate_json(value)
    except ValidationError:
        return None
    return _trigger_columns(trigger)


def _trigger_columns(trigger: Trigger) -> list[Any]:
    return [
        trigger.trigger_id,
        trigger.rule,
        trigger.person_id,
        trigger.channel.value,
        trigger.template_id,
        trigger.due_at,
        trigger.fired_at,
        trigger.cause_event_id,
        trigger.variant,
        orjson.dumps(trigger.context).decode(),
    ]


def suppression_row(value: bytes) -> list[Any] | None:
    try:
        suppression = Suppression.model_validate_json(value)
    except ValidationError:
        return None
    return [
        *_trigger_columns(suppression.trigger),
        suppression.reason.value,
        suppression.detail,
        suppression.decided_at,
    ]


def segment_change_row(value: bytes) -> list[Any] | None:
    try:
        change = SegmentChange.model_validate_json(value)
    except ValidationError:
        return None
    return [change.segment, change.person_id, change.at, change.change]


def profile_snapshot_row(value: bytes | None, key: bytes | None = None) -> list[Any] | None:
    """The snapshot row of one profile message, read field by field rather than through the Profile model:
    the model grows and a sink older than the worker must still store what it understands, keeping the
    whole document in `profile`. None (nothing to store) for a tombstone or a message without a person."""
    if not value:
        return None
    try:
        document = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(document, dict):
        return None
    person_id = document.get("person_id") or document.get("personId") or (key.decode(errors="replace") if key else "")
    if not isinstance(person_id, str) or not person_id:
        return None
    event_count = _count(document.get("event_count", document.get("eventCount")))
    return [
        person_id,
        event_count,
        _moment(document.get("first_seen", document.get("firstSeen"))),
        _moment(document.get("last_seen", document.get("lastSeen"))),
        event_count,
        _count(document.get("order_count", document.get("orderCount"))),
        _amount(document.get("revenue")),
        _text(document.get("timezone")),
        _text(document.get("locale")),
        value.decode(errors="replace"),
    ]


_MOMENT = TypeAdapter(UtcDatetime)


def _moment(raw: Any) -> datetime | None:
    if raw is None:
        return None
    try:
        return _MOMENT.validate_python(raw)
    except ValidationError:
        return None


def _count(raw: Any) -> int:
    # bool is an int in Python but never a count; negative or fractional counts are not counts either.
    if isinstance(raw, bool) or not isinstance(raw, int | float) or raw < 0:
        return 0
    return int(raw)


def _amount(raw: Any) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        return 0.0
    return float(raw)


def _text(raw: Any) -> str | None:
    return raw if isinstance(raw, str) and raw else None


def dead_letter_row(value: bytes) -> list[Any] | None:
    try:
        letter = DeadLetter.model_validate_json(value)
    except ValidationError:
        return None
    return [letter.topic, letter.partition, letter.offset, letter.reason, letter.value, letter.received_at]
