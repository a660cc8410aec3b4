"""Twilio SMS webhooks: signature verification, status callbacks and inbound replies (STOP / START).

A callback names its person when the SMS sender put person_id (or userId) in the callback URL's query.
Otherwise only the number is known (a STOP sent to a number, any reply): the events are then about the
contact, `privacy.contact_person_id("phone", number, key)` - never the number itself as a person id - and
the worker hands them to every person with that number.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from schemas.consent import sms_keyword_consent
from schemas.events import EventName
from schemas.privacy import contact_person_id, is_contact_id
from schemas.profile import ConsentSource
from streams.collector.sentiment import classify_reply

SIGNATURE_HEADER = "X-Twilio-Signature"

# Query parameters the SMS sender may append to its StatusCallback URL to say which nudge a message was.
CARRIED_PARAMS = ("trigger_id", "rule", "campaign_id", "variant")


def expected_signature(auth_token: str, url: str, form: Iterable[tuple[str, str]]) -> str:
    """Twilio's signature: base64 HMAC-SHA1 (key: auth token) of the full URL + each sorted key and value."""
    material = url + "".join(key + value for key, value in sorted(form))
    digest = hmac.new(auth_token.encode(), material.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def signature_valid(auth_token: str, signature: str | None, url: str, form: Iterable[tuple[str, str]]) -> bool:
    """Whether `signature` is the one Twilio would put on this request."""
    if not signature:
        return False
    return hmac.compare_digest(expected_signature(auth_token, url, form), signature)


def _person(form: dict[str, str], params: dict[str, str], number_field: str, hash_key: bytes) -> str:
    person = params.get("person_id") or params.get("userId")
    if person:
        if is_contact_id(person):
            raise ValueError("person_id: contact ids are the collector's own, not a callback parameter")
        return person
    number = form.get(number_field, "").strip()
    if not number:
        raise ValueError(f"{number_field}: missing, and no person_id in the callback URL")
    return contact_person_id("phone", number, hash_key)


def map_status(
    form: dict[str, str], params: dict[str, str], received_at: datetime, hash_key: bytes
) -> list[dict[str, Any]]:
    """A status callback as events: only `delivered` means something to the rules today.

    Without a person_id in the callback URL the event is the contact's of the `To` number (`hash_key`)."""
    if form.get("MessageStatus") != "delivered":
        return []
    sid = form.get("MessageSid") or form.get("SmsSid")
    if not sid:
        raise ValueError("MessageSid: missing")
    properties: dict[str, Any] = {name: params[name] for name in CARRIED_PARAMS if params.get(name)}
    properties["message_sid"] = sid
    return [
        {
            "type": "track",
            "event": EventName.SMS_DELIVERED.value,
            "userId": _person(form, params, "To", hash_key),
            # Twilio's callback carries no event time; the callback arrives within seconds of delivery.
            "timestamp": received_at.isoformat(),
            "messageId": f"twilio:{sid}:delivered",
            "properties": properties,
            "context": {"channel": "sms"},
        }
    ]


def map_inbound(
    form: dict[str, str], params: dict[str, str], received_at: datetime, hash_key: bytes, *, reply_text_length: int
) -> list[dict[str, Any]]:
    """An inbound SMS as an `SMS Replied` event with its sentiment, plus an identify changing sms_consent for
    STOP / START.

    The sentiment is read from the body's first `reply_text_length` characters (the configured limit).
    Without a person_id in the callback URL both are the contact's of the `From` number (`hash_key`); the
    number itself stays in the properties (and the traits), where the sink stores it hashed."""
    sid = form.get("MessageSid") or form.get("SmsSid")
    if not sid:
        raise ValueError("MessageSid: missing")
    sender = form.get("From")
    person = _person(form, params, "From", hash_key)
    body = form.get("Body", "")
    properties: dict[str, Any] = {name: params[name] for name in CARRIED_PARAMS if params.get(name)}
    properties.update({"body": body, "from": sender, "message_sid": sid})
    # Classified once, here: the event carries the label to the worker and to ClickHouse alike.
    sentiment = classify_reply(body, reply_text_length)
    properties.update({"sentiment": sentiment.label.value, "sentimentScore": sentiment.score})
    consent = sms_keyword_consent(body)
    # A keyword reply is consent given or withdrawn by SMS: both events say so, for the proof of consent.
    context = {"channel": "sms"} if consent is None else {"channel": "sms", "consentSource": ConsentSource.SMS_KEYWORD}
    documents: list[dict[str, Any]] = [
        {
            "type": "track",
            "event": EventName.SMS_REPLIED.value,
            "userId": person,
            "timestamp": received_at.isoformat(),
            "messageId": f"twilio:{sid}",
            "properties": properties,
            "context": context,
        }
    ]
    if consent is not None:
        traits: dict[str, Any] = {"sms_consent": consent.value}
        if sender:
            traits["phone"] = sender
        documents.append(
            {
                "type": "identify",
                "userId": person,
                "timestamp": received_at.isoformat(),
                "messageId": f"twilio:{sid}:consent",
                "traits": traits,
                "context": context,
            }
        )
    return documents
