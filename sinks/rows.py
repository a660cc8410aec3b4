"""Turning Kafka messages into ClickHouse rows: pure functions, one per table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError

from schemas.events import InvalidEvent, parse_event
from schemas.triggers import DeadLetter, Trigger


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
        "context",
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
    return [
        trigger.trigger_id,
        trigger.rule,
        trigger.person_id,
        trigger.channel.value,
        trigger.template_id,
        trigger.due_at,
        trigger.fired_at,
        trigger.cause_event_id,
        orjson.dumps(trigger.context).decode(),
    ]


def dead_letter_row(value: bytes) -> list[Any] | None:
    try:
        letter = DeadLetter.model_validate_json(value)
    except ValidationError:
        return None
    return [letter.topic, letter.partition, letter.offset, letter.reason, letter.value, letter.received_at]
