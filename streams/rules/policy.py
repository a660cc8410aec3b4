"""The policy gate every due nudge passes, in order: erased or unknown person, address, consent,
paused channel, frequency caps, quiet hours and the best send time, dedupe, expiry, holdout. Each refusal
has a reason."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from schemas.profile import ConsentState
from schemas.rules import PolicyConfig, QuietHours, QuietHoursAction, SendTime, TriggerRule
from schemas.triggers import HOLDOUT_VARIANT, Channel, SuppressionReason, Trigger
from streams.rules.person import PersonState


@dataclass(frozen=True)
class Send:
    """The gate's decision to send the trigger now."""

    trigger: Trigger


@dataclass(frozen=True)
class Suppress:
    """The gate's decision not to send, with the reason."""

    reason: SuppressionReason
    detail: str


@dataclass(frozen=True)
class Defer:
    """The gate's decision to try again at `until`."""

    until: datetime
    detail: str


Verdict = Send | Suppress | Defer


def person_zone(state: PersonState, policy: PolicyConfig) -> ZoneInfo:
    """The zone the person's local time is read in."""
    return zone_of(state.profile.timezone, policy)


def zone_of(timezone: str | None, policy: PolicyConfig) -> ZoneInfo:
    """The zone named on a profile, else the policy's default, else UTC."""
    for name in (timezone, policy.default_timezone):
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


# Fewer email opens and clicks than this and the person's own hours say little (one open may be a one-off,
# or a mail client fetching on delivery): the population's best hour is used instead. The simulated
# personas open within about an hour of their habit, so three opens already make that hour stand out.
MIN_OWN_OPENS = 3


def hour_starts(after: datetime, until: datetime, zone: ZoneInfo) -> Iterator[datetime]:
    """The moments after `after`, up to `until`, at which a local hour of `zone` begins (a wall-clock hour
    that a change of offset skips is given as the moment the clock jumps to)."""
    wall = after.astimezone(zone).replace(tzinfo=None, minute=0, second=0, microsecond=0)
    previous = after
    while True:
        wall += timedelta(hours=1)
        moment = wall.replace(tzinfo=zone).astimezone(after.tzinfo)
        if moment <= previous:
            continue  # the hour skipped when the clocks went forward maps to the one after it
        if moment > until:
            return
        previous = moment
        yield moment


def hour_scores(hours: Sequence[int], population_hour: int) -> tuple[list[int], bool]:
    """What each local hour is worth for sending, and whether it is the person's own history."""
    if len(hours) == 24 and sum(hours) >= MIN_OWN_OPENS:
        return list(hours), True
    return [1 if hour == population_hour else 0 for hour in range(24)], False


def best_send_moment(
    scores: Sequence[int], zone: ZoneInfo, earliest: datetime, latest: datetime, quiet: QuietHours | None
) -> datetime:
    """The moment in [earliest, latest] to send at: `earliest` itself or the start of a local hour, the one
    whose hour scores most, the earliest of those that score alike; never a moment in the quiet window
    (`earliest` is the first allowed one). `earliest` when `latest` is before it. Pure and deterministic."""
    best, best_score = earliest, scores[earliest.astimezone(zone).hour]
    for start in hour_starts(earliest, latest, zone):
        score = scores[start.astimezone(zone).hour]
        if score > best_score and (quiet is None or quiet_until(start, quiet, zone) is None):
            best, best_score = start, score
    return best


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
    zone = person_zone(state, policy)
    until = None if window is None else quiet_until(decided_at, window, zone)
    if until is not None:
        assert window is not None
        detail = f"quiet hours {window.start:%H:%M}-{window.end:%H:%M} for {trigger.channel.value}"
        if rule.quiet_hours is QuietHoursAction.DROP:
            return Suppress(SuppressionReason.QUIET_HOURS, detail)
        if trigger.expires_at is not None and until > trigger.expires_at:
            return Suppress(SuppressionReason.EXPIRED, f"{detail} last past the expiry")
    if rule.send_time is SendTime.BEST and rule.send_window is not None:
        # The window runs from when the nudge first came due, so a deferred one is never put off again past it.
        latest = trigger.due_at + rule.send_window
        if trigger.expires_at is not None:
            latest = min(latest, trigger.expires_at)
        scores, own = hour_scores(state.engagement_hours, policy.population_best_hour)
        earliest = until or decided_at
        best = best_send_moment(scores, zone, earliest, latest, window)
        if best > earliest:
            whose = "the person's" if own else "the population's"
            return Defer(best, f"{whose} best send time, {best.astimezone(zone):%H:%M} {zone.key}")
    if until is not None:
        return Defer(until, detail)
    if any(record.trigger_id == trigger.trigger_id for record in state.sent):
        return Suppress(SuppressionReason.DUPLICATE, "this trigger_id went out already")
    if trigger.expires_at is not None and now > trigger.expires_at:
        return Suppress(SuppressionReason.EXPIRED, f"could not go out before {trigger.expires_at.isoformat()}")
    if trigger.variant == HOLDOUT_VARIANT:
        return Suppress(SuppressionReason.HOLDOUT, "held out to measure the rule's lift")
    return Send(trigger)
