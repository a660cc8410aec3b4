"""The rules configuration: profile settings, segments, trigger rules and the policy gate.

Rules are data (YAML validated here), not code. A bad file is refused with the line, the field and the
reason (`nudgeflow rules check FILE`).
"""

from __future__ import annotations

import functools
import re
from datetime import time, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from schemas.triggers import Channel

ModelT = TypeVar("ModelT", bound=BaseModel)

DEFAULT_RULES_FILE = Path(__file__).resolve().parent / "default_rules.yaml"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _parse_duration(value: object) -> object:
    """Accept "15s", "30m", "2h", "1d", "1w" besides what pydantic takes (seconds, ISO 8601)."""
    if isinstance(value, str) and (match := _DURATION.match(value)):
        return timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2)])
    return value


Duration = Annotated[timedelta, BeforeValidator(_parse_duration)]


def describe_duration(length: timedelta) -> str:
    """The shortest way the rules file would write `length`: 1d, 30m, 15s."""
    seconds = length.total_seconds()
    for unit in ("w", "d", "h", "m", "s"):
        amount = seconds / _UNIT_SECONDS[unit]
        if amount >= 1 and amount == int(amount):
            return f"{int(amount)}{unit}"
    return f"{seconds:g}s"


class RuleModel(BaseModel):
    """The base of every part of a rules file: unknown keys are refused, and nothing changes once read."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class TimerPolicy(RuleModel):
    """How long a deadline waits for late events before it fires (docs/architecture.md, "Event time")."""

    grace: Duration = Field(default=timedelta(seconds=5), ge=timedelta(0))


class LifecycleThresholds(RuleModel):
    """Lifecycle stage by recency: new (first seen recently), active, at_risk, churned."""

    new_for: Duration = timedelta(days=7)
    at_risk_after: Duration = timedelta(days=30)
    churned_after: Duration = timedelta(days=90)


class ProfileConfig(RuleModel):
    """How profiles are kept: the half-life of engagement, the lifecycle thresholds and how many views to remember."""

    engagement_half_life: Duration = Field(default=timedelta(days=14), gt=timedelta(0))
    lifecycle: LifecycleThresholds = LifecycleThresholds()
    recently_viewed: int = Field(default=10, ge=0, le=50)


class Operator(StrEnum):
    """How a condition compares a fact with its value."""

    EQ = "=="
    NE = "!="
    GT = ">"
    GE = ">="
    LT = "<"
    LE = "<="
    IN = "in"


# Facts from the person's predicted scores (schemas.scores, joined from the scores topic); unset for a person
# without scores, so every comparison on them is false then.
SCORE_FACTS = (
    "churn_risk", "predicted_clv", "purchase_propensity", "expected_next_order_days", "scores_age_days",
)  # fmt: skip

# The facts a segment condition can test (computed by streams.rules.facts.profile_facts).
FACT_NAMES = frozenset(
    {
        "event_count", "order_count", "lifetime_revenue", "unopened_emails", "identified", "has_email",
        "has_phone", "email_consent", "sms_consent", "engagement", "lifecycle_stage",
        "rfm_recency", "rfm_frequency", "rfm_monetary", "rfm_score",
        *(f"{measure}_{days}d" for measure in ("views", "adds", "orders", "revenue") for days in (7, 30, 90)),
        *(
            f"days_since_{what}"
            for what in ("last_seen", "first_seen", "last_visit", "last_login", "last_order",
                         "last_email_open", "last_email_click")
        ),
        *SCORE_FACTS,
        "last_reply_sentiment", "days_since_negative_reply",  # SMS replies (streams/collector/sentiment.py)
    }
)  # fmt: skip


class Condition(RuleModel):
    """One test on a profile fact, e.g. `{fact: views_30d, op: ">=", value: 1}`."""

    fact: str
    op: Operator = Operator.GE
    value: float | str | bool | list[str] | None

    @model_validator(mode="after")
    def _known_fact(self) -> Condition:
        if self.fact not in FACT_NAMES:
            raise ValueError(f"unknown fact {self.fact!r}; known facts: {', '.join(sorted(FACT_NAMES))}")
        return self


class SegmentRule(RuleModel):
    """Members are the people whose facts meet all conditions in `all` and at least one in `any`."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    description: str = ""
    all: list[Condition] = Field(default_factory=list)
    any: list[Condition] = Field(default_factory=list)

    @model_validator(mode="after")
    def _has_conditions(self) -> SegmentRule:
        if not self.all and not self.any:
            raise ValueError("a segment needs at least one condition in `all` or `any`")
        return self


class Entry(RuleModel):
    """What starts a trigger: an event (optionally only with given properties) or entering a segment."""

    event: str | None = None
    segment: str | None = None
    birthday: bool = False
    where: dict[str, str | float | bool] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _exactly_one(self) -> Entry:
        if sum([self.event is not None, self.segment is not None, self.birthday]) != 1:
            raise ValueError("entry needs exactly one of `event`, `segment` or `birthday: true`")
        return self


