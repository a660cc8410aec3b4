"""Campaigns in a person's state: each occurrence's moment in the person's own timezone, membership at that
moment, the deterministic trigger id, and the throttle's slots. Pure: the clock and the campaigns are given.

A campaign becomes one pending deadline per person (slot `campaign:<id>|<occurrence>`), fired by the same
loop as the rules' and through the same policy gate (streams/rules/engine.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from schemas.campaigns import CAMPAIGN_RULE_PREFIX, Audience, Campaign, When
from schemas.limits import Limits
from schemas.rules import Entry, PolicyConfig, TriggerRule
from schemas.triggers import Channel, Trigger, make_trigger_id
from streams.rules.person import PendingTrigger, PersonState
from streams.rules.policy import person_zone
from streams.rules.variants import choose_variant

# What the pending entry remembers of the scheduling moment: whether the person was in the audience then, so
# someone who left meanwhile is suppressed with the reason, and someone who never was is dropped quietly.
MEMBER_AT_SCHEDULE = "member"
# A pending entry the throttle moved owns the slot it was given: it is not made to wait again.
THROTTLED = "throttled"

# Occurrences of a recurrence already sent are skipped; at most this many in a row (a week's expiry at most).
MOST_SKIPPED_OCCURRENCES = 16


@dataclass(frozen=True)
class CampaignPlan:
    """A campaign as the core uses it: with the rule the policy gate and the variant split read."""

    campaign: Campaign
    rule: TriggerRule
    cancelled: bool = False


def plan(campaign: Campaign, cancelled: bool = False) -> CampaignPlan:
    """The plan of a campaign: with the trigger rule the gate and the variant split read."""
    # The gate and the variant split take a TriggerRule; this one is never in a rules file. Its name is the
    # campaign's `campaign:<id>`, which no file's rule may use (validated, then renamed).
    rule = TriggerRule(
        name="campaign",
        entry=Entry(event="campaign"),
        channel=campaign.channel,
        template_id=campaign.template_id,
        variants=campaign.variants,
        holdout_percent=campaign.holdout_percent,
        requires_opt_in=campaign.requires_opt_in,
        quiet_hours=campaign.quiet_hours,
        expires_after=campaign.expires_after,
        send_time=campaign.send_time,
        send_window=campaign.send_window,
    ).model_copy(update={"name": campaign.rule_name})
    return CampaignPlan(campaign, rule, cancelled)


@dataclass(frozen=True)
class Campaigns:
    """What the core is told of campaigns for one call: every known one by rule name (cancelled ones too, so
    their deadlines are dropped with the reason), and the throttle's holds: rule name -> wait until."""

    plans: Mapping[str, CampaignPlan] = field(default_factory=dict)
    held_until: Mapping[str, datetime] = field(default_factory=dict)


NO_CAMPAIGNS = Campaigns()


def is_campaign(rule_name: str) -> bool:
    """Whether a rule name is a campaign's."""
    return rule_name.startswith(CAMPAIGN_RULE_PREFIX)


@dataclass(frozen=True)
class Occurrence:
    """One occurrence of a campaign for one recipient."""

    label: str  # "once" for an instant, the local date otherwise: the same for every recipient
    due_at: datetime  # in UTC, for this recipient's timezone
    nominal: datetime  # the occurrence itself, the same for everyone: part of the trigger id


def _local(day: date, when: When, zone: ZoneInfo) -> Occurrence:
    assert when.local_time is not None
    due = datetime.combine(day, when.local_time, tzinfo=zone).astimezone(UTC)
    # The wall time read as UTC: one value per occurrence whatever the recipient's zone.
    nominal = datetime.combine(day, when.local_time, tzinfo=UTC)
    return Occurrence(day.isoformat(), due, nominal)


def occurrence_from(when: When, zone: ZoneInfo, not_before: datetime) -> Occurrence | None:
    """The first occurrence due at or after `not_before` for a recipient in `zone`, or None."""
    if when.at is not None:
        return Occurrence("once", when.at, when.at) if when.at >= not_before else None
    if when.day is not None:
        single = _local(when.day, when, zone)
        return single if single.due_at >= not_before else None
    assert when.every is not None
    day = not_before.astimezone(zone).date() - timedelta(days=1)  # a zone ahead of UTC may be on the next day
    if when.starting is not None and day < when.starting:
        day = when.starting
    day += timedelta(days=(when.every.number - day.weekday()) % 7)
    for _ in range(3):
        if when.until is not None and day > when.until:
            return None
        candidate = _local(day, when, zone)
        if candidate.due_at >= not_before:
            return candidate
        day += timedelta(days=7)
    return None


