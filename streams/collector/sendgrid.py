"""SendGrid's event webhook: signature verification and the mapping of its events to nudgeflow events.

An event names its person when the email sender set a person_id (or userId) custom arg on the message.
Otherwise only the address is known (an unsubscribe from a list, a bounce, a spam report): the event is
then about the contact, `privacy.contact_person_id("email", address, key)`, and the worker hands it to
every person with that address.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key, load_pem_public_key

from schemas.events import EventName
from schemas.privacy import contact_person_id, is_contact_id
from schemas.profile import ConsentSource

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"

EVENT_NAMES: dict[str, EventName] = {
    "delivered": EventName.EMAIL_DELIVERED,
    "open": EventName.EMAIL_OPENED,
    "click": EventName.EMAIL_CLICKED,
    "bounce": EventName.EMAIL_BOUNCED,
    # A spam complaint must stop email as surely as an unsubscribe does.
    "spamreport": EventName.EMAIL_UNSUBSCRIBED,
    "unsubscribe": EventName.EMAIL_UNSUBSCRIBED,
    "group_unsubscribe": EventName.EMAIL_UNSUBSCRIBED,
}

# Custom args the email sender sets on each message (SendGrid echoes them as top-level keys).
PERSON_ARGS = ("person_id", "userId", "user_id")
CARRIED_ARGS = ("trigger_id", "rule", "campaign_id", "variant")


def load_public_key(text: str) -> ec.EllipticCurvePublicKey:
    """The verification key as SendGrid shows it (base64 DER) or as PEM; ValueError when it is not ECDSA."""
    stripped = text.strip()
    if stripped.startswith("-----BEGIN"):
        key = load_pem_public_key(stripped.encode())
    else:
        try:
            der = base64.b64decode(stripped, validate=True)
        except binascii.Error as error:
            raise ValueError(f"SendGrid public key is neither PEM nor base64 DER: {error}") from None
        key = load_der_public_key(der)
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError("SendGrid public key is not an ECDSA key")
    return key


def signature_valid(
    public_key: ec.EllipticCurvePublicKey, signature: str | None, timestamp: str | None, body: bytes
) -> bool:
    """Whether `signature` (base64 DER ECDSA P-256/SHA-256) signs timestamp + raw body."""
    if not signature or not timestamp:
        return False
    try:
        public_key.verify(
            base64.b64decode(signature, validate=True), timestamp.encode() + body, ec.ECDSA(hashes.SHA256())
        )
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


def stale_timestamp(timestamp: str | None, now: datetime, max_age_seconds: float) -> str | None:
    """Why a signed post's timestamp header (Unix seconds) is too old or too far ahead, else None.

    The signature covers the timestamp, so a captured post cannot be given a new one: refusing old ones
    keeps it from being replayed later."""
    try:
        signed_at = float(timestamp or "")
    except ValueError:
        return f"{TIMESTAMP_HEADER} is not a Unix time"
    age = now.timestamp() - signed_at
    if not -max_age_seconds <= age <= max_age_seconds:  # also false for NaN
        return f"{TIMESTAMP_HEADER} is {age:.0f}s from now; at most {max_age_seconds:g}s either way"
    return None


@dataclass(frozen=True)
class Skipped:
    """One webhook item that maps to no event: where it was, why, and what it was."""

    index: int
    reason: str
    raw: Any


def map_events(payload: Any, hash_key: bytes) -> tuple[list[tuple[int, dict[str, Any]]], list[Skipped]]:
    """Event documents (with the index of their webhook entry) and the entries that could not be used.

    `hash_key` makes the contact person id of an event without a person custom arg.

    Entries of kinds nudgeflow does not act on (processed, deferred, dropped, ...) are neither: they are
    ignored, as the sender expects a 2xx for them.
    """
    if not isinstance(payload, list):
        raise ValueError("the SendGrid event webhook posts a JSON array of events")
    documents: list[tuple[int, dict[str, Any]]] = []
    skipped: list[Skipped] = []
    for index, entry in enumerate(payload):
        if not isinstance(entry, dict):
            skipped.append(Skipped(index, "entry is not a JSON object", entry))
            continue
        kind = entry.get("event")
        name = EVENT_NAMES.get(kind) if isinstance(kind, str) else None
        if name is None:
            continue
        try:
            documents.append((index, _document(entry, name, hash_key)))
        except ValueError as error:
            skipped.append(Skipped(index, str(error), entry))
    return documents, skipped


def _text(entry: dict[str, Any], name: str) -> str | None:
    # Custom args are strings or numbers; anything else (str() of a deep list recurses) is refused.
    value = entry.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"{name}: not a string or a number")
    return str(value)


def _document(entry: dict[str, Any], name: EventName, hash_key: bytes) -> dict[str, Any]:
    person = next((text for text in (_text(entry, arg) for arg in PERSON_ARGS) if text), None)
    email = entry.get("email")
    if person is not None and is_contact_id(person):
        raise ValueError("person_id: contact ids are the collector's own, not a custom arg")
    if person is None:
        if not isinstance(email, str) or not email.strip():
            raise ValueError("no person_id/userId custom arg and no email address")
        person = contact_person_id("email", email, hash_key)
    timestamp = entry.get("timestamp")
    if isinstance(timestamp, bool) or not isinstance(timestamp, (int, float)):
        raise ValueError("timestamp: missing or not a Unix time")
    try:
        moment = datetime.fromtimestamp(timestamp, UTC)
    except (OverflowError, OSError, ValueError):
        raise ValueError(f"timestamp: {timestamp!r} is not a Unix time of this calendar") from None
    properties: dict[str, Any] = {arg: text for arg in CARRIED_ARGS if (text := _text(entry, arg)) is not None}
    properties["email"] = email
    for copied in ("sg_message_id", "sg_event_id", "url", "reason", "type", "status", "useragent", "ip"):
        if entry.get(copied) is not None:
            properties[copied] = entry[copied]
    if entry.get("event") == "spamreport":
        properties.setdefault("reason", "spamreport")
    document: dict[str, Any] = {
        "type": "track",
        "event": name.value,
        "userId": person,
        "timestamp": moment.isoformat(),
        "properties": properties,
        "context": {"channel": "email"},
    }
    if name is EventName.EMAIL_UNSUBSCRIBED:
        # The recipient's click or complaint as SendGrid saw it: the evidence of the withdrawn consent.
        document["context"] = {
            "channel": "email",
            "consentSource": ConsentSource.WEBHOOK,
            **{
                field: entry[key]
                for key, field in (("ip", "ip"), ("useragent", "userAgent"))
                if isinstance(entry.get(key), str)
            },
        }
    event_id = _text(entry, "sg_event_id")
    if event_id:
        # SendGrid retries a failed delivery with the same sg_event_id: a stable messageId lets dedupe drop it.
        document["messageId"] = f"sendgrid:{event_id}"
    return document
