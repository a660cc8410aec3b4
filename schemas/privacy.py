"""Privacy requests (GDPR, CCPA, PIPL) and the audit records they leave."""

from __future__ import annotations

import functools
import hashlib
import hmac
from typing import Literal

from schemas.events import UtcDatetime, WireModel
from schemas.limits import LimitExceeded, Limits, check_id

# Person ids the collector gives a message that names only an address or a number (an SMS STOP, an
# unsubscribe): "contact:email:<digest>" or "contact:phone:<digest>". The worker hands such a message to
# every person who has that contact; no tracker may send an id of this form.
CONTACT_PREFIX = "contact:"
ContactKind = Literal["email", "phone"]


def keyed_digest(key: bytes, text: str) -> str:
    """HMAC-SHA256 hex: without the key a digest cannot be checked against guesses (phone numbers are few)."""
    digest = _keyed(key).copy()
    digest.update(text.encode())
    return digest.hexdigest()


@functools.lru_cache(maxsize=8)
def _keyed(key: bytes) -> hmac.HMAC:
    # An HMAC already keyed, copied for each digest: a third of the cost of keying it again (a dead letter
    # full of addresses hashes thousands of them).
    return hmac.new(key, digestmod=hashlib.sha256)


def person_hash(person_id: str, key: bytes) -> str:
    """How an erased person is remembered: enough to drop their late events, nothing to read back."""
    return keyed_digest(key, f"erased\x1f{person_id}")


def normalise_email(email: str) -> str:
    """An email address as it is compared and hashed: trimmed and lower-cased."""
    return email.strip().lower()


def normalise_phone(phone: str) -> str:
    """A phone number as it is compared and hashed: its digits only, with the leading + when it had one."""
    # "+1 (555) 123-0000" and "+15551230000" are one number; the collector already writes E.164.
    stripped = phone.strip()
    digits = "".join(character for character in stripped if character.isdigit())
    return f"+{digits}" if stripped.startswith("+") else digits


def contact_digest(kind: ContactKind, value: str, key: bytes) -> str:
    """The keyed digest of an email address or a phone number, normalised first so spellings match."""
    normalised = normalise_email(value) if kind == "email" else normalise_phone(value)
    return keyed_digest(key, f"{kind}\x1f{normalised}")


def contact_person_id(kind: ContactKind, value: str, key: bytes) -> str:
    """The person id of a message that names only this contact (see CONTACT_PREFIX)."""
    return f"{CONTACT_PREFIX}{kind}:{contact_digest(kind, value, key)}"


def is_contact_id(person_id: str) -> bool:
    """Whether a person id is a contact id (a hashed email address or phone number), not a person."""
    return person_id.startswith(CONTACT_PREFIX)


class ErasureRequest(WireModel):
    """On the privacy topic, keyed by the person: forget everything about them."""

    kind: Literal["erase"] = "erase"
    request_id: str
    person_id: str
    requested_at: UtcDatetime


class AuditRecord(WireModel):
    """On the audit topic: who did what to which (hashed) person, and when."""

    request_id: str
    kind: Literal["erase"]
    person_hash: str
    component: Literal["worker", "sink"]
    completed_at: UtcDatetime
    detail: str = ""


class InvalidPrivacyRequest(ValueError):
    """A message of the privacy topic that cannot be acted on; the reason goes to the dead letter."""


def parse_erasure(raw: bytes | None, limits: Limits) -> ErasureRequest:
    """An erasure request within the limits (its ids no longer than any id), or InvalidPrivacyRequest."""
    try:
        request = ErasureRequest.model_validate_json(raw or b"")
    except ValueError as error:
        raise InvalidPrivacyRequest(f"invalid privacy request: {error}") from None
    try:
        check_id("personId", request.person_id, limits)
        check_id("requestId", request.request_id, limits)
    except LimitExceeded as error:
        raise InvalidPrivacyRequest(f"invalid privacy request: {error}") from None
    if not request.person_id:
        raise InvalidPrivacyRequest("invalid privacy request: personId: empty")
    return request