def next_occurrence(
    campaign: Campaign, zone: ZoneInfo, now: datetime, taken: Callable[[str], bool]
) -> Occurrence | None:
    """The occurrence this recipient should wait for: the first not yet `taken` (pending or sent) whose moment
    is not older than the expiry (a moment just passed still goes out at once)."""
    not_before = now - campaign.expires_after
    for _ in range(MOST_SKIPPED_OCCURRENCES):
        found = occurrence_from(campaign.when, zone, not_before)
        if found is None or not taken(found.label):
            return found
        not_before = found.due_at + timedelta(microseconds=1)
    return None


def in_audience(segments: Mapping[str, Any], audience: Audience) -> bool:
    """Whether a person in `segments` is in the audience: in one of its segments and in none it excludes."""
    return any(name in segments for name in audience.segments) and not any(
        name in segments for name in audience.exclude
    )


def schedulable(state: PersonState) -> bool:
    """Only known people get deadlines: an anonymous visitor, a contact id or a redirect is nobody to send to."""
    return state.profile.identified and state.merged_into is None and not state.contact_of


def pending_with_campaigns(
    state: PersonState,
    pending: dict[str, PendingTrigger],
    now: datetime,
    plans: Iterable[CampaignPlan],
    policy: PolicyConfig,
    limits: Limits,
) -> dict[str, PendingTrigger]:
    """One deadline waiting per live campaign (its next occurrence for this person); `pending` itself when
    nothing is added, so callers can tell by identity."""
    if not schedulable(state):
        return pending
    updated = pending
    zone: ZoneInfo | None = None
    for each in plans:
        if each.cancelled:
            continue
        prefix = f"{each.rule.name}|"
        if any(slot.startswith(prefix) for slot in updated):
            continue  # one occurrence at a time: the next is scheduled when this one is decided
        zone = zone or person_zone(state, policy)
        found = next_occurrence(
            each.campaign,
            zone,
            now,
            lambda label: f"{prefix}{label}" in state.fired,  # noqa: B023
        )
        if found is None or len(updated) >= limits.pending:
            continue
        if updated is pending:
            updated = dict(pending)
        member = in_audience(state.segments, each.campaign.audience)
        updated[f"{prefix}{found.label}"] = PendingTrigger(
            rule=each.rule.name,
            key=found.label,
            entered_at=now,
            due_at=found.due_at,
            fire_at=max(found.due_at, now),
            context={MEMBER_AT_SCHEDULE: member, "nominal": found.nominal.isoformat()},
        )
    return updated


def campaign_trigger(state: PersonState, waiting: PendingTrigger, each: CampaignPlan, now: datetime) -> Trigger:
    """The message a person's occurrence becomes; its id depends on the campaign, the occurrence and the person
    only, so it is the same across crashes, rebalances, replays and reschedules."""
    campaign = each.campaign
    nominal = datetime.fromisoformat(str(waiting.context.get("nominal") or waiting.due_at.isoformat()))
    variant = choose_variant(state.person_id, each.rule)
    template = next((v.template_id for v in campaign.variants if v.name == variant and v.template_id), None)
    profile = state.profile
    context: dict[str, Any] = {"campaign": campaign.id, "occurrence": waiting.key}
    if profile.name:
        context["name"] = profile.name
    return Trigger(
        trigger_id=make_trigger_id(each.rule.name, state.person_id, waiting.key, nominal),
        rule=each.rule.name,
        person_id=state.person_id,
        channel=campaign.channel,
        template_id=template or campaign.template_id,
        due_at=waiting.due_at,
        fired_at=now,
        variant=variant,
        address=profile.email if campaign.channel is Channel.EMAIL else profile.phone,
        locale=profile.locale,
        expires_at=waiting.due_at + campaign.expires_after,
        context=context,
    )


def throttle_holds(
    state: PersonState,
    up_to: datetime,
    plans: Mapping[str, CampaignPlan],
    per_message: Mapping[str, timedelta],
    next_free: dict[str, datetime],
) -> dict[str, datetime]:
    """The throttle as slots in time: each due occurrence of a throttled campaign takes the next free slot
    (`per_message` apart); one whose slot is later waits until it. `next_free` (rule name -> the next free
    slot, one partition's) is advanced in place. Returns rule name -> hold until, for those that wait."""
    held: dict[str, datetime] = {}
    for waiting in state.pending.values():
        interval = per_message.get(waiting.rule)
        if interval is None or waiting.fire_at > up_to or waiting.context.get(THROTTLED):
            continue
        if waiting.rule not in plans or plans[waiting.rule].cancelled:
            continue
        free = next_free.get(waiting.rule)
        slot = up_to if free is None or free <= up_to else free
        next_free[waiting.rule] = slot + interval
        if slot > up_to:
            held[waiting.rule] = slot
    return held
