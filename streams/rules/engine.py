"""The single entry point of the pure core: apply an event, or the passing of time, to a person's state.

    apply_event(state, event, position, rules, around)        -> Outcome
    advance_time(state, now, position, rules, around)         -> Outcome
    absorb_score(state, score, now, position, rules, around)  -> Outcome

An Outcome holds the new state and what to publish: triggers that passed the policy gate, suppressions with
their reasons, and segment changes. The same inputs always give the same Outcome. What the runner knows
besides the person and the record (`Surroundings`: the limits, the campaigns live for this person, double
opt-in, its map of the recommendations topic) is handed in as values: the core reads them and never fetches
anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import msgspec
from msgspec.structs import replace

from schemas.consent import ConsentChange
from schemas.events import Event
from schemas.limits import DEFAULT_LIMITS, Limits
from schemas.rules import RulesConfig, TriggerRule
from schemas.scores import Score
from schemas.segments import SegmentChange
from schemas.triggers import Suppression, SuppressionReason, Trigger
from streams.rules.birthdays import pending_with_birthdays
from streams.rules.bounds import bounded_history, message_digest, remembered_messages
from streams.rules.campaigns import (
    MEMBER_AT_SCHEDULE,
    NO_CAMPAIGNS,
    THROTTLED,
    Campaigns,
    campaign_trigger,
    in_audience,
    is_campaign,
    pending_with_campaigns,
)
from streams.rules.carts import carts_after_event
from streams.rules.consent import NO_DOUBLE_OPT_IN, DoubleOptIn, consent_changes, decide_opt_in
from streams.rules.facts import ProfileFacts
from streams.rules.identity import anonymous_ids_to_link, merge_states
from streams.rules.person import PendingTrigger, PersonState, SentRecord, SourcePosition
from streams.rules.policy import Defer, Send, gate, zone_of
from streams.rules.profiles import open_hours_after, update_profile
from streams.rules.recommendations import NO_RECOMMENDATIONS, Recommendations, bought_after
from streams.rules.scores import scores_after
from streams.rules.segments import membership_changes, next_segment_check
from streams.rules.triggers import (
    build_trigger,
    next_step,
    pending_after_event,
    pending_after_segment_changes,
    reentry_allows_firing,
    trigger_rules_by_name,
)

# Firing can schedule more work due at once (a series step with no delay, a segment entry); bounded.
MAX_ROUNDS = 512


@dataclass(frozen=True)
class Outcome:
    """The outcome of one message."""

    state: PersonState
    triggers: list[Trigger] = field(default_factory=list)
    suppressed: list[Suppression] = field(default_factory=list)
    segment_changes: list[SegmentChange] = field(default_factory=list)
    applied: bool = True
    links: list[str] = field(default_factory=list)  # anonymous ids whose state should merge into this person
    repeated: bool = False  # a messageId this person's state already applied (a retry, a re-keyed replay)
    consent_changes: list[ConsentChange] = field(default_factory=list)  # with their evidence, for the proof


@dataclass(frozen=True, slots=True)
class Surroundings:
    """What the runner hands the core besides a person's state and the record: read-only values."""

    # Factories: the defaults are shared values that dataclasses cannot tell from mutable ones.
    limits: Limits = field(default_factory=lambda: DEFAULT_LIMITS)
    campaigns: Campaigns = field(default_factory=lambda: NO_CAMPAIGNS)
    opt_in: DoubleOptIn = field(default_factory=lambda: NO_DOUBLE_OPT_IN)
    recommendations: Recommendations = field(default_factory=lambda: NO_RECOMMENDATIONS)  # product -> ids, read-only


NOTHING_AROUND = Surroundings()


@dataclass
class _Gathered:
    limits: Limits
    campaigns: Campaigns = NO_CAMPAIGNS
    recommendations: Recommendations = field(default_factory=lambda: NO_RECOMMENDATIONS)  # a read-only view
    triggers: list[Trigger] = field(default_factory=list)
    suppressed: list[Suppression] = field(default_factory=list)
    segment_changes: list[SegmentChange] = field(default_factory=list)


