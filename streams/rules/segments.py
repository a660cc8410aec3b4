"""Segment membership: conditions on profile facts, re-evaluated on every change and as time passes."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, time, timedelta

from schemas.profile import Profile
from schemas.rules import Condition, Operator, RulesConfig, SegmentRule
from schemas.segments import SegmentChange
from streams.rules.facts import DAYS_SINCE, WINDOWS, Fact


def condition_holds(condition: Condition, facts: Mapping[str, Fact]) -> bool:
    actual = facts.get(condition.fact)
    expected = condition.value
    if condition.op is Operator.IN:
        return isinstance(expected, list) and str(actual) in expected
    if condition.op is Operator.EQ:
        return actual == expected
    if condition.op is Operator.NE:
        return actual != expected
    if actual is None or expected is None or isinstance(expected, list):
        return False  # an unknown fact is neither above nor below a threshold
    try:
        if condition.op is Operator.GT:
            return actual > expected  # type: ignore[operator]
        if condition.op is Operator.GE:
            return actual >= expected  # type: ignore[operator]
        if condition.op is Operator.LT:
            return actual < expected  # type: ignore[operator]
        return actual <= expected  # type: ignore[operator]
    except TypeError:
        return False


def is_member(segment: SegmentRule, facts: Mapping[str, Fact]) -> bool:
    return all(condition_holds(c, facts) for c in segment.all) and (
        not segment.any or any(condition_holds(c, facts) for c in segment.any)
    )


def membership_changes(
    person_id: str,
    current: Mapping[str, datetime],
    facts: Mapping[str, Fact],
    rules: RulesConfig,
    now: datetime,
) -> tuple[dict[str, datetime], list[SegmentChange]]:
    """New membership (segment -> entered at) and the enter/exit changes, in the rules' segment order."""
    updated: dict[str, datetime] = {}
    changes: list[SegmentChange] = []
    for segment in rules.segments:
        member = is_member(segment, facts)
        was = segment.name in current
        if member:
            updated[segment.name] = current[segment.name] if was else now
            if not was:
                changes.append(SegmentChange(person_id=person_id, segment=segment.name, change="enter", at=now))
        elif was:
            changes.append(SegmentChange(person_id=person_id, segment=segment.name, change="exit", at=now))
    return updated, changes


def next_segment_check(profile: Profile, now: datetime, rules: RulesConfig) -> datetime | None:
    """When membership may next change with no new event: a days-since threshold being crossed, or a
    day bucket leaving a rolling window (at midnight UTC). None once nothing can change any more."""
    if not rules.segments or profile.last_seen is None:
        return None
    candidates: list[datetime] = []
    longest = timedelta(days=max(WINDOWS))
    for segment in rules.segments:
        for condition in [*segment.all, *segment.any]:
            field = DAYS_SINCE.get(condition.fact)
            if field is None or not isinstance(condition.value, int | float) or isinstance(condition.value, bool):
                continue
            base: datetime | None = getattr(profile, field)
            if base is None:
                continue
            # Just past the threshold, so `>` as well as `>=` holds when the check runs.
            crossing = base + timedelta(days=condition.value, microseconds=1)
            longest = max(longest, crossing - profile.last_seen)
            if crossing > now:
                candidates.append(crossing)
    if now <= profile.last_seen + longest + timedelta(days=1):
        midnight = datetime.combine(now.date() + timedelta(days=1), time(0), tzinfo=now.tzinfo)
        candidates.append(midnight)
    return min(candidates, default=None)
