"""Contacts as ClickHouse stores them: keyed digests, found at any depth, normalised so one address gives one
digest."""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import UTC, datetime

import orjson
from hypothesis import given
from hypothesis import strategies as st

from schemas.privacy import contact_person_id
from schemas.triggers import Channel, DeadLetter, Trigger
from sinks.clickhouse.digests import hash_contacts, hash_email, hash_emails_in_text, hash_phone, stored_id
from sinks.clickhouse.rows import (
    DEAD_LETTERS,
    EVENTS,
    PROFILE_SNAPSHOTS,
    TRIGGERS,
    RowOptions,
    dead_letter_row,
    event_row,
    profile_snapshot_row,
    trigger_row,
)

NOW = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
KEY = b"unit-test-key"
OPTIONS = RowOptions(KEY)
PLAIN = RowOptions(KEY, plain_contacts=True)
ANA_DIGEST = hmac.new(KEY, b"email\x1fana@example.com", hashlib.sha256).hexdigest()


def test_an_email_is_hashed_after_trimming_and_lowercasing_with_the_key() -> None:
    assert hash_email(" Ana@Example.COM ", KEY) == hash_email("ana@example.com", KEY) == ANA_DIGEST
    assert hash_email("ana@example.com", b"another key") != ANA_DIGEST
    assert hashlib.sha256(b"ana@example.com").hexdigest() != ANA_DIGEST  # no unkeyed digest to guess against


def test_a_phone_number_is_hashed_on_its_digits_keeping_the_plus() -> None:
    expected = hmac.new(KEY, b"phone\x1f+15551230000", hashlib.sha256).hexdigest()
    assert hash_phone("+1 (555) 123-0000", KEY) == hash_phone("+15551230000", KEY) == expected


def test_a_digest_is_not_hashed_again() -> None:
    assert hash_email(ANA_DIGEST, KEY) == ANA_DIGEST


def test_a_person_id_that_is_an_address_or_a_number_is_stored_as_its_contact_id() -> None:
    assert stored_id("Ana@Example.com", KEY) == contact_person_id("email", "ana@example.com", KEY)
    assert stored_id("+1 555 123 0000", KEY) == contact_person_id("phone", "+15551230000", KEY)
    assert stored_id("ana", KEY) == "ana"
    assert stored_id("1234567890", KEY) == "1234567890"  # shop user ids are often plain numbers
    assert stored_id("anon-91d@device", KEY) == "anon-91d@device"  # no domain, no address
    contact = contact_person_id("email", "ana@example.com", KEY)
    assert stored_id(contact, KEY) == contact


def test_contacts_are_hashed_at_any_depth_and_nothing_else_changes() -> None:
    document = {
        "email": "ana@example.com",
        "traits": {"phone": "+15551230000", "name": "Ana"},
        "items": [{"email": "ana@example.com", "sku": "1"}],
        "phone": 15551230000,
        "from": "+15551230000",
        "count": 3,
    }
    hashed = hash_contacts(document, KEY)
    assert hashed == {
        "email": ANA_DIGEST,
        "traits": {"phone": hash_phone("+15551230000", KEY), "name": "Ana"},
        "items": [{"email": ANA_DIGEST, "sku": "1"}],
        "phone": hash_phone("15551230000", KEY),
        "from": "+15551230000",  # only an SMS's `from` is a phone number
        "count": 3,
    }
    assert hash_contacts({"from": "+15551230000"}, KEY, sms=True) == {"from": hash_phone("+15551230000", KEY)}
    assert hash_contacts({"userId": "ana@example.com"}, KEY) == {"userId": stored_id("ana@example.com", KEY)}
    assert document["email"] == "ana@example.com"  # a copy, not in place


def test_emails_inside_text_that_is_not_json() -> None:
    assert hash_emails_in_text("bad line from ana@example.com!", KEY) == f"bad line from {ANA_DIGEST}!"


# The expression the scan replaced: its results are the reference for texts within the length bounds.
OLD_EMAIL_IN_TEXT = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}")