def apply_event(
    state: PersonState,
    event: Event,
    position: SourcePosition,
    rules: RulesConfig,
    around: Surroundings = NOTHING_AROUND,
) -> Outcome:
    """Apply one event at its own time. What fell due before it fires first, so processing a person's
    events live or replaying them later gives the same triggers. An event whose messageId the state
    already applied changes nothing (a retry through another collector, a re-keyed copy). Under double
    opt-in an email opt-in waits for its confirmation (streams/rules/consent.py)."""
    if state.already_applied(position):
        return Outcome(state, applied=False)
    digest = message_digest(event.message_id) if event.message_id else None
    if digest is not None and digest in state.recent_messages:
        return Outcome(state, applied=False, repeated=True)
    limits = around.limits
    outcome = _Gathered(limits, around.campaigns, around.recommendations)
    moment = event.timestamp
    links = anonymous_ids_to_link(state, event)
    current = _run_due(state, moment, moment, rules, outcome)
    # One copy for everything the event changes; nothing below reads the applied offsets, so they go in too.
    updated = update_profile(current.profile, event, rules.profile, limits)
    decided = decide_opt_in(current.profile, updated, current.waiting_confirmations, event, moment, around.opt_in)
    if decided.confirmation is not None:
        outcome.triggers.append(decided.confirmation)  # asked for by the person: not a marketing nudge
    profile = decided.profile
    consents = consent_changes(state.person_id, current.profile, profile, event)
    current = replace(
        current,
        profile=profile,
        confirmations=decided.confirmations or msgspec.UNSET,
        open_hours=open_hours_after(current.open_hours, event, zone_of(profile.timezone, rules.policy)),
        carts=carts_after_event(current.carts, event, limits),
        bought=bought_after(current.bought, event, limits),
        pending=pending_after_event(current, event, rules, limits),
        applied_offsets=current.record(position),
        recent_messages=(
            current.recent_messages if digest is None else remembered_messages(current.recent_messages, digest, limits)
        ),
    )
    current = _reevaluate_segments(current, moment, rules, outcome)
    current = _run_due(current, moment, moment, rules, outcome)  # rules with no delay fire now
    return Outcome(
        current, outcome.triggers, outcome.suppressed, outcome.segment_changes, links=links, consent_changes=consents
    )


def absorb(
    state: PersonState,
    anonymous: PersonState,
    position: SourcePosition,
    rules: RulesConfig,
    limits: Limits = DEFAULT_LIMITS,
) -> Outcome:
    """Merge an anonymous visitor's state into this person's (once per identity message)."""
    if state.already_applied(position):
        return Outcome(state, applied=False)
    merged = merge_states(state, anonymous, rules, limits)
    return Outcome(replace(merged, applied_offsets=merged.record(position)))


def advance_time(
    state: PersonState,
    now: datetime,
    position: SourcePosition,
    rules: RulesConfig,
    around: Surroundings = NOTHING_AROUND,
) -> Outcome:
    """Let time pass to `now` (the partition's clock): fire what is due and re-check segments."""
    if state.already_applied(position):
        return Outcome(state, applied=False)
    outcome = _Gathered(around.limits, around.campaigns, around.recommendations)
    current = _run_due(state, now, now, rules, outcome)
    current = replace(current, applied_offsets=current.record(position))
    return Outcome(current, outcome.triggers, outcome.suppressed, outcome.segment_changes)


def absorb_score(
    state: PersonState,
    score: Score | None,
    now: datetime,
    position: SourcePosition,
    rules: RulesConfig,
    around: Surroundings = NOTHING_AROUND,
) -> Outcome:
    """Join a record of the scores topic (None: a tombstone) at `now`, the partition's clock: what fell due
    before fires first, then segments are checked with the new scores as after an event, so entering one
    starts its rules. Scores older than the person's (streams/rules/scores.py) change nothing but the
    applied offset."""
    if state.already_applied(position):
        return Outcome(state, applied=False)
    current_scores = state.current_scores
    scores = scores_after(current_scores, score)
    if scores is current_scores:
        return Outcome(replace(state, applied_offsets=state.record(position)))
    outcome = _Gathered(around.limits, around.campaigns, around.recommendations)
    current = _run_due(state, now, now, rules, outcome)
    current = replace(
        current, scores=msgspec.UNSET if scores is None else scores, applied_offsets=current.record(position)
    )
    current = _reevaluate_segments(current, now, rules, outcome)
    current = _run_due(current, now, now, rules, outcome)  # rules with no delay fire now
    return Outcome(current, outcome.triggers, outcome.suppressed, outcome.segment_changes)


