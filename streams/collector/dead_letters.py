"""Dead letters for what the collector refuses, in the worker's DeadLetter shape."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

import orjson

from schemas.triggers import DeadLetter

SOURCE_TOPIC = "collector"


def collector_dead_letter(raw: Any, reason: str, received_at: datetime, source: str) -> DeadLetter:
    """A refused event as a dead letter.

    It never was on a Kafka topic, so `topic` is "collector" and `partition` 0 (the sink stores partition as
    an unsigned number, so -1 is not an option). `offset` is a stable 63-bit hash of the source and the raw
    event: the sink's dead_letters table is keyed by (topic, partition, offset), so distinct refusals get
    distinct rows while an SDK retrying the very same bad event collapses into one.
    """
    value = orjson.dumps(raw, option=orjson.OPT_SORT_KEYS).decode() if _dumpable(raw) else repr(raw)
    digest = hashlib.sha256(f"{source}\x1f{value}".encode()).digest()
    return DeadLetter(
        reason=reason,
        topic=SOURCE_TOPIC,
        partition=0,
        offset=int.from_bytes(digest[:8], "big") >> 1,
        key=_person_of(raw),
        value=value,
        received_at=received_at,
    )


def _person_of(raw: Any) -> str | None:
    if not isinstance(raw, dict):
        return None
    for name in ("userId", "anonymousId"):
        value = raw.get(name)
        if isinstance(value, str) and value:
            return value
    return None


def _dumpable(raw: Any) -> bool:
    try:
        orjson.dumps(raw)
    except TypeError:
        return False
    return True
