"""Segment membership: conditions on profile facts, re-evaluated on every change and as time passes."""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any, Protocol

from schemas.profile import Profile
from schemas.rules import Condition, Operator, RulesConfig
from schemas.segments import SegmentChange
from streams.rules.compiled import per_rules
from streams.rules.facts import DAYS_SINCE, WINDOWS, Fact
from streams.rules.person import PersonScores


class Facts(Protocol):
    """Where a condition reads facts: a ProfileFacts, which works out only those read, or a plain dict."""

    def get(self, name: str, /) -> Fact: ...


Test = Callable[[Facts], bool]

_COMPARISONS: dict[Operator, Callable[[Any, Any], Any]] = {
    Operator.GT: operator.gt,
    Operator.GE: operator.ge,
    Operator.LT: operator.lt,
    Operator.LE: operator.le,
}


def compile_condition(condition: Condition) -> Test:
    """The condition as a test on facts, its operator and value looked at once rather than on every check."""
    fact, expected = condition.fact, condition.value
    if condition.op is Operator.IN:
        if not isinstance(expected, list):
            return lambda facts: False
        return lambda facts: str(facts.get(fact)) in expected
    if condition.op is Operator.EQ:
        return lambda facts: facts.get(fact) == expected
    if condition.op is Operator.NE:
        return lambda facts: facts.get(fact) != expected
    if expected is None or isinstance(expected, list):
        return lambda facts: False  # nothing is above or below no threshold
    compare = _COMPARISONS[condition.op]

    def holds(facts: Facts) -> bool:
        actual = facts.get(fact)
        if actual is None:
            return False  # an unknown fact is neither above nor below a threshold
        try:
            return bool(compare(actual, expected))
        except TypeError:
            return False

    return holds


def condition_holds(condition: Condition, facts: Mapping[str, Fact]) -> bool:
    """Whether the condition holds of the facts."""
    return compile_condition(condition)(facts)


@dataclass(frozen=True)
class CompiledSegment:
    """A segment rule as tests: members pass every test in `all` and, when `any` has some, one of those."""

    name: str
    all: tuple[Test, ...]
    any: tuple[Test, ...]

    def admits(self, facts: Facts) -> bool:
        # Plain loops: this runs for every segment after every event, and generators cost more here.
        for test in self.all:
            if not test(facts):
                return False
        return not self.any or any(test(facts) for test in self.any)


@dataclass(frozen=True)
class SegmentPlan:
    """What segment checks need from the rules, worked out once per rules object."""

    segments: tuple[CompiledSegment, ...]
    # (profile field, how long after it) for every numeric days-since condition: membership may change at
    # that moment with no new event. Just past the threshold, so `>` as well as `>=` holds when checked.
    crossings: tuple[tuple[str, timedelta], ...]
    # The same for conditions on the scores' moments: (score field, how long after it, may be negative).
    score_crossings: tuple[tuple[str, timedelta], ...] = ()


# Score facts counted in days from one of the scores' moments: fact -> (field, +1 days since it, -1 days until).
SCORE_MOMENTS = {"scores_age_days": ("scored_at", 1), "expected_next_order_days": ("expected_next_order_at", -1)}


@per_rules
def segment_plan(rules: RulesConfig) -> SegmentPlan:
    """The segment plan of the rules: each segment compiled, and the moments after which a days-since
    condition may change membership with no new event."""
    crossings = []
    score_crossings = []
    for segment in rules.segments:
        for condition in [*segment.all, *segment.any]:
            if not isinstance(condition.value, int | float) or isinstance(condition.value, bool):
                continue
            field = DAYS_SINCE.get(condition.fact)
            if field is not None:
                crossings.append((field, timedelta(days=condition.value, microseconds=1)))
            elif condition.fact in SCORE_MOMENTS:
                moment, sign = SCORE_MOMENTS[condition.fact]
                score_crossings.append((moment, timedelta(days=sign * condition.value, microseconds=1)))
    compiled = tuple(
        CompiledSegment(
            name=segment.name,
            all=tuple(compile_condition(condition) for condition in segment.all),
            any=tuple(compile_condition(condition) for condition in segment.any),
        )
        for segment in rules.segments
    )
    return SegmentPlan(segments=compiled, crossings=tuple(crossings), score_crossings=tuple(score_crossings))


def membership_changes(
    person_id: str,
    current: Mapping[str, datetime],
    facts: Facts,
    rules: RulesConfig,
    now: datetime,
) -> tuple[dict[str, datetime], list[SegmentChange]]:
    """New membership (segment -> entered at) and the enter/exit changes, in the rules' segment order."""
    updated: dict[str, datetime] = {}
    changes: list[SegmentChange] = []
    for segment in segment_plan(rules).segments:
        member = segment.admits(facts)
        was = segment.name in current
        if member:
            updated[segment.name] = current[segment.name] if was else now
            if not was:
                changes.append(SegmentChange(person_id=person_id, segment=segment.name, change="enter", at=now))
        elif was:
            changes.append(SegmentChange(person_id=person_id, segment=segment.name, change="exit", at=now))
    return updated, changes


LONGEST_WINDOW = timedelta(days=max(WINDOWS))
ONE_DAY = timedelta(days=1)
MIDNIGHT = time(0)


def next_segment_check(
    profile: Profile, now: datetime, rules: RulesConfig, scores: PersonScores | None = None
) -> datetime | None:
    """When membership may next change with no new event: a days-since threshold being crossed (of the
    profile or of the scores), or a day bucket leaving a rolling window (at midnight UTC). None once
    nothing can change any more."""
    if not rules.segments:
        return None
    candidates: list[datetime] = []
    if scores is not None:
        for field, after in segment_plan(rules).score_crossings:
            base: datetime | None = getattr(scores, field)
            if base is not None and base + after > now:
                candidates.append(base + after)
    last_seen = profile.last_seen
    if last_seen is None:
        return min(candidates, default=None)
    longest = LONGEST_WINDOW
    for field, after in segment_plan(rules).crossings:
        base = getattr(profile, field)
        if base is None:
            continue
        crossing = base + after
        longest = max(longest, crossing - last_seen)
        if crossing > now:
            candidates.append(crossing)
    if now <= last_seen + longest + ONE_DAY:
        midnight = datetime.combine(now.date() + ONE_DAY, MIDNIGHT, tzinfo=now.tzinfo)
        candidates.append(midnight)
    return min(candidates, default=None)
