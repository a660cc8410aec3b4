"""The single entry point of the pure core: apply an event or the passing of time to a person's state."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from schemas.events import Event
from schemas.rules import RulesConfig
from schemas.triggers import Trigger
from streams.rules.carts import carts_after_event, fire_due_carts, next_cart_deadline
from streams.rules.profiles import update_profile
from streams.rules.state import PersonState, SourcePosition


@dataclass(frozen=True)
class Step:
    """The outcome of one message: the new state, the triggers it fired, and whether it was new at all."""

    state: PersonState
    triggers: list[Trigger] = field(default_factory=list)
    applied: bool = True


def apply_event(state: PersonState, event: Event, position: SourcePosition, rules: RulesConfig) -> Step:
    """Apply one event at its own time. Deadlines that passed before it fire first, so processing a
    person's events live or replaying them later gives the same triggers."""
    if state.already_applied(position):
        return Step(state, applied=False)
    advanced = advance_time(state, event.timestamp, position, rules)
    current = advanced.state
    updated = current.model_copy(
        update={
            "profile": update_profile(current.profile, event),
            "carts": carts_after_event(current.carts, event, rules.cart_abandonment),
        }
    )
    return Step(updated, advanced.triggers)


def advance_time(state: PersonState, now: datetime, position: SourcePosition, rules: RulesConfig) -> Step:
    """Let time pass to `now` (event time or the partition's clock): fire every deadline that is due."""
    if state.already_applied(position):
        return Step(state, applied=False)
    carts, fired = fire_due_carts(state.carts, state.person_id, now, rules.timers.grace, rules.cart_abandonment)
    return Step(state.model_copy(update={"carts": carts, "applied_offsets": state.record(position)}), fired)


def next_deadline(state: PersonState, rules: RulesConfig) -> datetime | None:
    """When this person next needs a timer check (a deadline plus grace), or None."""
    return next_cart_deadline(state.carts, rules.timers.grace)
