"""SendGrid's event webhook: signature verification and the mapping of its events to nudgeflow events."""

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


@dataclass(frozen=True)
class Skipped:
    index: int
    reason: str
    raw: Any


def map_events(payload: Any) -> tuple[list[tuple[int, dict[str, Any]]], list[Skipped]]:
    """Event documents (with the index of their webhook entry) and the entries that could not be used.

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
        name = EVENT_NAMES.get(str(entry.get("event")))
        if name is None:
            continue
        try:
            documents.append((index, _document(entry, name)))
        except ValueError as error:
            skipped.append(Skipped(index, str(error), entry))
    return documents, skipped


def _document(entry: dict[str, Any], name: EventName) -> dict[str, Any]:
    person = next((str(entry[arg]) for arg in PERSON_ARGS if entry.get(arg)), None)
    email = entry.get("email")
    if person is None:
        if not isinstance(email, str) or not email:
            raise ValueError("no person_id/userId custom arg and no email address")
        person = email.strip().lower()
    timestamp = entry.get("timestamp")
    if isinstance(timestamp, bool) or not isinstance(timestamp, (int, float)):
        raise ValueError("timestamp: missing or not a Unix time")
    properties: dict[str, Any] = {arg: str(entry[arg]) for arg in CARRIED_ARGS if entry.get(arg) is not None}
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
        "timestamp": datetime.fromtimestamp(timestamp, UTC).isoformat(),
        "properties": properties,
        "context": {"channel": "email"},
    }
    if entry.get("sg_event_id"):
        # SendGrid retries a failed delivery with the same sg_event_id: a stable messageId lets dedupe drop it.
        document["messageId"] = f"sendgrid:{entry['sg_event_id']}"
    return document