def schedule_campaigns(
    state: PersonState, now: datetime, campaigns: Campaigns, rules: RulesConfig, limits: Limits = DEFAULT_LIMITS
) -> PersonState:
    """The person with a deadline for each live campaign's next occurrence (the runner's sweep of the people
    of its partitions when a campaign arrives); the same state when nothing was missing."""
    pending = pending_with_campaigns(state, state.pending, now, campaigns.plans.values(), rules.policy, limits)
    return state if pending is state.pending else replace(state, pending=pending)


def _reevaluate_segments(state: PersonState, now: datetime, rules: RulesConfig, outcome: _Gathered) -> PersonState:
    scores = state.current_scores
    facts = ProfileFacts(state.profile, now, rules.profile, scores)
    membership, changes = membership_changes(state.person_id, state.segments, facts, rules, now)
    outcome.segment_changes.extend(changes)
    check_at = next_segment_check(state.profile, now, rules, scores)
    pending = pending_with_birthdays(
        state, pending_after_segment_changes(state, state.pending, changes, rules, outcome.limits), now, rules
    )
    if outcome.campaigns.plans:
        # Someone who became known after a campaign was scheduled waits for it too.
        plans = outcome.campaigns.plans.values()
        pending = pending_with_campaigns(state, pending, now, plans, rules.policy, outcome.limits)
    if membership == state.segments and _same_moment(check_at, state.segment_check_at) and pending is state.pending:
        return state  # the usual outcome after an event: nothing to copy
    return replace(state, segments=membership, segment_check_at=check_at, pending=pending)


def _same_moment(first: datetime | None, second: datetime | None) -> bool:
    """Equal and in the same zone (equal aware datetimes in two zones would serialise differently)."""
    if first is None or second is None:
        return first is second
    return first == second and first.tzinfo is second.tzinfo


def _run_due(state: PersonState, up_to: datetime, now: datetime, rules: RulesConfig, outcome: _Gathered) -> PersonState:
    """Fire everything due at or before `up_to`, in time order, checking segments at their moments."""
    current = state
    for _ in range(MAX_ROUNDS):
        due = [p for p in current.pending.values() if p.fire_at <= up_to]
        check_at = current.segment_check_at
        segment_due = check_at is not None and check_at <= up_to
        if not due and not segment_due:
            return current
        due.sort(key=lambda p: (p.fire_at, -_priority(rules, p.rule), p.rule, p.key, p.step))
        if segment_due and (not due or check_at <= due[0].fire_at):  # type: ignore[operator]
            assert check_at is not None
            current = _reevaluate_segments(current, check_at, rules, outcome)
            continue
        for waiting in due:
            current = _fire(current, waiting, now, rules, outcome)
    return current


def _priority(rules: RulesConfig, name: str) -> int:
    rule = trigger_rules_by_name(rules).get(name)
    return rule.priority if rule else 0


def _fire(
    state: PersonState, waiting: PendingTrigger, now: datetime, rules: RulesConfig, outcome: _Gathered
) -> PersonState:
    if is_campaign(waiting.rule):
        return _fire_campaign(state, waiting, now, rules, outcome)
    pending = {slot: p for slot, p in state.pending.items() if slot != waiting.slot}
    rule = trigger_rules_by_name(rules).get(waiting.rule)
    if rule is None or not rule.enabled:
        return replace(state, pending=pending)  # the rule was removed from the file
    follow_up = next_step(waiting, rule, rules)
    if follow_up is not None:
        pending[follow_up.slot] = follow_up
    trigger = build_trigger(state, waiting, rule, now, outcome.recommendations)
    if trigger is None:
        return replace(state, pending=pending)
    if not reentry_allows_firing(state, rule, waiting):
        detail = f"re-entry {rule.reentry.value}: the rule already sent this person one"
        outcome.suppressed.append(
            Suppression(trigger=trigger, reason=SuppressionReason.REENTRY, detail=detail, decided_at=now)
        )
        return replace(state, pending=pending)
    return _decide(state, pending, waiting, rule, trigger, follow_up, now, rules, outcome)


