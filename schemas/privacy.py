"""Privacy requests (GDPR, CCPA, PIPL) and the audit records they leave."""

from __future__ import annotations

import hashlib
from typing import Literal

from schemas.events import UtcDatetime, WireModel


def person_hash(person_id: str) -> str:
    """How an erased person is remembered: enough to drop their late events, nothing to read back."""
    return hashlib.sha256(f"nudgeflow-erased\x1f{person_id}".encode()).hexdigest()


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
