"""SendGrid and Twilio: signatures with keys made here, and payload -> event document mappings."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from schemas.consent import sms_keyword_consent
from schemas.events import Event
from schemas.limits import DEFAULT_LIMITS
from schemas.privacy import contact_person_id
from streams.collector import sendgrid, twilio

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
KEY = b"webhook-test-key"
LENGTH = DEFAULT_LIMITS.reply_text_length


def sign_sendgrid(private_key: ec.EllipticCurvePrivateKey, timestamp: str, body: bytes) -> str:
    return base64.b64encode(private_key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))).decode()


@pytest.fixture(scope="module")
def private_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def test_sendgrid_public_key_loads_as_base64_der_and_pem(private_key: ec.EllipticCurvePrivateKey) -> None:
    public = private_key.public_key()
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert sendgrid.load_public_key(base64.b64encode(der).decode()).public_numbers() == public.public_numbers()
    assert sendgrid.load_public_key(pem.decode()).public_numbers() == public.public_numbers()
    with pytest.raises(ValueError):
        sendgrid.load_public_key("not a key")


def test_sendgrid_signature(private_key: ec.EllipticCurvePrivateKey) -> None:
    public = private_key.public_key()
    body = b'[{"event":"open"}]'
    signature = sign_sendgrid(private_key, "1700000000", body)
    assert sendgrid.signature_valid(public, signature, "1700000000", body)
    assert not sendgrid.signature_valid(public, signature, "1700000001", body)
    assert not sendgrid.signature_valid(public, signature, "1700000000", body + b" ")
    assert not sendgrid.signature_valid(public, "bm90IGEgc2lnbmF0dXJl", "1700000000", body)
    assert not sendgrid.signature_valid(public, "%%%", "1700000000", body)
    assert not sendgrid.signature_valid(public, None, "1700000000", body)
    other = ec.generate_private_key(ec.SECP256R1())
    assert not sendgrid.signature_valid(public, sign_sendgrid(other, "1700000000", body), "1700000000", body)


def test_sendgrid_mapping() -> None:
    documents, skipped = sendgrid.map_events(
        [
            {"event": "delivered", "email": "Ann@x.com", "timestamp": 1700000000, "sg_event_id": "e1"},
            {
                "event": "click",
                "email": "ann@x.com",
                "timestamp": 1700000001,
                "url": "https://shop/cart",
                "person_id": "u-7",
                "trigger_id": "t-1",
                "sg_message_id": "m-1",
                "sg_event_id": "e2",
            },
            {"event": "spamreport", "email": "ann@x.com", "timestamp": 1700000002},
            {"event": "processed", "email": "ann@x.com", "timestamp": 1700000003},
            {"event": "bounce", "timestamp": 1700000004},
            "junk",
        ],
        KEY,
    )
    events = {index: Event.model_validate(document) for index, document in documents}
    assert sorted(events) == [0, 1, 2]
    # Without a person custom arg the event is the address's contact (normalised: Ann@x.com is ann@x.com).
    ann = contact_person_id("email", "ann@x.com", KEY)
    assert (events[0].event, events[0].user_id, events[0].message_id) == ("Email Delivered", ann, "sendgrid:e1")
    assert events[0].properties["email"] == "Ann@x.com"
    assert events[2].user_id == ann
    assert events[0].timestamp == datetime.fromtimestamp(1700000000, UTC)
    assert events[1].event == "Email Clicked"
    assert events[1].user_id == "u-7"
    assert events[1].properties["trigger_id"] == "t-1"
    assert events[1].properties["sg_message_id"] == "m-1"
    assert events[1].properties["url"] == "https://shop/cart"
    assert (events[2].event, events[2].properties["reason"]) == ("Email Unsubscribed", "spamreport")
    assert [(entry.index, entry.reason) for entry in skipped] == [
        (4, "no person_id/userId custom arg and no email address"),
        (5, "entry is not a JSON object"),
    ]
    with pytest.raises(ValueError, match="JSON array"):
        sendgrid.map_events({"event": "open"}, KEY)


def test_twilio_signature_matches_the_documented_algorithm() -> None:
    # Twilio's documented example: URL, form and token give this signature.
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    form = [
        ("CallSid", "CA1234567890ABCDE"),
        ("Caller", "+12349013030"),
        ("Digits", "1234"),
        ("From", "+12349013030"),
        ("To", "+18005551212"),
    ]
    token = "12345"
    assert twilio.expected_signature(token, url, form) == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
    assert twilio.signature_valid(token, "0/KCTR6DLpKmkAf8muzZqo1nDgQ=", url, list(reversed(form)))
    assert not twilio.signature_valid(token, "0/KCTR6DLpKmkAf8muzZqo1nDgQ=", url + "&x=1", form)
    assert not twilio.signature_valid("other", "0/KCTR6DLpKmkAf8muzZqo1nDgQ=", url, form)
    assert not twilio.signature_valid(token, None, url, form)


@pytest.mark.parametrize(
    ("body", "consent"),
    [("STOP", "opted_out"), (" stop ", "opted_out"), ("退订", "opted_out"), ("td", "opted_out"),
     ("Start", "opted_in"), ("YES", "opted_in"), ("订阅", "opted_in"), ("stop please", None), ("thanks", None)],
)  # fmt: skip
def test_consent_keywords(body: str, consent: str | None) -> None:
    assert sms_keyword_consent(body) == consent


def test_twilio_inbound_stop_gives_reply_and_opt_out() -> None:
    documents = twilio.map_inbound(
        {"MessageSid": "SM1", "From": "+14155552671", "Body": "STOP"}, {}, NOW, KEY, reply_text_length=LENGTH
    )
    reply, identify = (Event.model_validate(document) for document in documents)
    contact = contact_person_id("phone", "+14155552671", KEY)
    assert (reply.type, reply.event, reply.user_id) == ("track", "SMS Replied", contact)
    assert (identify.user_id, identify.traits["phone"]) == (contact, "+14155552671")
    assert reply.properties["from"] == "+14155552671"
    assert reply.properties["body"] == "STOP"
    assert (identify.type, identify.traits["sms_consent"]) == ("identify", "opted_out")
    assert reply.message_id != identify.message_id


def test_twilio_inbound_plain_reply_has_no_identify() -> None:
    documents = twilio.map_inbound(
        {"MessageSid": "SM2", "From": "+14155552671", "Body": "when?"}, {}, NOW, KEY, reply_text_length=LENGTH
    )
    assert [document["type"] for document in documents] == ["track"]
    with pytest.raises(ValueError, match="MessageSid"):
        twilio.map_inbound({"From": "+1"}, {}, NOW, KEY, reply_text_length=LENGTH)


def test_twilio_status_only_delivered_counts() -> None:
    form = {"MessageSid": "SM3", "MessageStatus": "delivered", "To": "+14155552671"}
    (document,) = twilio.map_status(form, {"trigger_id": "t-9", "person_id": "u-1"}, NOW, KEY)
    event = Event.model_validate(document)
    assert (event.event, event.user_id, event.properties["trigger_id"]) == ("SMS Delivered", "u-1", "t-9")
    assert twilio.map_status({**form, "MessageStatus": "sent"}, {}, NOW, KEY) == []
    (anonymous,) = twilio.map_status(form, {}, NOW, KEY)
    assert anonymous["userId"] == contact_person_id("phone", "+14155552671", KEY)


@pytest.mark.parametrize("body", ["STOP", "退订", "thanks, but no"])
def test_twilio_inbound_without_person_is_the_numbers_contact(body: str) -> None:
    form = {"MessageSid": "SM4", "From": "+1 (415) 555-2671", "Body": body}
    documents = twilio.map_inbound(form, {}, NOW, KEY, reply_text_length=LENGTH)
    assert {document["userId"] for document in documents} == {contact_person_id("phone", "+14155552671", KEY)}
    # A person named by the sender's callback URL is kept; the key makes the digest.
    named = twilio.map_inbound(form, {"person_id": "u-9"}, NOW, KEY, reply_text_length=LENGTH)
    assert {document["userId"] for document in named} == {"u-9"}
    assert twilio.map_inbound(form, {}, NOW, b"other", reply_text_length=LENGTH)[0]["userId"] != documents[0]["userId"]


def test_contact_ids_cannot_come_in_from_outside() -> None:
    forged = contact_person_id("phone", "+14155552671", KEY)
    with pytest.raises(ValueError, match="contact ids"):
        twilio.map_inbound(
            {"MessageSid": "SM5", "From": "+14155552671", "Body": "hi"},
            {"person_id": forged},
            NOW,
            KEY,
            reply_text_length=LENGTH,
        )
    _, skipped = sendgrid.map_events(
        [{"event": "unsubscribe", "email": "a@x.com", "timestamp": 1700000000, "person_id": forged}], KEY
    )
    assert [entry.reason for entry in skipped] == ["person_id: contact ids are the collector's own, not a custom arg"]


@pytest.mark.parametrize("kind", ["unsubscribe", "group_unsubscribe", "spamreport", "bounce"])
def test_sendgrid_events_without_person_are_the_addresss_contact(kind: str) -> None:
    documents, skipped = sendgrid.map_events(
        [{"event": kind, "email": " Ann@X.com ", "timestamp": 1700000000, "asm_group_id": 4}], KEY
    )
    assert skipped == []
    ((_, document),) = documents
    assert document["userId"] == contact_person_id("email", "ann@x.com", KEY)
    assert document["properties"]["email"] == " Ann@X.com "  # as given: the sink stores it hashed


def test_sendgrid_entries_that_would_crash_are_skipped_with_a_reason() -> None:
    deep: object = "x"
    for _ in range(3000):
        deep = [deep]
    documents, skipped = sendgrid.map_events(
        [
            {"event": deep, "email": "a@x.com", "timestamp": 1700000000},
            {"event": "open", "email": "a@x.com", "timestamp": 1700000000, "person_id": deep},
            {"event": "open", "email": "a@x.com", "timestamp": 1e300},
            {"event": "open", "email": "a@x.com", "timestamp": 1700000000, "trigger_id": {"a": 1}},
        ],
        KEY,
    )
    assert documents == []
    assert [(entry.index, entry.reason) for entry in skipped] == [
        (1, "person_id: not a string or a number"),
        (2, "timestamp: 1e+300 is not a Unix time of this calendar"),
        (3, "trigger_id: not a string or a number"),
    ]


def test_sendgrid_timestamp_freshness() -> None:
    now = datetime.fromtimestamp(1_700_000_000, UTC)
    assert sendgrid.stale_timestamp("1699999800", now, 300) is None
    assert sendgrid.stale_timestamp("1700000299", now, 300) is None
    assert "at most 300s" in (sendgrid.stale_timestamp("1699999000", now, 300) or "")
    assert "at most 300s" in (sendgrid.stale_timestamp("1700001000", now, 300) or "")  # from the future
    for junk in (None, "", "soon", "nan", "inf"):
        assert sendgrid.stale_timestamp(junk, now, 300) is not None
