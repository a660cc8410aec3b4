"""What the worker's HTTP API shows: pure functions from stored state to JSON-ready documents."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from schemas.encoding import to_plain
from schemas.rules import RulesConfig
from streams.rules.carts import cart_context
from streams.rules.facts import profile_facts
from streams.rules.person import PersonState


def profile_document(state: PersonState, now: datetime, rules: RulesConfig) -> dict[str, Any]:
    """The profile as a person's single view: stored fields, facts as of now, the predicted scores they come
    from, segments, carts, pending."""
    scores = state.current_scores
    return {
        "profile": to_plain(state.profile),
        "facts": profile_facts(state.profile, now, rules.profile, scores),
        "scores": None if scores is None else to_plain(scores),
        "segments": {name: entered.isoformat() for name, entered in state.segments.items()},
        "carts": {cart_id: cart_context(items) for cart_id, items in state.carts.items()},
        "pending": [
            {
                "rule": p.rule,
                "key": p.key,
                "step": p.step,
                "due_at": p.due_at.isoformat(),
                "fire_at": p.fire_at.isoformat(),
                "deferred": p.deferred,
            }
            for p in sorted(state.pending.values(), key=lambda p: p.fire_at)
        ],
        "as_of": now.isoformat(),
    }


def segment_page(members: Iterable[str], after: str | None, limit: int) -> dict[str, Any]:
    """One page of members in person-id order; `next` is the cursor for the following page."""
    ordered = sorted(person for person in members if after is None or person > after)
    page = ordered[:limit]
    return {"members": page, "next": page[-1] if len(ordered) > limit else None}
