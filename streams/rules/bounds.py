"""How the core keeps a person's state within the limits, whatever the events say.

Every collection in a state that an event can grow is capped here or where it is built (carts, pending
nudges, rule history, sends, traits, message ids), each with the limit of the same name in
`schemas.limits.Limits`. What is dropped is always the oldest, so the outcome depends only on the events.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import orjson

from schemas.limits import Limits


def message_digest(message_id: str) -> str:
    """A short, fixed-size stand-in for a messageId (ids are up to limits.id_length characters)."""
    return hashlib.blake2b(message_id.encode(), digest_size=12).hexdigest()


def remembered_messages(recent: list[str], digest: str, limits: Limits) -> list[str]:
    """The messageIds a state remembers: the latest ones, with `digest` last."""
    return [*recent, digest][-limits.message_ids :]


def bounded_traits(traits: Mapping[str, Any], update: Mapping[str, Any], limits: Limits) -> dict[str, Any]:
    """The traits after an identify: the newest values win, and the least recently set keys go first once
    there are more than limits.traits of them or they take more than limits.traits_bytes as JSON."""
    merged = {name: value for name, value in traits.items() if name not in update}
    merged.update(update)  # updated keys move to the end: the most recently set
    while len(merged) > limits.traits:
        del merged[next(iter(merged))]
    while merged and len(orjson.dumps(merged)) > limits.traits_bytes:
        del merged[next(iter(merged))]
    return merged


def short_text(value: Any, limits: Limits) -> Any:
    """A product's name or URL as the state keeps it: dropped (None) when longer than stored_text_length."""
    if isinstance(value, str) and len(value) > limits.stored_text_length:
        return None
    return value


def bounded_context(context: dict[str, Any], limits: Limits) -> dict[str, Any]:
    """What a waiting nudge carries, at most limits.context_bytes: an order's products beyond that are
    left out, and past that the context keeps only its identifiers."""
    if len(orjson.dumps(context)) <= limits.context_bytes:
        return context
    order = context.get("order")
    if isinstance(order, dict) and isinstance(order.get("products"), list):
        products = list(order["products"])
        while products:
            products.pop()
            trimmed = {**context, "order": {**order, "products": products}}
            if len(orjson.dumps(trimmed)) <= limits.context_bytes:
                return trimmed
    identifiers = {
        section: {name: value for name, value in values.items() if name.endswith("_id")}
        for section, values in context.items()
        if isinstance(values, dict)
    }
    return identifiers if len(orjson.dumps(identifiers)) <= limits.context_bytes else {}


def bounded_history(fired: dict[str, datetime], limits: Limits) -> dict[str, datetime]:
    """Per-key history ("rule|key" entries) beyond limits.rule_history loses its oldest entries; per-rule
    entries (what `once` re-entry reads) are few, one per rule, and always kept."""
    keyed = [slot for slot in fired if "|" in slot]
    if len(keyed) <= limits.rule_history:
        return fired
    oldest = sorted(keyed, key=lambda slot: (fired[slot], slot))[: len(keyed) - limits.rule_history]
    dropped = set(oldest)
    return {slot: at for slot, at in fired.items() if slot not in dropped}
