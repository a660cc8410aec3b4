"""Email addresses and phone numbers as ClickHouse stores them: sha256 hex digests, not the contacts.

Analytics need to count and join people, never to read their addresses; the senders get addresses from
the worker's live profile, not from ClickHouse. A digest still matches itself, so "how many profiles share
this email" and lookups by a known address (hash it the same way) keep working.

The digest is unsalted on purpose: the same address gives the same digest in every database and export,
which is what matching needs. It is pseudonymisation, not anonymisation: erasure still deletes the rows.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

# Keys whose string values are contacts, wherever they appear in a JSON document (traits, properties,
# context.traits, a profile). Segment's specs and the collector use the first two.
EMAIL_KEYS = frozenset({"email", "email_address", "emailAddress"})
PHONE_KEYS = frozenset({"phone", "phone_number", "phoneNumber", "mobile", "from_number", "to_number"})
# Twilio's webhooks name the numbers `from` and `to`; in SMS events only, since elsewhere they are not contacts.
SMS_NUMBER_KEYS = frozenset({"from", "to"})

_DIGEST = re.compile(r"[0-9a-f]{64}")
# Good enough to find addresses inside text that is not JSON (dead letters); not a validator.
_EMAIL_IN_TEXT = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}")


def normalise_email(email: str) -> str:
    return email.strip().lower()


def normalise_phone(phone: str) -> str:
    # "+1 (555) 123-0000" and "+15551230000" are one number; the collector already writes E.164.
    stripped = phone.strip()
    digits = "".join(character for character in stripped if character.isdigit())
    return f"+{digits}" if stripped.startswith("+") else digits


def hash_email(email: str) -> str:
    return _digest(normalise_email(email))


def hash_phone(phone: str) -> str:
    return _digest(normalise_phone(phone))


def _digest(text: str) -> str:
    if _DIGEST.fullmatch(text):
        return text  # already a digest: hashing twice would break matching
    return hashlib.sha256(text.encode()).hexdigest()


def hash_contacts(document: Any, sms: bool = False) -> Any:
    """A copy of a JSON-like value with every email and phone value replaced by its digest, at any depth."""
    if isinstance(document, Mapping):
        return {key: _hash_entry(str(key), value, sms) for key, value in document.items()}
    if isinstance(document, list):
        return [hash_contacts(item, sms) for item in document]
    return document


def _hash_entry(key: str, value: Any, sms: bool) -> Any:
    if isinstance(value, str) and value:
        if key in EMAIL_KEYS:
            return hash_email(value)
        if key in PHONE_KEYS or (sms and key in SMS_NUMBER_KEYS):
            return hash_phone(value)
        return value
    if isinstance(value, int) and not isinstance(value, bool) and key in PHONE_KEYS:
        return hash_phone(str(value))  # a number sent as a JSON number is still a number
    return hash_contacts(value, sms)


def hash_emails_in_text(text: str) -> str:
    """Text that could not be parsed (a dead letter) with every email-looking substring replaced by its digest."""
    return _EMAIL_IN_TEXT.sub(lambda found: hash_email(found.group(0)), text)