def _fire_campaign(
    state: PersonState, waiting: PendingTrigger, now: datetime, rules: RulesConfig, outcome: _Gathered
) -> PersonState:
    """One person's occurrence of a campaign: dropped once cancelled, held by the throttle, checked against
    the audience at this moment, then through the same gate as every rule's nudge."""
    pending = {slot: p for slot, p in state.pending.items() if slot != waiting.slot}
    campaigns = outcome.campaigns
    each = campaigns.plans.get(waiting.rule)
    if each is None:
        return replace(state, pending=pending)  # a campaign nobody scheduled (any more)
    trigger = campaign_trigger(state, waiting, each, now)
    if each.cancelled:
        reason = SuppressionReason.CANCELLED
        return _suppressed(state, pending, waiting, trigger, reason, "the campaign was cancelled", now, outcome)
    until = campaigns.held_until.get(waiting.rule)
    if until is not None and until > now:
        context = {**waiting.context, THROTTLED: True}
        pending[waiting.slot] = replace(waiting, fire_at=until, deferred=True, context=context)
        return replace(state, pending=pending)
    audience = each.campaign.audience
    if not in_audience(state.segments, audience):
        if not waiting.context.get(MEMBER_AT_SCHEDULE):
            return _settled(state, pending, waiting, outcome)  # never in the audience: nothing to say
        detail = f"no longer in {' or '.join(audience.segments)}" + (
            f" (or now in {' or '.join(audience.exclude)})" if audience.exclude else ""
        )
        reason = SuppressionReason.NOT_IN_AUDIENCE
        return _suppressed(state, pending, waiting, trigger, reason, detail, now, outcome)
    decided = _decide(state, pending, waiting, each.rule, trigger, None, now, rules, outcome)
    if waiting.slot in decided.pending:
        return decided  # deferred (quiet hours): the next occurrence waits until this one is decided
    # A recurrence: the next occurrence waits now that this one is decided (sent or suppressed).
    later = pending_with_campaigns(decided, decided.pending, now, [each], rules.policy, outcome.limits)
    return decided if later is decided.pending else replace(decided, pending=later)


def _suppressed(
    state: PersonState,
    pending: dict[str, PendingTrigger],
    waiting: PendingTrigger,
    trigger: Trigger,
    reason: SuppressionReason,
    detail: str,
    now: datetime,
    outcome: _Gathered,
) -> PersonState:
    outcome.suppressed.append(Suppression(trigger=trigger, reason=reason, detail=detail, decided_at=now))
    return _settled(state, pending, waiting, outcome)


def _settled(
    state: PersonState, pending: dict[str, PendingTrigger], waiting: PendingTrigger, outcome: _Gathered
) -> PersonState:
    """An occurrence decided without the gate: remembered, so no later event schedules it again."""
    fired = bounded_history({**state.fired, waiting.slot: waiting.due_at}, outcome.limits)
    return replace(state, pending=pending, fired=fired)


def _decide(
    state: PersonState,
    pending: dict[str, PendingTrigger],
    waiting: PendingTrigger,
    rule: TriggerRule,
    trigger: Trigger,
    follow_up: PendingTrigger | None,
    now: datetime,
    rules: RulesConfig,
    outcome: _Gathered,
) -> PersonState:
    """The policy gate's verdict on a due nudge, applied: sent, deferred or suppressed with the reason."""
    decided_at = waiting.fire_at if waiting.deferred else waiting.due_at
    verdict = gate(state, trigger, rule, rules.policy, decided_at, now)
    if isinstance(verdict, Defer):
        if follow_up is not None:
            del pending[follow_up.slot]  # the series resumes after this step has gone out
        pending[waiting.slot] = replace(waiting, fire_at=verdict.until, deferred=True)
        return replace(state, pending=pending)
    # Per-key history older than the policy's memory is dropped; per-rule entries (for `once`) are kept.
    horizon = decided_at - rules.policy.remember_sent_for
    fired = {slot: at for slot, at in state.fired.items() if "|" not in slot or at > horizon}
    fired.update({rule.name: waiting.due_at, waiting.slot: waiting.due_at})
    fired = bounded_history(fired, outcome.limits)
    if isinstance(verdict, Send):
        outcome.triggers.append(verdict.trigger)
        sent = [r for r in state.sent if r.at > horizon][-(outcome.limits.sent_records - 1) :]
        sent.append(SentRecord(trigger_id=trigger.trigger_id, channel=trigger.channel, at=decided_at))
        return replace(state, pending=pending, fired=fired, sent=sent)
    outcome.suppressed.append(
        Suppression(trigger=trigger, reason=verdict.reason, detail=verdict.detail, decided_at=now)
    )
    return replace(state, pending=pending, fired=fired)
