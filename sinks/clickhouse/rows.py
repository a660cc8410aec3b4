"""Turning Kafka messages into ClickHouse rows: pure functions, one per table.

Every message is read within `settings.limits` before anything walks it. A row function returns None
when there is nothing to store (an event the worker dead-letters itself, a profile tombstone) and raises
`Unusable` for a message that cannot be stored, which the sink dead-letters with the reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError

from schemas.consent import ConsentChange
from schemas.deliveries import DeliveryRecord
from schemas.events import InvalidEvent, UtcDatetime, decode_document, parse_event
from schemas.limits import DEFAULT_LIMITS, Limits, decode_object, describe_validation_error, truncated, within_depth
from schemas.segments import SegmentChange
from schemas.settings import Settings
from schemas.triggers import DeadLetter, Suppression, Trigger
from sinks.clickhouse.digests import hash_contacts, hash_emails_in_text, stored_id


class Unusable(ValueError):
    """A message no row can be made of; the message says why, for the dead letter."""


@dataclass(frozen=True)
class RowOptions:
    """How rows are made: the key contacts are hashed with (unless plain), and the bounds on input."""

    hash_key: bytes
    plain_contacts: bool = False
    limits: Limits = DEFAULT_LIMITS

    @classmethod
    def of(cls, settings: Settings) -> RowOptions:
        return cls(settings.hash_key, settings.clickhouse_plain_contacts, settings.limits)

    def person(self, person_id: str) -> str:
        """A person id as stored (see sinks.clickhouse.digests.stored_id)."""
        return person_id if self.plain_contacts else stored_id(person_id, self.hash_key)


@dataclass(frozen=True)
class TableSpec:
    """A ClickHouse table and the columns a row of it is written with."""

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
CONSENT_CHANGES = TableSpec(
    "consent_changes",
    ("person_id", "channel", "state", "previous", "source", "at", "message_id", "ip", "user_agent", "trigger_id"),
)
DELIVERIES = TableSpec(
    "deliveries",
    ("trigger_id", "state", "rule", "channel", "provider", "attempt", "at", "reason", "provider_message_id"),
)
DEAD_LETTERS = TableSpec("dead_letters", ("topic", "partition", "offset", "key", "reason", "value", "received_at"))

# Where each table keeps the person, for dropping rows of people erased before their rows arrived.
# A dead letter's key is the person the producer meant (the events topic is keyed by person).
PERSON_COLUMN: dict[str, int] = {
    **{
        spec.table: spec.columns.index("person_id")
        for spec in (EVENTS, TRIGGERS, SUPPRESSIONS, SEGMENT_CHANGES, CONSENT_CHANGES, PROFILE_SNAPSHOTS)
    },
    DEAD_LETTERS.table: DEAD_LETTERS.columns.index("key"),
}
# Ids in a dead letter's value that name the person it is about.
LETTER_ID_FIELDS = ("userId", "anonymousId", "previousId", "person_id")


def _json_text(document: Any, options: RowOptions, sms: bool = False) -> str:
    """A JSON document as stored: contacts hashed unless the operator asked for plain contacts."""
    return orjson.dumps(document if options.plain_contacts else hash_contacts(document, options.hash_key, sms)).decode()


def _decoded(value: bytes | None, limits: Limits) -> dict[str, Any]:
    try:
        return decode_document(value, limits)
    except InvalidEvent as error:
        raise Unusable(str(error)) from None


def _model(model: type[Any], document: dict[str, Any]) -> Any:
    try:
        return model.model_validate(document)
    except ValidationError as error:
        raise Unusable(f"invalid {model.__name__}: {describe_validation_error(error)}") from None


def event_row(
    value: bytes | None,
    topic: str,
    partition: int,
    offset: int,
    options: RowOptions,
    received_at: datetime | None = None,
) -> list[Any] | None:
    """The events row of one message, or None for a message the worker sends to the dead-letter topic
    (the same limits, a timestamp too far past `received_at`, the reader's clock, included)."""
    try:
        event = parse_event(value, options.limits, received_at=received_at)
    except InvalidEvent:
        return None
    # A producer that sets no messageId still gets a stable key: where the message sits in the log.
    message_id = event.message_id or f"{topic}/{partition}/{offset}"
    name = event.event or event.name or ""
    sms = name.startswith("SMS ") or event.context.channel == "sms"
    return [
        message_id,
        options.person(event.person_id),
        event.type,
        name,
        event.timestamp,
        event.received_at,
        _json_text(event.properties, options, sms),
        # Segment clients often repeat the traits (email, phone) in context.traits.
        _json_text(event.context.model_dump(mode="json", exclude_none=True), options, sms),
        topic,
        partition,
        offset,
    ]


def trigger_row(value: bytes | None, options: RowOptions) -> list[Any]:
    """The row of the triggers table for one trigger message."""
    trigger: Trigger = _model(Trigger, _decoded(value, options.limits))
    return _trigger_columns(trigger, options)


def _trigger_columns(trigger: Trigger, options: RowOptions) -> list[Any]:
    # The trigger's `address` (the email or phone it goes to) has no column: senders read it from the
    # topic, dashboards never need it. Its context can still carry contacts, hashed like everywhere else.
    return [
        trigger.trigger_id,
        trigger.rule,
        options.person(trigger.person_id),
        trigger.channel.value,
        trigger.template_id,
        trigger.due_at,
        trigger.fired_at,
        trigger.cause_event_id,
        trigger.variant,
        _json_text(trigger.context, options, trigger.channel.value == "sms"),
    ]


def suppression_row(value: bytes | None, options: RowOptions) -> list[Any]:
    """The row of the suppressions table for one suppression message: the trigger, and why it was not sent."""
    suppression: Suppression = _model(Suppression, _decoded(value, options.limits))
    return [
        *_trigger_columns(suppression.trigger, options),
        suppression.reason.value,
        suppression.detail,
        suppression.decided_at,
    ]


def segment_change_row(value: bytes | None, options: RowOptions) -> list[Any]:
    """The row of the segment changes table for one segment change message."""
    change: SegmentChange = _model(SegmentChange, _decoded(value, options.limits))
    return [change.segment, options.person(change.person_id), change.at, change.change]


def consent_change_row(value: bytes | None, options: RowOptions) -> list[Any]:
    """The row of the consent changes table for one consent change message."""
    change: ConsentChange = _model(ConsentChange, _decoded(value, options.limits))
    return [
        options.person(change.person_id),
        change.channel,
        change.state.value,
        change.previous.value if change.previous else None,
        change.source.value,
        change.at,
        change.message_id or "",
        change.ip,
        change.user_agent,
        change.trigger_id,
    ]


def delivery_row(value: bytes | None, options: RowOptions) -> list[Any]:
    """The row of the deliveries table for one delivery record."""
    record: DeliveryRecord = _model(DeliveryRecord, _decoded(value, options.limits))
    return [
        record.trigger_id,
        record.state.value,
        record.rule,
        record.channel.value,
        record.provider,
        record.attempt,
        record.at,
        record.reason,
        record.provider_message_id,
    ]


def profile_snapshot_row(value: bytes | None, key: bytes | None, options: RowOptions) -> list[Any] | None:
    """The snapshot row of one profile message, read field by field rather than through the Profile model:
    the model grows and a sink older than the worker must still store what it understands, keeping the
    whole document in `profile`. None (nothing to store) for a tombstone.

    A profile holds a person's whole bounded state, so it may be larger than one event: up to batch_bytes,
    nested no deeper than an event may be."""
    if not value:
        return None
    document = decode_object(value, options.limits.batch_bytes, Unusable, "profile", options.limits.json_depth)
    person_id = document.get("person_id") or document.get("personId") or (key.decode(errors="replace") if key else "")
    if not isinstance(person_id, str) or not person_id:
        raise Unusable("a profile without a person_id")
    event_count = _count(document.get("event_count", document.get("eventCount")))
    return [
        options.person(person_id),
        event_count,
        _moment(document.get("first_seen", document.get("firstSeen"))),
        _moment(document.get("last_seen", document.get("lastSeen"))),
        event_count,
        _count(document.get("order_count", document.get("orderCount"))),
        _amount(document.get("revenue")),
        _text(document.get("timezone")),
        _text(document.get("locale")),
        value.decode(errors="replace") if options.plain_contacts else _json_text(document, options),
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


def dead_letter_row(value: bytes | None, options: RowOptions) -> list[Any]:
    """The row of one dead letter: its key stored like a person id, its value cut to dead_letter_bytes and
    hashed (a letter is written by anyone who can produce to the topic, so it is bounded here again)."""
    limits = options.limits
    if not value:
        raise Unusable("empty dead letter")
    # The kept value is cut to dead_letter_bytes; JSON escapes can make its text up to six times longer.
    most = limits.event_bytes + 6 * limits.dead_letter_bytes
    if len(value) > most:
        raise Unusable(f"over a limit: dead letter is {len(value)} bytes; at most {most}")
    try:
        letter = DeadLetter.model_validate_json(value)
    except ValidationError as error:
        raise Unusable(f"invalid DeadLetter: {describe_validation_error(error)}") from None
    text = _cut(letter.value, limits)
    reason = _cut(letter.reason, limits)
    key = None if letter.key is None else options.person(_cut(letter.key, limits))
    kept = text if options.plain_contacts else _hashed_letter(text, options)
    return [letter.topic, letter.partition, letter.offset, key, reason, kept, letter.received_at]


def _cut(text: str, limits: Limits) -> str:
    return truncated(text.encode(errors="replace"), limits).decode(errors="replace")


def _hashed_letter(text: str, options: RowOptions) -> str:
    # A dead letter is whatever a producer sent: JSON that failed validation is hashed field by field,
    # anything else (or JSON nested too deep to walk, or holding what cannot be written back) has at
    # least its email addresses hashed.
    try:
        document = orjson.loads(text)
    except orjson.JSONDecodeError:
        return hash_emails_in_text(text, options.hash_key)
    if not isinstance(document, dict | list) or not within_depth(document, options.limits.json_depth):
        return hash_emails_in_text(text, options.hash_key)
    try:
        rewritten = _json_text(document, options)
    except orjson.JSONEncodeError:
        return hash_emails_in_text(text, options.hash_key)
    return hash_emails_in_text(rewritten, options.hash_key)


def letter_people(row: list[Any]) -> list[str]:
    """Who a dead-letter row is about, as stored: its key, and the ids its value names when it is JSON."""
    people = [str(row[PERSON_COLUMN[DEAD_LETTERS.table]] or "")]
    value = row[DEAD_LETTERS.columns.index("value")]
    try:
        document = orjson.loads(value)
    except orjson.JSONDecodeError:
        return people
    if isinstance(document, dict):
        people.extend(found for name in LETTER_ID_FIELDS if isinstance(found := document.get(name), str))
    return [person for person in people if person]
