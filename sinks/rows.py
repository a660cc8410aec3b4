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
from sinks.contacts import hash_contacts, hash_emails_in_text


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
DEAD_LETTERS = TableSpec("dead_letters", ("topic", "partition", "offset", "key", "reason", "value", "received_at"))

# Where each table keeps the person, for dropping rows of people erased before their rows arrived.
# A dead letter's key is the person the producer meant (the events topic is keyed by person).
PERSON_COLUMN: dict[str, int] = {
    **{
        spec.table: spec.columns.index("person_id")
        for spec in (EVENTS, TRIGGERS, SUPPRESSIONS, SEGMENT_CHANGES, PROFILE_SNAPSHOTS)
    },
    DEAD_LETTERS.table: DEAD_LETTERS.columns.index("key"),
}


def _json_text(document: Any, plain_contacts: bool, sms: bool = False) -> str:
    """A JSON document as stored: contacts hashed unless the operator asked for plain contacts."""
    return orjson.dumps(document if plain_contacts else hash_contacts(document, sms)).decode()


def event_row(value: bytes, topic: str, partition: int, offset: int, plain_contacts: bool = False) -> list[Any] | None:
    """The events row of one message, or None for a message the worker sends to the dead-letter topic."""
    try:
        event = parse_event(value)
    except InvalidEvent:
        return None
    # A producer that sets no messageId still gets a stable key: where the message sits in the log.
    message_id = event.message_id or f"{topic}/{partition}/{offset}"
    name = event.event or event.name or ""
    sms = name.startswith("SMS ") or event.context.channel == "sms"
    return [
        message_id,
        event.person_id,
        event.type,
        name,
        event.timestamp,
        event.received_at,
        _json_text(event.properties, plain_contacts, sms),
        # Segment clients often repeat the traits (email, phone) in context.traits.
        _json_text(event.context.model_dump(mode="json", exclude_none=True), plain_contacts, sms),
        topic,
        partition,
        offset,
    ]


def trigger_row(value: bytes, plain_contacts: bool = False) -> list[Any] | None:
    try:
        trigger = Trigger.model_validate_json(value)
    except ValidationError:
        return None
    return _trigger_columns(trigger, plain_contacts)


def _trigger_columns(trigger: Trigger, plain_contacts: bool) -> list[Any]:
    # The trigger's `address` (the email or phone it goes to) has no column: senders read it from the
    # topic, dashboards never need it. Its context can still carry contacts, hashed like everywhere else.
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
        _json_text(trigger.context, plain_contacts, trigger.channel.value == "sms"),
    ]


def suppression_row(value: bytes, plain_contacts: bool = False) -> list[Any] | None:
    try:
        suppression = Suppression.model_validate_json(value)
    except ValidationError:
        return None
    return [
        *_trigger_columns(suppression.trigger, plain_contacts),
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


def profile_snapshot_row(
    value: bytes | None, key: bytes | None = None, plain_contacts: bool = False
) -> list[Any] | None:
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
        value.decode(errors="replace") if plain_contacts else _json_text(document, plain_contacts),
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


def dead_letter_row(value: bytes, plain_contacts: bool = False) -> list[Any] | None:
    try:
        letter = DeadLetter.model_validate_json(value)
    except ValidationError:
        return None
    kept = letter.value if plain_contacts else _hashed_letter(letter.value)
    return [letter.topic, letter.partition, letter.offset, letter.key, letter.reason, kept, letter.received_at]


def _hashed_letter(text: str) -> str:
    # A dead letter is whatever a producer sent: JSON that failed validation is hashed field by field,
    # anything else has at least its email addresses hashed.
    try:
        document = orjson.loads(text)
    except orjson.JSONDecodeError:
        return hash_emails_in_text(text)
    if not isinstance(document, dict | list):
        return hash_emails_in_text(text)
    return hash_emails_in_text(_json_text(document, plain_contacts=False))
