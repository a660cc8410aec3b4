"""The policy gate every due nudge passes, in order: erased or unknown person, address, consent,
paused channel, frequency caps, quiet hours, dedupe, expiry, holdout. Each refusal has a reason."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from schemas.profile import ConsentState
from schemas.rules import PolicyConfig, QuietHours, QuietHoursAction, TriggerRule
from schemas.triggers import HOLDOUT_VARIANT, Channel, SuppressionReason, Trigger
from streams.rules.state import PersonState


@dataclass(frozen=True)
class Send:
    trigger: Trigger


@dataclass(frozen=True)
class Suppress:
    reason: SuppressionReason
    detail: str


@dataclass(frozen=True)
class Defer:
    until: datetime
    detail: str


Verdict = Send | Suppress | Defer


def person_zone(state: PersonState, policy: PolicyConfig) -> ZoneInfo:
    for name in (state.profile.timezone, policy.default_timezone):
        if name:
            try:
                return ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return ZoneInfo("UTC")


def quiet_until(moment: datetime, window: QuietHours, zone: ZoneInfo) -> datetime | None:
    """The end of the quiet window `moment` falls in (local time of `zone`), or None outside it."""
    local = moment.astimezone(zone)
    clock = local.time()
    start, end = window.start, window.end
    inside = (start <= clock < end) if start < end else (clock >= start or clock < end)
    if not inside:
        return None
    end_day = local.date() if clock < end else local.date() + timedelta(days=1)
    return datetime.combine(end_day, end, tzinfo=zone).astimezone(moment.tzinfo)


def _sent_within(state: PersonState, channel: Channel, since: datetime, until: datetime) -> int:
    return sum(1 for record in state.sent if record.channel == channel and since < record.at <= until)


def gate(
    state: PersonState, trigger: Trigger, rule: TriggerRule, policy: PolicyConfig, decided_at: datetime, now: datetime
) -> Verdict:
    """Decide one due trigger. `decided_at` is when it was due (event time, so a replay decides alike);
    `now` is when the worker looks at it, for expiry."""
    profile = state.profile
    if not profile.identified:
        return Suppress(SuppressionReason.UNKNOWN_PERSON, "only an anonymous id is known")
    if trigger.address is None:
        return Suppress(SuppressionReason.NO_ADDRESS, f"no {trigger.channel.value} address on the profile")
    consent = profile.consent.get(trigger.channel.value)
    if consent is ConsentState.OPTED_OUT:
        return Suppress(SuppressionReason.OPTED_OUT, f"{trigger.channel.value} opted out")
    if rule.requires_opt_in and consent is not ConsentState.OPTED_IN:
        return Suppress(SuppressionReason.NO_OPT_IN, f"rule needs {trigger.channel.value} opt-in")
    if trigger.channel is Channel.EMAIL:
        paused_by = [name for name in policy.email_paused_in_segments if name in state.segments]
        if paused_by:
            return Suppress(SuppressionReason.PAUSED, f"email paused while in segment {paused_by[0]}")
    paused_by = [name for name in rule.paused_in_segments if name in state.segments]
    if paused_by:
        return Suppress(SuppressionReason.PAUSED, f"{rule.name} paused while in segment {paused_by[0]}")
    for cap in policy.caps.get(trigger.channel, []):
        if _sent_within(state, trigger.channel, decided_at - cap.per, decided_at) >= cap.count:
            return Suppress(SuppressionReason.FREQUENCY_CAP, cap.describe(trigger.channel.value))
    window = policy.quiet_hours.get(trigger.channel)
    if window is not None:
        until = quiet_until(decided_at, window, person_zone(state, policy))
        if until is not None:
            detail = f"quiet hours {window.start:%H:%M}-{window.end:%H:%M} for {trigger.channel.value}"
            if rule.quiet_hours is QuietHoursAction.DROP:
                return Suppress(SuppressionReason.QUIET_HOURS, detail)
            if trigger.expires_at is not None and until > trigger.expires_at:
                return Suppress(SuppressionReason.EXPIRED, f"{detail} last past the expiry")
            return Defer(until, detail)
    if any(record.trigger_id == trigger.trigger_id for record in state.sent):
        return Suppress(SuppressionReason.DUPLICATE, "this trigger_id went out already")
    if trigger.expires_at is not None and now > trigger.expires_at:
        return Suppress(SuppressionReason.EXPIRED, f"could not go out before {trigger.expires_at.isoformat()}")
    if trigger.variant == HOLDOUT_VARIANT:
        return Suppress(SuppressionReason.HOLDOUT, "held out to measure the rule's lift")
    return Send(trigger)