def _old(text: str) -> str:
    return OLD_EMAIL_IN_TEXT.sub(lambda found: hash_email(found.group(0), KEY), text)


def test_the_text_scan_finds_what_the_old_expression_found() -> None:
    texts = [
        "ana@example.com",
        "<ana@example.com>, ben@shop.example.org.",
        "ana@example.com.",
        "a@b@example.com",
        "no address @ here, nor@here, nor @example.com",
        "ana@example.c0m ana@example.co9",
        "two:ana@example.com,ana@example.com",
        "ünï ana@example.com ✓",
        "",
    ]
    for text in texts:
        assert hash_emails_in_text(text, KEY) == _old(text), text
    assert hash_emails_in_text("<ana@example.com>, ben@shop.example.org.", KEY) == "<{}>, {}.".format(
        ANA_DIGEST, hash_email("ben@shop.example.org", KEY)
    )
    assert hash_emails_in_text("a@b@example.com", KEY) == "a@" + hash_email("b@example.com", KEY)


@given(st.text(alphabet="ab.@-_+Z9 é", max_size=60))
def test_the_text_scan_agrees_with_the_old_expression_on_any_short_text(text: str) -> None:
    assert hash_emails_in_text(text, KEY) == _old(text)


def test_the_text_scan_keeps_local_parts_and_domains_within_their_lengths() -> None:
    long_local = "x" * 100 + "@example.com"
    # The address rules allow 64 characters before the '@': only those are taken for the address.
    assert hash_emails_in_text(long_local, KEY) == "x" * 36 + hash_email("x" * 64 + "@example.com", KEY)
    blob = "A9" * 20_000  # 40 KB without an '@': nothing to replace, and no time spent backtracking over it
    assert hash_emails_in_text(blob, KEY) == blob
    assert hash_emails_in_text(blob + " ana@example.com", KEY) == blob + " " + ANA_DIGEST


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
    named = dict(zip(EVENTS.columns, event_row(_event(), "events", 0, 1, OPTIONS) or [], strict=True))
    assert orjson.loads(named["properties"]) == {"email": ANA_DIGEST, "trigger_id": "t1"}
    assert orjson.loads(named["context"]) == {"traits": {"email": ANA_DIGEST}, "channel": "email"}
    plain = dict(zip(EVENTS.columns, event_row(_event(), "events", 0, 1, PLAIN) or [], strict=True))
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
    named = dict(zip(EVENTS.columns, event_row(raw, "events", 0, 1, OPTIONS) or [], strict=True))
    assert orjson.loads(named["properties"]) == {"body": "STOP", "from": hash_phone("+15551230000", KEY)}


def test_profile_snapshots_keep_the_document_with_contacts_hashed() -> None:
    raw = orjson.dumps(
        {"person_id": "ana", "event_count": 2, "email": "ana@example.com", "traits": {"phone": "+15551230000"}}
    )
    named = dict(zip(PROFILE_SNAPSHOTS.columns, profile_snapshot_row(raw, None, OPTIONS) or [], strict=True))
    assert orjson.loads(named["profile"]) == {
        "person_id": "ana",
        "event_count": 2,
        "email": ANA_DIGEST,
        "traits": {"phone": hash_phone("+15551230000", KEY)},
    }
    plain = dict(zip(PROFILE_SNAPSHOTS.columns, profile_snapshot_row(raw, None, PLAIN) or [], strict=True))
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
    row = trigger_row(trigger.to_json(), OPTIONS)
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
            DEAD_LETTERS.columns,
            dead_letter_row(letter('{"traits": {"email": "ana@example.com"}}'), OPTIONS),
            strict=True,
        )
    )
    assert named["key"] == "ana"
    assert orjson.loads(named["value"]) == {"traits": {"email": ANA_DIGEST}}
    broken = dict(zip(DEAD_LETTERS.columns, dead_letter_row(letter("{email: ana@example.com"), OPTIONS), strict=True))
    assert broken["value"] == "{email: " + ANA_DIGEST