class Exit(RuleModel):
    """An event that cancels a pending trigger; with `match`, only for the same key (e.g. cart_id)."""

    event: str
    match: bool = True


class Reentry(StrEnum):
    """How often one person may enter a trigger rule: every time, once, once per key or once per period."""

    EVERY_TIME = "every_time"
    ONCE = "once"
    ONCE_PER_KEY = "once_per_key"
    ONCE_PER_PERIOD = "once_per_period"


class Step(RuleModel):
    """One message of a series, `delay` after entry."""

    delay: Duration = Field(ge=timedelta(0))
    template_id: str


class Variant(RuleModel):
    """One arm of a rule's test: its name, its share of the people and the template it sends."""

    name: str
    weight: float = Field(gt=0)
    template_id: str | None = None


class QuietHoursAction(StrEnum):
    """What becomes of a nudge due in quiet hours: deferred to their end, or dropped."""

    DEFER = "defer"
    DROP = "drop"


class SendTime(StrEnum):
    """When a due nudge goes out: at once, or at the person's best hour within `send_window`."""

    NOW = "now"
    BEST = "best"


# The longest a nudge may wait for the person's best hour: a day covers every hour of the local day once; a
# week, each hour of every weekday. Longer, and the nudge is stale (and the gate looks at more hours).
SEND_WINDOW_RANGE = (timedelta(hours=1), timedelta(days=7))


def send_window_in_range(window: timedelta | None) -> timedelta | None:
    """`send_window` itself, or ValueError when it is outside SEND_WINDOW_RANGE (rules and campaigns alike)."""
    shortest, longest = SEND_WINDOW_RANGE
    if window is not None and not shortest <= window <= longest:
        raise ValueError(
            f"send_window must be between {describe_duration(shortest)} and {describe_duration(longest)}, "
            f"not {describe_duration(window)}"
        )
    return window


def check_send_time(send_time: SendTime, send_window: timedelta | None, local_time: time | None) -> None:
    """ValueError unless `send_time` and `send_window` go together, and no local hour is also asked for."""
    if send_time is SendTime.NOW:
        if send_window is not None:
            raise ValueError("`send_window` is only for `send_time: best`")
        return
    if send_window is None:
        raise ValueError("send_time best needs `send_window`, e.g. 24h: how long the nudge may wait")
    if local_time is not None:
        raise ValueError("`send_time: best` and `local_time` both choose the hour: give one")


