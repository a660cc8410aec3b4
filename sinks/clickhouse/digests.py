"""Email addresses and phone numbers as ClickHouse stores them: keyed digests, never the contacts.

Analytics need to count and join people, never to read their addresses; the senders get addresses from
the worker's live profile, not from ClickHouse. A digest still matches itself, so "how many profiles share
this email" and lookups by a known address (`schemas.privacy.contact_digest` with the same key) keep working.

The digest is an HMAC-SHA256 under `settings.hash_key`: without the key nobody holding an export can
confirm a guessed address or enumerate phone numbers (there are few enough to try them all). It is
pseudonymisation, not anonymisation: erasure still deletes the rows.

Person ids are contacts too when a producer used an address or an E.164 number as one: they are stored
as the contact id the collector gives such people (`contact:email:<digest>`, `schemas.privacy`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from schemas.privacy import ContactKind, contact_digest, contact_person_id, is_contact_id

# Keys whose string values are contacts, wherever they appear in a JSON document (traits, properties,
# context.traits, a profile). Segment's specs and the collector use the first two.
EMAIL_KEYS = frozenset({"email", "email_address", "emailAddress"})
PHONE_KEYS = frozenset({"phone", "phone_number", "phoneNumber", "mobile", "from_number", "to_number"})
# Twilio's webhooks name the numbers `from` and `to`; in SMS events only, since elsewhere they are not contacts.
SMS_NUMBER_KEYS = frozenset({"from", "to"})
# Keys whose values are person ids: stored through `stored_id` like the person_id columns.
PERSON_KEYS = frozenset({"userId", "anonymousId", "previousId", "person_id", "personId", "user_id"})

_DIGEST = re.compile(r"[0-9a-f]{64}")
_EMAIL_ID = re.compile(r"[A-Za-z0-9._%+\-]{1,64}@[A-Za-z0-9\-]{1,63}(?:\.[A-Za-z0-9\-]{1,63})*\.[A-Za-z]{2,63}")
# Only numbers with their country code are taken for phone numbers: plain digits are often shop user ids.
_PHONE_ID = re.compile(r"\+[0-9][0-9 ().\-]{6,23}")

# Longest local part and domain an address in free text can have (RFC 5321): the scan never looks further
# from an '@', so text of any length costs time in proportion to its length.
MAX_LOCAL = 64
MAX_DOMAIN = 255
# Anchored, bounded matches (no backtracking: each is one character class repeated).
_LOCAL_RUN = re.compile(r"[A-Za-z0-9._%+\-]*")
_DOMAIN_RUN = re.compile(r"[A-Za-z0-9.\-]*")
# Within a domain run: everything up to its last '.' followed by two letters or more, and those letters.
# Linear: the greedy prefix gives back one character at a time, and each try looks at three at most.
_TO_LAST_TLD = re.compile(r".*\.[A-Za-z]{2,}", re.DOTALL)


def hash_email(email: str, key: bytes) -> str:
    """The keyed digest an email address is stored as."""
    return _digest("email", email, key)


def hash_phone(phone: str, key: bytes) -> str:
    """The keyed digest a phone number is stored as."""
    return _digest("phone", phone, key)


def _digest(kind: ContactKind, value: str, key: bytes) -> str:
    if _DIGEST.fullmatch(value):
        return value  # already a digest: hashing twice would break matching
    return contact_digest(kind, value, key)


def stored_id(person_id: str, key: bytes) -> str:
    """A person id as stored: an id that is an email address or a phone number becomes its contact id."""
    if is_contact_id(person_id) or len(person_id) > MAX_LOCAL + 1 + MAX_DOMAIN:
        return person_id
    if "@" in person_id and _EMAIL_ID.fullmatch(person_id.strip()):
        return contact_person_id("email", person_id, key)
    if person_id.startswith("+") and _PHONE_ID.fullmatch(person_id) and sum(c.isdigit() for c in person_id) >= 7:
        return contact_person_id("phone", person_id, key)
    return person_id


def hash_contacts(document: Any, key: bytes, sms: bool = False) -> Any:
    """A copy of a JSON-like value with every email and phone value replaced by its digest, at any depth
    (callers bound the depth first: every document here passed `schemas.limits`)."""
    if isinstance(document, Mapping):
        return {name: _hash_entry(str(name), value, key, sms) for name, value in document.items()}
    if isinstance(document, list):
        return [hash_contacts(item, key, sms) for item in document]
    return document


def _hash_entry(name: str, value: Any, key: bytes, sms: bool) -> Any:
    if isinstance(value, str) and value:
        if name in EMAIL_KEYS:
            return hash_email(value, key)
        if name in PHONE_KEYS or (sms and name in SMS_NUMBER_KEYS):
            return hash_phone(value, key)
        if name in PERSON_KEYS:
            return stored_id(value, key)
        return value
    if isinstance(value, int) and not isinstance(value, bool) and name in PHONE_KEYS:
        return hash_phone(str(value), key)  # a number sent as a JSON number is still a number
    return hash_contacts(value, key, sms)


def hash_emails_in_text(text: str, key: bytes) -> str:
    """Text that could not be parsed (a dead letter) with every email-looking substring replaced by its digest.

    Finds what `[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\\.[A-Za-z]{2,}` finds, with the local part cut to its last
    MAX_LOCAL characters and the domain to MAX_DOMAIN, but looks only around each '@': linear in the text,
    where the regex took quadratic time on a long run of letters without one."""
    at = text.find("@")
    if at == -1:
        return text
    pieces: list[str] = []
    copied = 0  # text[:copied] is in pieces already
    while at != -1:
        # The local part, read backwards from the '@': never into the previous match, at most MAX_LOCAL long.
        before = text[max(copied, at - MAX_LOCAL) : at]
        start = at - _run_end(_LOCAL_RUN, before[::-1], 0, len(before))
        end = _domain_end(text, at + 1) if start < at else -1
        if end == -1:
            at = text.find("@", at + 1)
            continue
        pieces.append(text[copied:start])
        pieces.append(hash_email(text[start:end], key))
        copied = end
        at = text.find("@", end)
    pieces.append(text[copied:])
    return "".join(pieces)


def _domain_end(text: str, begin: int) -> int:
    """Where the domain starting at `begin` ends: after the last '.' followed by two letters or more, with
    something before that '.'; -1 when there is no such domain."""
    stop = _run_end(_DOMAIN_RUN, text, begin, begin + MAX_DOMAIN)
    # The rightmost dot with two letters after it ends the longest match (as the regex's backtracking would);
    # found in one call, not one per dot (a domain of 254 dots cost 254 calls for each '@').
    found = _TO_LAST_TLD.match(text, begin + 1, stop)
    return found.end() if found else -1


def _run_end(run: re.Pattern[str], text: str, begin: int, limit: int) -> int:
    """Where a run of `run`'s characters starting at `begin` ends, looking no further than `limit`."""
    found = run.match(text, begin, limit)
    return found.end() if found else begin
