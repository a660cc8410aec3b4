"""Campaigns: one message to everyone in a segment at a chosen time, and the control messages that schedule
and cancel them (the compacted `campaigns` topic, keyed by campaign id, read whole by every runner).

A campaign file is YAML validated like the rules (`nudgeflow campaign check FILE`); a bad file is refused
with the line, the field and the reason, and a bad control message is dead-lettered with its reason.
"""

from __future__ import annotations

import datetime as dt
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from schemas.events import UtcDatetime, WireModel
from schemas.limits import decode_validated
from schemas.rules import (
    Duration,
    InvalidRules,
    QuietHoursAction,
    RuleModel,
    RulesConfig,
    SendTime,
    Variant,
    check_send_time,
    send_window_in_range,
    validated_yaml,
)
from schemas.triggers import Channel

# Names the triggers, suppressions and pending deadlines of a campaign: `campaign:<id>`. No trigger rule can be
# named so (rule names are lowercase words), so a campaign never collides with a rule.
CAMPAIGN_RULE_PREFIX = "campaign:"

# A control message carries one campaign: a few KiB at most in practice; anything far larger is refused.
CONTROL_BYTES = 64 * 1024

# A recurrence is bounded so the next occurrence is always found in a few steps and history stays small.
LONGEST_EXPIRY = timedelta(days=7)


class Weekday(StrEnum):
    """A day of the week a recurring campaign goes out on; `number` counts from Monday as 0."""

    MONDAY = "monday"
    TUESDAY = "tuesday"
    WEDNESDAY = "wednesday"
    THURSDAY = "thursday"
    FRIDAY = "friday"
    SATURDAY = "saturday"
    SUNDAY = "sunday"

    @property
    def number(self) -> int:
        return list(Weekday).index(self)


class Audience(RuleModel):
    """Members of any of `segments` who are in none of `exclude`, checked again at each person's moment."""

    segments: list[str] = Field(min_length=1, max_length=20)
    exclude: list[str] = Field(default_factory=list, max_length=20)


class When(RuleModel):
    """Exactly one of: an instant (`at`); a local time on a date in each recipient's timezone (`local_time`
    with `day`, a date); or a local time every week (`local_time` with `every`, from `starting` until `until`)."""

    at: UtcDatetime | None = None
    local_time: dt.time | None = None
    day: dt.date | None = Field(default=None, description="with local_time: that day in each recipient's zone")
    every: Weekday | None = None
    starting: dt.date | None = None
    until: dt.date | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> When:
        kinds = [self.at is not None, self.day is not None, self.every is not None]
        if sum(kinds) != 1:
            raise ValueError("when needs exactly one of `at`, `day` (with local_time) or `every` (with local_time)")
        if self.at is None and self.local_time is None:
            raise ValueError("`day` and `every` need `local_time`, the hour in each recipient's timezone")
        if self.at is not None and self.local_time is not None:
            raise ValueError("`at` is an instant: it takes no `local_time`")
        if self.every is None and (self.starting is not None or self.until is not None):
            raise ValueError("`starting` and `until` bound a recurrence (`every`)")
        if self.starting is not None and self.until is not None and self.until < self.starting:
            raise ValueError("`until` is before `starting`")
        return self


class Campaign(RuleModel):
    """What to send, to whom, when, and how fast."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    description: str = Field(default="", max_length=1000)
    audience: Audience
    when: When
    channel: Channel
    template_id: str = Field(min_length=1, max_length=200)
    variants: list[Variant] = Field(default_factory=list, max_length=10)
    holdout_percent: float = Field(default=0.0, ge=0, lt=100)
    throttle_per_minute: int | None = Field(default=None, ge=1, le=1_000_000, description="across all runners")
    expires_after: Duration = Field(
        default=timedelta(hours=12), gt=timedelta(0), le=LONGEST_EXPIRY,
        description="how late a person's message may still go out (a runner down, throttled, quiet hours)",
    )  # fmt: skip
    requires_opt_in: bool = False
    quiet_hours: QuietHoursAction = QuietHoursAction.DEFER
    send_time: SendTime = Field(default=SendTime.NOW, description="best: each person's best hour (send_window)")
    send_window: Duration | None = Field(default=None, description="with `send_time: best`: how long it may wait")

    _window_in_range = field_validator("send_window")(send_window_in_range)

    @model_validator(mode="after")
    def _send_time(self) -> Campaign:
        check_send_time(self.send_time, self.send_window, self.when.local_time)
        return self

    @property
    def rule_name(self) -> str:
        return f"{CAMPAIGN_RULE_PREFIX}{self.id}"

    def unknown_segments(self, rules: RulesConfig) -> list[str]:
        known = {segment.name for segment in rules.segments}
        return sorted({*self.audience.segments, *self.audience.exclude} - known)


class CampaignOp(StrEnum):
    """What a control message does to a campaign: schedule it or cancel it."""

    SCHEDULE = "schedule"
    CANCEL = "cancel"


class CampaignControl(WireModel):
    """One record of the campaigns topic, keyed by campaign id; compaction keeps the latest per campaign, and a
    cancellation stays (not a tombstone) so a runner that starts later still knows not to send."""

    op: Literal["schedule", "cancel"]
    campaign_id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    campaign: Campaign | None = None
    at: UtcDatetime

    @model_validator(mode="after")
    def _consistent(self) -> CampaignControl:
        if self.op == CampaignOp.SCHEDULE.value and self.campaign is None:
            raise ValueError("a schedule message carries its campaign")
        if self.campaign is not None and self.campaign.id != self.campaign_id:
            raise ValueError(f"campaign id {self.campaign.id!r} is not the message's {self.campaign_id!r}")
        return self


class InvalidCampaign(ValueError):
    """A campaign file or control message that cannot be used, with the reason."""


def parse_campaign(text: str, source: str = "<campaign>", rules: RulesConfig | None = None) -> Campaign:
    """The campaign in `text`; with `rules`, its segments must be the rules' own."""
    try:
        campaign = validated_yaml(Campaign, text, source, "campaign file")
    except InvalidRules as error:
        raise InvalidCampaign(str(error)) from None
    if rules is not None and (unknown := campaign.unknown_segments(rules)):
        raise InvalidCampaign(f"{source}: audience names unknown segments: {', '.join(unknown)}")
    return campaign


def load_campaign(path: Path, rules: RulesConfig | None = None) -> Campaign:
    """The campaign in the file at `path`; with `rules`, its segments must be the rules' own."""
    try:
        text = path.read_text()
    except OSError as error:
        raise InvalidCampaign(f"{path}: cannot read the campaign file: {error.strerror}") from None
    return parse_campaign(text, str(path), rules)


def parse_control(raw: bytes | None, key: bytes | None) -> CampaignControl:
    """A record of the campaigns topic, or InvalidCampaign with the reason (for its dead letter)."""
    message = decode_validated(raw, CampaignControl.model_validate, CONTROL_BYTES, InvalidCampaign, "campaign message")
    if key != message.campaign_id.encode():
        # Compaction keeps the latest record per key: a campaign under another key could never be cancelled.
        raise InvalidCampaign(f"keyed {key!r}, not by its campaign id {message.campaign_id!r}")
    return message


def control_message(op: CampaignOp, campaign_id: str, at: datetime, campaign: Campaign | None = None) -> bytes:
    """The control message, as JSON, that schedules or cancels a campaign."""
    message = CampaignControl(op=op.value, campaign_id=campaign_id, campaign=campaign, at=at)
    return message.to_json()
