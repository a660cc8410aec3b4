"""Contacts as ClickHouse stores them: digests, found at any depth, normalised so one address gives one digest."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import orjson

from schemas.triggers import Channel, DeadLetter, Trigger
from sinks.contacts import hash_contacts, hash_email, hash_emails_in_text, hash_phone
from sinks.rows import (
    DEAD_LETTERS,
    EVENTS,
    PROFILE_SNAPSHOTS,
    TRIGGERS,
    dead_letter_row,
    event_row,
    profile_snapshot_row,
    trigger_row,
)

NOW = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
ANA_DIGEST = hashlib.sha256(b"ana@example.com").hexdigest()


def test_an_email_is_hashed_after_trimming_and_lowercasing() -> None:
    assert hash_email(" Ana@Example.COM ") == hash_email("ana@example.com") == ANA_DIGEST


def test_a_phone_number_is_hashed_on_its_digits_keeping_the_plus() -> None:
    assert hash_phone("+1 (555) 123-0000") == hash_phone("+15551230000") == hashlib.sha256(b"+15551230000").hexdigest()


def test_a_digest_is_not_hashed_again() -> None:
    assert hash_email(ANA_DIGEST) == ANA_DIGEST


def test_contacts_are_hashed_at_any_depth_and_nothing_else_changes() -> None:
    document = {
        "email": "ana@example.com",
        "traits": {"phone": "+15551230000", "name": "Ana"},
        "items": [{"email": "ana@example.com", "sku": "1"}],
        "phone": 15551230000,
        "from": "+15551230000",
        "count": 3,
    }
    hashed = hash_contacts(document)
    assert hashed == {
        "email": ANA_DIGEST,
        "traits": {"phone": hash_phone("+15551230000"), "name": "Ana"},
        "items": [{"email": ANA_DIGEST, "sku": "1"}],
        "phone": hash_phone("15551230000"),
        "from": "+15551230000",  # only an SMS's `from` is a phone number
        "count": 3,
    }
    assert hash_contacts({"from": "+15551230000"}, sms=True) == {"from": hash_phone("+15551230000")}
    assert document["email"] == "ana@example.com"  # a copy, not in place


def test_emails_inside_text_that_is_not_json() -> None:
    assert hash_emails_in_text("bad line from ana@example.com!") == f"bad line from {ANA_DIGEST}!"


def _event(**extra: object) -> bytes:
    return orjson.dumps(
        {
            "type": "track",
            "event": "Email Opened",
            "userId": "ana",
            "timestamp": NOW.isoformat(),
            "properties": {"email": "ana@example.com", "trigger_id": "t1"},
            "context": {"traits": {"email": "ana@example.com"}, "channel": "email"},
            **extra,
        }
    )


def test_event_rows_hash_properties_and_context_unless_plain_contacts_are_asked_for() -> None:
    named = dict(zip(EVENTS.columns, event_row(_event(), "events", 0, 1) or [], strict=True))
    assert orjson.loads(named["properties"]) == {"email": ANA_DIGEST, "trigger_id": "t1"}
    assert orjson.loads(named["context"]) == {"traits": {"email": ANA_DIGEST}, "channel": "email"}
    plain = dict(zip(EVENTS.columns, event_row(_event(), "events", 0, 1, plain_contacts=True) or [], strict=True))
    assert orjson.loads(plain["properties"])["email"] == "ana@example.com"


def test_an_sms_reply_s_sender_number_is_hashed() -> None:
    raw = orjson.dumps(
        {
            "type": "track",
            "event": "SMS Replied",
            "userId": "ana",
            "timestamp": NOW.isoformat(),
            "properties": {"body": "STOP", "from": "+15551230000"},
        }
    )
    named = dict(zip(EVENTS.columns, event_row(raw, "events", 0, 1) or [], strict=True))
    assert orjson.loads(named["properties"]) == {"body": "STOP", "from": hash_phone("+15551230000")}


def test_profile_snapshots_keep_the_document_with_contacts_hashed() -> None:
    raw = orjson.dumps(
        {"person_id": "ana", "event_count": 2, "email": "ana@example.com", "traits": {"phone": "+15551230000"}}
    )
    named = dict(zip(PROFILE_SNAPSHOTS.columns, profile_snapshot_row(raw) or [], strict=True))
    assert orjson.loads(named["profile"]) == {
        "person_id": "ana",
        "event_count": 2,
        "email": ANA_DIGEST,
        "traits": {"phone": hash_phone("+15551230000")},
    }
    plain = dict(zip(PROFILE_SNAPSHOTS.columns, profile_snapshot_row(raw, plain_contacts=True) or [], strict=True))
    assert plain["profile"] == raw.decode()


def test_a_trigger_s_address_is_not_stored_and_its_context_is_hashed() -> None:
    trigger = Trigger(
        trigger_id="t1",
        rule="welcome",
        person_id="ana",
        channel=Channel.EMAIL,
        template_id="welcome-1",
        due_at=NOW,
        fired_at=NOW,
        address="ana@example.com",
        context={"email": "ana@example.com"},
    )
    row = trigger_row(trigger.to_json()) or []
    assert "ana@example.com" not in orjson.dumps(row, default=str).decode()
    assert orjson.loads(dict(zip(TRIGGERS.columns, row, strict=True))["context"]) == {"email": ANA_DIGEST}


def test_dead_letters_keep_the_key_and_have_contacts_hashed_json_or_not() -> None:
    def letter(value: str) -> bytes:
        return (
            DeadLetter(reason="r", topic="events", partition=0, offset=1, key="ana", value=value, received_at=NOW)
            .model_dump_json()
            .encode()
        )

    named = dict(
        zip(
            DEAD_LETTERS.columns, dead_letter_row(letter('{"traits": {"email": "ana@example.com"}}')) or [], strict=True
        )
    )
    assert named["key"] == "ana"
    assert orjson.loads(named["value"]) == {"traits": {"email": ANA_DIGEST}}
    broken = dict(zip(DEAD_LETTERS.columns, dead_letter_row(letter("{email: ana@example.com")) or [], strict=True))
    assert broken["value"] == "{email: " + ANA_DIGEST
