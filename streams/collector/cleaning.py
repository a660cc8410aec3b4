"""Contact details cleaned at the door: email syntax, disposable domains, phone numbers in E.164.

Nothing is dropped: a bad address is kept and flagged, so the profile shows what the person typed and the
senders can skip it.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any

import phonenumbers

# Pragmatic syntax check (no quoted local parts, no IP literals): what real sign-up forms let through.
EMAIL_PATTERN = re.compile(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
)

# The most common throwaway-inbox services; a short built-in list, not an exhaustive one.
DISPOSABLE_DOMAINS = frozenset(
    {
        "10minutemail.com",
        "discard.email",
        "dispostable.com",
        "fakeinbox.com",
        "getnada.com",
        "guerrillamail.com",
        "guerrillamail.net",
        "maildrop.cc",
        "mailinator.com",
        "mailnesia.com",
        "mintemail.com",
        "mohmal.com",
        "sharklasers.com",
        "spamgourmet.com",
        "temp-mail.org",
        "tempmail.com",
        "tempmailo.com",
        "throwawaymail.com",
        "trashmail.com",
        "yopmail.com",
    }
)


class EmailStatus(StrEnum):
    """What the check of an email address found."""

    VALID = "valid"
    INVALID = "invalid"
    DISPOSABLE = "disposable"


class PhoneStatus(StrEnum):
    """What the check of a phone number found."""

    VALID = "valid"
    INVALID = "invalid"


def clean_email(raw: str) -> tuple[str, EmailStatus]:
    """The address with surrounding blanks removed and the domain lower-cased, and its status."""
    address = raw.strip()
    if len(address) > 254 or not EMAIL_PATTERN.match(address):
        return address, EmailStatus.INVALID
    local, _, domain = address.rpartition("@")
    domain = domain.lower()
    address = f"{local}@{domain}"
    if domain in DISPOSABLE_DOMAINS or any(domain.endswith("." + known) for known in DISPOSABLE_DOMAINS):
        return address, EmailStatus.DISPOSABLE
    return address, EmailStatus.VALID


def clean_phone(raw: str, default_region: str) -> tuple[str, PhoneStatus]:
    """The number in E.164 when it is a possible, valid number; otherwise as given, flagged invalid."""
    try:
        number = phonenumbers.parse(raw, default_region)
    except phonenumbers.NumberParseException:
        return raw, PhoneStatus.INVALID
    if not phonenumbers.is_valid_number(number):
        return raw, PhoneStatus.INVALID
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164), PhoneStatus.VALID


def clean_traits(traits: dict[str, Any], default_region: str) -> dict[str, Any]:
    """Identify traits with `email` and `phone` normalised and `email_status` / `phone_status` set."""
    cleaned = dict(traits)
    email = traits.get("email")
    if isinstance(email, str) and email.strip():
        cleaned["email"], status = clean_email(email)
        cleaned["email_status"] = status.value
    elif email is not None:
        cleaned["email_status"] = EmailStatus.INVALID.value
    phone = traits.get("phone")
    if isinstance(phone, (str, int)) and not isinstance(phone, bool) and str(phone).strip():
        cleaned["phone"], phone_status = clean_phone(str(phone), default_region)
        cleaned["phone_status"] = phone_status.value
    elif phone is not None:
        cleaned["phone_status"] = PhoneStatus.INVALID.value
    return cleaned
