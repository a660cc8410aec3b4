"""Birthday reminders: the next local moment of a person's birthday, and the one reminder kept scheduled for
everyone whose birthday is known."""

from __future__ import annotations

from datetime import date, datetime

from schemas.rules import RulesConfig, TriggerRule
from streams.rules.person import PendingTrigger, PersonState, slot_key
from streams.rules.policy import person_zone
from streams.rules.triggers import Pending, fire_moment


def next_birthday(
    birthday: str, after: datetime, rule: TriggerRule, state: PersonState, rules: RulesConfig
) -> datetime | None:
    """The next local `rule.local_time` on the person's birthday after `after`, in UTC."""
    try:
        month, day = (int(part) for part in birthday.removeprefix("--").split("-")[-2:])
    except ValueError:
        return None
    zone = person_zone(state, rules.policy)
    local_after = after.astimezone(zone)
    for year in (local_after.year, local_after.year + 1, local_after.year + 2):
        try:
            candidate = datetime.combine(date(year, month, day), rule.local_time or datetime.min.time(), tzinfo=zone)
        except ValueError:
            continue  # 29 February in a common year
        if candidate > local_after:
            return candidate.astimezone(after.tzinfo)
    return None


def pending_with_birthdays(state: PersonState, pending: Pending, now: datetime, rules: RulesConfig) -> Pending:
    """Keep one birthday reminder scheduled for people whose birthday is known."""
    birthday = state.profile.birthday
    if not birthday:
        return pending
    updated = dict(pending)
    for rule in rules.triggers:
        if not (rule.enabled and rule.entry.birthday) or any(p.rule == rule.name for p in updated.values()):
            continue
        moment = next_birthday(birthday, now, rule, state, rules)
        if moment is None:
            continue
        key = str(moment.year)
        slot = slot_key(rule.name, key)
        if slot in state.fired:
            continue
        fire_at = fire_moment(moment, now, rules)
        updated[slot] = PendingTrigger(rule=rule.name, key=key, entered_at=now, due_at=moment, fire_at=fire_at)
    # Only ever added to: the same size means nothing new, and the caller can tell by identity.
    return updated if len(updated) > len(pending) else pending