class TriggerRule(RuleModel):
    """One trigger rule: what enters it, how long it waits, what ends it, and what it sends on which channel."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    description: str = ""
    enabled: bool = True
    entry: Entry
    key: str | None = Field(default=None, description="event property that tells occurrences apart, e.g. cart_id")
    delay: Duration = Field(default=timedelta(0), ge=timedelta(0))
    restart_on_repeat: bool = Field(
        default=False, description="a repeated entry for the same key moves the deadline (the last activity counts)"
    )
    steps: list[Step] = Field(default_factory=list, description="a series; overrides delay and template_id")
    exit: list[Exit] = Field(default_factory=list)
    reentry: Reentry = Reentry.ONCE_PER_KEY
    reentry_period: Duration | None = None
    channel: Channel
    template_id: str = ""
    priority: int = 0
    variants: list[Variant] = Field(default_factory=list)
    holdout_percent: float = Field(default=0.0, ge=0, le=100)
    requires_opt_in: bool = False
    quiet_hours: QuietHoursAction = QuietHoursAction.DEFER
    expires_after: Duration | None = None
    send_time: SendTime = Field(default=SendTime.NOW, description="best: at the person's best hour (send_window)")
    send_window: Duration | None = Field(default=None, description="with `send_time: best`: how long it may wait")
    local_time: time | None = Field(default=None, description="with `birthday`: the local hour it goes out")
    context: Literal["cart", "product", "order", "none"] = "none"
    paused_in_segments: list[str] = Field(
        default_factory=list, description="segments whose members this rule sends nothing to (suppressed: paused)"
    )

    _window_in_range = field_validator("send_window")(send_window_in_range)

    @model_validator(mode="after")
    def _consistent(self) -> TriggerRule:
        if not self.steps and not self.template_id:
            raise ValueError("a trigger needs `template_id` or `steps`")
        if self.reentry is Reentry.ONCE_PER_PERIOD and self.reentry_period is None:
            raise ValueError("reentry once_per_period needs `reentry_period`")
        check_send_time(self.send_time, self.send_window, self.local_time)
        return self

    @property
    def schedule(self) -> list[Step]:
        return self.steps or [_single_step(self.delay, self.template_id)]


@functools.lru_cache(maxsize=256)
def _single_step(delay: timedelta, template_id: str) -> Step:
    # The schedule of a rule without `steps`, asked for on every entry and firing: built once, not each time.
    return Step(delay=delay, template_id=template_id)


class Cap(RuleModel):
    """A frequency cap: at most `count` messages on a channel per period `per`."""

    count: int = Field(ge=0)
    per: Duration = Field(gt=timedelta(0))

    def describe(self, channel: str) -> str:
        return f"at most {self.count} {channel} per {describe_duration(self.per)}"


class QuietHours(RuleModel):
    """The window of local time in which no nudge is sent; it may span midnight."""

    start: time
    end: time


class PolicyConfig(RuleModel):
    """The gate every trigger passes: caps across all rules, quiet hours, where email pauses."""

    caps: dict[Channel, list[Cap]] = Field(
        default_factory=lambda: {
            Channel.SMS: [Cap(count=1, per=timedelta(days=1))],
            Channel.EMAIL: [Cap(count=3, per=timedelta(days=7))],
        }
    )
    quiet_hours: dict[Channel, QuietHours] = Field(
        default_factory=lambda: {Channel.SMS: QuietHours(start=time(21, 0), end=time(8, 0))}
    )
    default_timezone: str = "UTC"
    # The local hour a `send_time: best` nudge goes out for people with too few opens of their own.
    # 10:00: mid-morning, what ESPs' send-time studies most often find; a shop should set its own hour,
    # the one its opens come in most (bench/RESULTS.md, "Best send time": the simulated shop's is 12).
    population_best_hour: int = Field(default=10, ge=0, le=23)
    email_paused_in_segments: list[str] = Field(default_factory=list)
    remember_sent_for: Duration = timedelta(days=30)


class RulesConfig(RuleModel):
    """A whole rules file: timers, profiles, segments, trigger rules and the send policy, with names and references
    checked."""

    timers: TimerPolicy = TimerPolicy()
    profile: ProfileConfig = ProfileConfig()
    segments: list[SegmentRule] = Field(default_factory=list)
    triggers: list[TriggerRule] = Field(default_factory=list)
    policy: PolicyConfig = PolicyConfig()

    @model_validator(mode="after")
    def _references(self) -> RulesConfig:
        segment_names = [segment.name for segment in self.segments]
        for kind, names in (("segment", segment_names), ("trigger", [rule.name for rule in self.triggers])):
            duplicates = sorted({name for name in names if names.count(name) > 1})
            if duplicates:
                raise ValueError(f"{kind} names must be unique: {', '.join(duplicates)}")
        known = set(segment_names)
        for rule in self.triggers:
            if rule.entry.segment is not None and rule.entry.segment not in known:
                raise ValueError(f"trigger {rule.name} enters on unknown segment {rule.entry.segment}")
        for name in self.policy.email_paused_in_segments:
            if name not in known:
                raise ValueError(f"policy.email_paused_in_segments names unknown segment {name}")
        for rule in self.triggers:
            for name in rule.paused_in_segments:
                if name not in known:
                    raise ValueError(f"trigger {rule.name}: paused_in_segments names unknown segment {name}")
        return self


class InvalidRules(ValueError):
    """A rules file that cannot be used, with the line and the reason."""


def _line_of(root: yaml.Node | None, location: tuple[int | str, ...]) -> int | None:
    # Walk the YAML node tree along the pydantic error location to find the 1-based line.
    node = root
    line = node.start_mark.line + 1 if node is not None else None
    for part in location:
        if isinstance(node, yaml.MappingNode):
            match = next((value for key, value in node.value if key.value == part), None)
            if match is None:
                key_node = next((key for key, _ in node.value if key.value == part), None)
                return key_node.start_mark.line + 1 if key_node is not None else line
            node = match
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            break
        line = node.start_mark.line + 1
    return line


def parse_rules(text: str, source: str = "<rules>") -> RulesConfig:
    """The rules in the YAML `text`; InvalidRules naming `source`, the line and the reason when they are not valid."""
    return validated_yaml(RulesConfig, text, source, "rules file")


def validated_yaml(model: type[ModelT], text: str, source: str, what: str) -> ModelT:
    """`text` as `model`, or InvalidRules naming the line, the field and the reason of every problem."""
    try:
        root = yaml.compose(text)
        document: Any = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        raise InvalidRules(f"{where}: not valid YAML: {getattr(error, 'problem', error)}") from None
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise InvalidRules(f"{source}:1: the {what} must be a mapping, not {type(document).__name__}")
    try:
        return model.model_validate(document)
    except ValidationError as error:
        problems = []
        for problem in error.errors(include_url=False):
            location = tuple(part for part in problem["loc"] if not str(part).startswith("function-"))
            field = ".".join(str(part) for part in location) or "(top level)"
            message = problem["msg"].removeprefix("Value error, ")
            problems.append(f"{source}:{_line_of(root, location)}: {field}: {message}")
        raise InvalidRules("\n".join(problems)) from None


def load_rules(path: Path | None) -> RulesConfig:
    """The rules in `path`, or the shipped defaults (deploy/rules.yaml) when no file is given."""
    path = path or DEFAULT_RULES_FILE
    try:
        text = path.read_text()
    except OSError as error:
        raise InvalidRules(f"{path}: cannot read the rules file: {error.strerror}") from None
    return parse_rules(text, str(path))
