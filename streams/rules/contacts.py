"""Which contact ids a profile change adds or removes: the index that lets an opt-out naming only an
email address or a phone number reach the people who have it. Pure: the hash key is passed in."""

from __future__ import annotations

from schemas.identity import ContactLink
from schemas.privacy import ContactKind, contact_person_id, is_contact_id
from schemas.profile import Profile

CONTACT_FIELDS: tuple[tuple[ContactKind, str], ...] = (("email", "email"), ("phone", "phone"))
CONTACT_TRAITS = frozenset(field for _, field in CONTACT_FIELDS)


def contact_ids(profile: Profile, key: bytes) -> dict[ContactKind, str]:
    """The contact id of each email address and phone number on the profile."""
    ids: dict[ContactKind, str] = {}
    for kind, field in CONTACT_FIELDS:
        value = getattr(profile, field)
        if isinstance(value, str) and value.strip():
            ids[kind] = contact_person_id(kind, value, key)
    return ids


def contact_changes(before: Profile, after: Profile, key: bytes) -> list[ContactLink]:
    """Index updates after a profile changed: the new address or number added, the replaced one removed."""
    if is_contact_id(after.person_id) or (before.email == after.email and before.phone == after.phone):
        return []  # the usual case, and contact ids are not indexed under themselves
    old, new = contact_ids(before, key), contact_ids(after, key)
    changes = [
        ContactLink(contact_id=contact, person_id=after.person_id, op="remove")
        for kind, contact in old.items()
        if new.get(kind) != contact
    ]
    changes.extend(
        ContactLink(contact_id=contact, person_id=after.person_id, op="add")
        for kind, contact in new.items()
        if old.get(kind) != contact
    )
    return changes


def forgotten_contacts(profile: Profile, key: bytes) -> list[ContactLink]:
    """Index removals for an erased person."""
    return [
        ContactLink(contact_id=c, person_id=profile.person_id, op="remove") for c in contact_ids(profile, key).values()
    ]


def with_contact(persons: list[str], person_id: str, most: int) -> list[str]:
    """The people of a contact after one more has it: the most recent `most` are kept."""
    return [*(p for p in persons if p != person_id), person_id][-most:]
