"""Dead letters for what the collector refuses, in the worker's DeadLetter shape."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

import orjson

from schemas.limits import Limits, truncated
from schemas.triggers import DeadLetter

SOURCE_TOPIC = "collector"
# Stands in for what lies deeper than the limits allow: a refused input may be nested far past what
# orjson.dumps (about 254 levels) or repr (Python's recursion limit) can take.
CLIPPED = "…"
# 64-bit, as orjson encodes integers; a decoded body never holds a bigger one, but be sure.
_INT_RANGE = range(-(2**63), 2**64)


def collector_dead_letter(raw: Any, reason: str, received_at: datetime, source: str, limits: Limits) -> DeadLetter:
    """A refused event as a dead letter.

    It never was on a Kafka topic, so `topic` is "collector" and `partition` 0 (the sink stores partition as
    an unsigned number, so -1 is not an option). `offset` is a stable 63-bit hash of the source and the raw
    event: the sink's dead_letters table is keyed by (topic, partition, offset), so distinct refusals get
    distinct rows while an SDK retrying the very same bad event collapses into one.

    The stored value is the event as JSON with keys sorted, clipped to the limits (deeper levels, items,
    keys and characters past them left out) and to `dead_letter_bytes`; a write key in it is left out.
    """
    value = truncated(bounded_json(raw, limits), limits).decode()
    digest = hashlib.sha256(f"{source}\x1f{value}".encode()).digest()
    return DeadLetter(
        reason=reason,
        topic=SOURCE_TOPIC,
        partition=0,
        offset=int.from_bytes(digest[:8], "big") >> 1,
        key=_person_of(raw, limits),
        value=value,
        received_at=received_at,
    )


def bounded_json(raw: Any, limits: Limits) -> bytes:
    """`raw` as sorted-key JSON, clipped to the limits so that encoding it cannot recurse far or grow large."""
    return orjson.dumps(_clipped(raw, limits), option=orjson.OPT_SORT_KEYS)


def _clipped(raw: Any, limits: Limits) -> Any:
    # Iterative copy: the input's own depth costs no recursion here.
    root: list[Any] = [None]
    stack: list[tuple[Any, Any, Any, int]] = [(raw, root, 0, 1)]
    while stack:
        value, parent, slot, depth = stack.pop()
        if isinstance(value, dict):
            if depth > limits.json_depth:
                parent[slot] = CLIPPED
                continue
            copy: dict[str, Any] = {}
            parent[slot] = copy
            for count, (key, item) in enumerate(value.items()):
                if count >= limits.object_keys:
                    copy[CLIPPED] = f"{len(value) - count} more keys"
                    break
                if depth == 1 and key == "writeKey":
                    continue
                name = str(key)[: limits.id_length]
                copy[name] = None
                stack.append((item, copy, name, depth + 1))
        elif isinstance(value, list):
            if depth > limits.json_depth:
                parent[slot] = CLIPPED
                continue
            kept = value[: limits.array_items]
            items: list[Any] = [None] * len(kept)
            if len(value) > len(kept):
                items.append(f"{CLIPPED} {len(value) - len(kept)} more items")
            parent[slot] = items
            stack.extend((item, items, index, depth + 1) for index, item in enumerate(kept))
        elif isinstance(value, str):
            parent[slot] = value[: limits.string_length]
        elif value is None or isinstance(value, (bool, float)) or (isinstance(value, int) and value in _INT_RANGE):
            parent[slot] = value
        elif isinstance(value, int):
            parent[slot] = f"{CLIPPED} an integer of {value.bit_length()} bits"  # str() of it may refuse
        else:
            parent[slot] = str(value)[: limits.string_length]
    return root[0]


def _person_of(raw: Any, limits: Limits) -> str | None:
    if not isinstance(raw, dict):
        return None
    for name in ("userId", "anonymousId"):
        value = raw.get(name)
        if isinstance(value, str) and 0 < len(value) <= limits.id_length:
            return value
    return None
