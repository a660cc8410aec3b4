"""Questions asked of ClickHouse, as functions returning plain Python values.

Every statement here runs unchanged on chDB and on a ClickHouse server: parameters are bound server-side
(`{name:Type}`), times travel as epoch milliseconds so no session time zone is involved, and joins are
equi-joins with the time conditions in WHERE, which every server version plans the same way.
"""

from __future__ import annotations

import dataclasses
import typing
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from schemas.campaigns import CAMPAIGN_RULE_PREFIX
from schemas.events import ENGAGEMENT_HOUR_EVENTS, EventName
from schemas.triggers import HOLDOUT_VARIANT, SuppressionReason
from sinks.analytics.attribution import Credit, Model, Touch, attribute, converted_triggers
from sinks.analytics.significance import BASELINE_NAMES, Arm, VariantTest, compare_variants
from sinks.clickhouse.erasure import PERSON_TABLES, people_of, person_parameters
from sinks.clickhouse.rows import RowOptions

COUNTED_TABLES = ("events", "triggers", "dead_letters")
DEFAULT_ATTRIBUTION_WINDOW = timedelta(days=7)
DEFAULT_PERIOD_DAYS = 30
MAX_PERIOD_DAYS = 3660
FUNNEL_STEPS = ("Product Viewed", "Product Added", "Checkout Started", "Order Completed")
MESSAGE_EVENTS = (
    "Email Delivered",
    "Email Opened",
    "Email Clicked",
    "Email Bounced",
    "Email Unsubscribed",
    "SMS Delivered",
    "SMS Clicked",
)


def table_counts(client: Any) -> dict[str, int]:
    """Distinct rows per table (FINAL collapses rows written twice by a replay)."""
    return {
        table: int(client.query(f"SELECT count() FROM {table} FINAL").result_rows[0][0]) for table in COUNTED_TABLES
    }


def triggers_by_rule(client: Any) -> dict[str, int]:
    """How many triggers each rule has fired."""
    rows = client.query("SELECT rule, count() FROM triggers FINAL GROUP BY rule ORDER BY rule").result_rows
    return {str(rule): int(count) for rule, count in rows}


@dataclass(frozen=True)
class Period:
    """[since, until) in UTC."""

    since: datetime
    until: datetime

    @classmethod
    def last_days(cls, days: int, now: datetime | None = None) -> Period:
        end = now or datetime.now(UTC)
        return cls(end - timedelta(days=days), end)

    @classmethod
    def parse(
        cls, since: str | None = None, until: str | None = None, days: str | None = None, now: datetime | None = None
    ) -> Period:
        """The one reading of a period, for `nudgeflow report` and the web API alike: from `since` (an ISO
        time) or else the `days` (default 30) before `until` (an ISO time, default now). A time without a
        zone is UTC. ValueError with the reason."""
        end = _moment(until, "until") if until else now or datetime.now(UTC)
        if since:
            start = _moment(since, "since")
        else:
            text = days or str(DEFAULT_PERIOD_DAYS)
            try:
                count = int(text)
            except ValueError:
                raise ValueError(f"days must be a whole number, not {text[:40]!r}") from None
            if not 1 <= count <= MAX_PERIOD_DAYS:
                raise ValueError(f"days must be between 1 and {MAX_PERIOD_DAYS}")
            start = end - timedelta(days=count)
        if start >= end:
            raise ValueError("since must be before until")
        return cls(start, end)

    def parameters(self) -> dict[str, Any]:
        return {
            "since_ms": _epoch_ms(self.since),
            "until_ms": _epoch_ms(self.until),
            "since_day": self.since.astimezone(UTC).date(),
            "until_day": self.until.astimezone(UTC).date(),
        }


def _moment(text: str, name: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{name} must be an ISO time, not {text[:40]!r}") from None
    return _utc(moment)


def _utc(moment: datetime) -> datetime:
    """A moment read from ClickHouse (naive, in UTC) or given without a zone, as an aware UTC datetime."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _epoch_ms(moment: datetime) -> int:
    return int(_utc(moment).timestamp() * 1000)


Answer = TypeVar("Answer")


def _typed(kind: type[Answer], rows: Iterable[Sequence[Any]]) -> list[Answer]:
    """Rows whose columns are the dataclass `kind`'s fields in order, each value made its field's type:
    ClickHouse answers counts as UInt64, sums as Decimal, moments naive in UTC, a missing string as NULL."""
    casts = _casts(kind)
    return [kind(*(cast(value) for cast, value in zip(casts, row, strict=True))) for row in rows]


def _casts(kind: type) -> tuple[Callable[[Any], Any], ...]:
    if kind not in _CASTS_OF:
        hints = typing.get_type_hints(kind)
        _CASTS_OF[kind] = tuple(_CAST_TO[hints[field.name]] for field in dataclasses.fields(kind))
    return _CASTS_OF[kind]


_CASTS_OF: dict[type, tuple[Callable[[Any], Any], ...]] = {}
_CAST_TO: dict[Any, Callable[[Any], Any]] = {
    str: lambda value: "" if value is None else str(value),
    int: int,
    float: float,
    bool: bool,
    datetime: _utc,
}


SINCE = "fromUnixTimestamp64Milli({since_ms:Int64}, 'UTC')"
UNTIL = "fromUnixTimestamp64Milli({until_ms:Int64}, 'UTC')"
DAYS = "day >= {since_day:Date} AND day <= {until_day:Date}"


# --- per rule and variant -------------------------------------------------------------------------


@dataclass(frozen=True)
class RuleVariantStats:
    """What one arm of one rule achieved: its messages' engagement, conversions and revenue."""

    rule: str
    variant: str
    sent: int
    delivered: int
    opened: int
    clicked: int
    bounced: int
    unsubscribed: int
    converted: int
    revenue: float  # last-touch attributed, so an order nudged twice is not counted twice
    delivery_rate: float
    open_rate: float  # of delivered
    click_rate: float  # of delivered
    conversion_rate: float  # of sent


ENGAGEMENT_SQL = f"""
SELECT t.rule, t.variant, count() AS sent,
       countIf(has(m.seen, 'Email Delivered') OR has(m.seen, 'SMS Delivered')) AS delivered,
       countIf(has(m.seen, 'Email Opened')) AS opened,
       countIf(has(m.seen, 'Email Clicked') OR has(m.seen, 'SMS Clicked')) AS clicked,
       countIf(has(m.seen, 'Email Bounced')) AS bounced,
       countIf(has(m.seen, 'Email Unsubscribed')) AS unsubscribed
FROM
(
    SELECT trigger_id, rule, ifNull(variant, '') AS variant
    FROM triggers FINAL
    WHERE fired_at >= {SINCE} AND fired_at < {UNTIL}
) AS t
LEFT JOIN
(
    SELECT trigger_id, groupUniqArray(event) AS seen
    FROM message_events
    WHERE trigger_id IN (SELECT trigger_id FROM triggers WHERE fired_at >= {SINCE} AND fired_at < {UNTIL})
    GROUP BY trigger_id
) AS m ON m.trigger_id = t.trigger_id
GROUP BY t.rule, t.variant
ORDER BY t.rule, t.variant
"""

# Candidate (order, nudge) pairs: same person, order after the nudge and inside the window.
# `anchor` picks which side the period applies to: nudges fired in it (rule report) or orders placed
# in it (attribution report). `nudges` is `triggers`, or `suppressions` for the people a holdout kept a
# nudge from, whose orders are what the nudge is measured against.
TOUCHES_SQL = """
SELECT o.order_id, o.revenue, t.trigger_id, t.rule, t.variant, t.fired_at
FROM
(
    SELECT trigger_id, rule, ifNull(variant, '') AS variant, person_id, fired_at
    FROM {nudges} FINAL
    WHERE {trigger_filter}
) AS t
INNER JOIN
(
    SELECT person_id, order_id, at, revenue
    FROM orders FINAL
    WHERE {order_filter}
) AS o ON o.person_id = t.person_id
WHERE o.at > t.fired_at AND o.at <= t.fired_at + toIntervalSecond({{window_s:UInt32}})
"""


def touches(
    client: Any, period: Period, window: timedelta, anchor: str, nudges: str = "triggers", only: str = ""
) -> list[Touch]:
    """Each order paired with every nudge fired for its person within `window` before it; with `anchor`
    "triggers" the period bounds the nudges, otherwise the orders."""
    within_window_before = f"{SINCE} - toIntervalSecond({{window_s:UInt32}})"
    if anchor == "triggers":
        trigger_filter = f"fired_at >= {SINCE} AND fired_at < {UNTIL}"
        order_filter = f"at > {SINCE}"
    else:
        trigger_filter = f"fired_at >= {within_window_before} AND fired_at < {UNTIL}"
        order_filter = f"at >= {SINCE} AND at < {UNTIL}"
    if only:
        trigger_filter = f"{trigger_filter} AND {only}"
    sql = TOUCHES_SQL.format(nudges=nudges, trigger_filter=trigger_filter, order_filter=order_filter)
    parameters = {**period.parameters(), "window_s": int(window.total_seconds())}
    return _typed(Touch, client.query(sql, parameters=parameters).result_rows)


def rule_report(client: Any, period: Period, window: timedelta = DEFAULT_ATTRIBUTION_WINDOW) -> list[RuleVariantStats]:
    """The engagement, conversions and attributed revenue of each rule and variant over the period."""
    engagement = client.query(ENGAGEMENT_SQL, parameters=period.parameters()).result_rows
    pairs = touches(client, period, window, anchor="triggers")
    converted_by_arm: dict[tuple[str, str], int] = defaultdict(int)
    rule_of = {pair.trigger_id: (pair.rule, pair.variant) for pair in pairs}
    for trigger_id in converted_triggers(pairs):
        converted_by_arm[rule_of[trigger_id]] += 1
    revenue_by_arm = {(c.rule, c.variant): c.revenue for c in attribute(pairs, Model.LAST_TOUCH)}
    report = []
    for rule, variant, sent, delivered, opened, clicked, bounced, unsubscribed in engagement:
        arm = (str(rule), str(variant))
        converted = converted_by_arm.get(arm, 0)
        report.append(
            RuleVariantStats(
                rule=arm[0],
                variant=arm[1],
                sent=int(sent),
                delivered=int(delivered),
                opened=int(opened),
                clicked=int(clicked),
                bounced=int(bounced),
                unsubscribed=int(unsubscribed),
                converted=converted,
                revenue=round(revenue_by_arm.get(arm, 0.0), 2),
                delivery_rate=_ratio(delivered, sent),
                open_rate=_ratio(opened, delivered),
                click_rate=_ratio(clicked, delivered),
                conversion_rate=_ratio(converted, sent),
            )
        )
    return report


def variant_significance(report: list[RuleVariantStats]) -> list[VariantTest]:
    """Whether each variant converts differently from its rule's baseline, from a rules report."""
    return _significance([(row.rule, Arm(row.variant, row.converted, row.sent)) for row in report])


def _significance(arms_of: list[tuple[str, Arm]], baselines: tuple[str, ...] = BASELINE_NAMES) -> list[VariantTest]:
    arms: dict[str, list[Arm]] = defaultdict(list)
    for group, arm in arms_of:
        arms[group].append(arm)
    return [test for group in sorted(arms) for test in compare_variants(group, arms[group], baselines=baselines)]


# --- per campaign and variant ---------------------------------------------------------------------


@dataclass(frozen=True)
class CampaignVariantStats:
    """One arm of a campaign: a variant, or the holdout. Everything counts the people whose moment came in the
    period (the nudge's fired_at, sent or suppressed)."""

    campaign: str
    variant: str  # "" without variants; "holdout" for the people held out to measure the lift
    audience: int  # in the audience at their moment: sent, or suppressed for any reason but having left it
    sent: int
    suppressed: int
    suppressed_by_reason: dict[str, int]
    delivered: int
    opened: int
    clicked: int
    converted: int  # ordered within the attribution window after their moment
    revenue: float  # last-touch over all nudges as in the rule report; the holdout's own orders
    unsubscribed: int
    conversion_rate: float  # of sent; of those held out for the holdout


HOLDOUT = SuppressionReason.HOLDOUT.value
# A campaign's suppressions of people who were not in its audience at their moment: not part of it.
OUTSIDE_AUDIENCE = frozenset({SuppressionReason.NOT_IN_AUDIENCE.value, SuppressionReason.CANCELLED.value})

CAMPAIGN_RULES = f"startsWith(rule, '{CAMPAIGN_RULE_PREFIX}')"

CAMPAIGN_SUPPRESSIONS_SQL = f"""
SELECT rule, ifNull(variant, '') AS variant, reason, count()
FROM suppressions FINAL
WHERE {CAMPAIGN_RULES} AND fired_at >= {SINCE} AND fired_at < {UNTIL}
GROUP BY rule, variant, reason
ORDER BY rule, variant, reason
"""


def campaign_report(
    client: Any, period: Period, window: timedelta = DEFAULT_ATTRIBUTION_WINDOW
) -> list[CampaignVariantStats]:
    """Per campaign and arm. The sent arms are the rule report's rows of the campaign's rule
    (`campaign:<id>`), so a campaign's figures are the same wherever they are read."""
    sent = {(row.rule, row.variant): row for row in rule_report(client, period, window) if _is_campaign(row.rule)}
    held: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
    for rule, variant, reason, count in client.query(
        CAMPAIGN_SUPPRESSIONS_SQL, parameters=period.parameters()
    ).result_rows:
        held[(str(rule), str(variant))][str(reason)] = int(count)
    # The holdout's conversions: orders after the moment their nudge was held back, credited among those alone.
    pairs = touches(client, period, window, "triggers", "suppressions", f"{CAMPAIGN_RULES} AND reason = '{HOLDOUT}'")
    held_converted: dict[tuple[str, str], int] = defaultdict(int)
    arm_of = {pair.trigger_id: (pair.rule, pair.variant) for pair in pairs}
    for trigger_id in converted_triggers(pairs):
        held_converted[arm_of[trigger_id]] += 1
    held_revenue = {(c.rule, c.variant): c.revenue for c in attribute(pairs, Model.LAST_TOUCH)}
    report = []
    for arm in sorted(set(sent) | set(held)):
        row, reasons = sent.get(arm), held.get(arm, {})
        suppressed = sum(reasons.values())
        count_sent = row.sent if row else 0
        converted = row.converted if row else held_converted.get(arm, 0)
        held_out = reasons.get(HOLDOUT, 0)
        report.append(
            CampaignVariantStats(
                campaign=arm[0].removeprefix(CAMPAIGN_RULE_PREFIX),
                variant=arm[1],
                audience=count_sent + sum(n for reason, n in reasons.items() if reason not in OUTSIDE_AUDIENCE),
                sent=count_sent,
                suppressed=suppressed,
                suppressed_by_reason=dict(sorted(reasons.items(), key=lambda item: (-item[1], item[0]))),
                delivered=row.delivered if row else 0,
                opened=row.opened if row else 0,
                clicked=row.clicked if row else 0,
                converted=converted,
                revenue=row.revenue if row else round(held_revenue.get(arm, 0.0), 2),
                unsubscribed=row.unsubscribed if row else 0,
                conversion_rate=_ratio(converted, count_sent if row else held_out),
            )
        )
    return report


def campaign_significance(report: list[CampaignVariantStats]) -> list[VariantTest]:
    """Each arm of a campaign against its holdout when it has one (the campaign's lift), else against the
    baseline variant as for the rules; the holdout's trials are the people held out."""
    arms = [
        (row.campaign, Arm(row.variant, row.converted, row.sent or row.suppressed_by_reason.get(HOLDOUT, 0)))
        for row in report
        if row.sent or row.variant == HOLDOUT_VARIANT
    ]
    return _significance(arms, baselines=(HOLDOUT_VARIANT, *BASELINE_NAMES))


def _is_campaign(rule: str) -> bool:
    return rule.startswith(CAMPAIGN_RULE_PREFIX)


def attribution(
    client: Any, period: Period, model: Model, window: timedelta = DEFAULT_ATTRIBUTION_WINDOW
) -> list[Credit]:
    """Orders placed in the period, credited to the nudges of the window before each."""
    return attribute(touches(client, period, window, anchor="orders"), model)


def _ratio(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


# --- dashboards -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DailyRates:
    """One day's message counts and open and click rates."""

    day: date
    sent: int
    delivered: int
    opened: int
    clicked: int
    bounced: int
    unsubscribed: int
    open_rate: float
    click_rate: float


def daily_rates(client: Any, period: Period) -> list[DailyRates]:
    """Per day: nudges sent (from the rollup) and the feedback about them, each counted once per nudge and
    kind of feedback on the day message_events keeps for it (FINAL: copies of a webhook landing either
    side of midnight would otherwise count on both days)."""
    parameters = period.parameters()
    sent = {
        day: int(count)
        for day, count in client.query(
            f"SELECT day, uniqExactMerge(sent) FROM triggers_daily WHERE {DAYS} GROUP BY day", parameters=parameters
        ).result_rows
    }
    feedback: dict[date, dict[str, int]] = defaultdict(dict)
    for day, event, count in client.query(
        f"SELECT toDate(at) AS day, event, count() FROM message_events FINAL WHERE {DAYS} GROUP BY day, event",
        parameters=parameters,
    ).result_rows:
        feedback[day][str(event)] = int(count)
    rows = []
    for day in sorted(set(sent) | set(feedback)):
        seen = feedback.get(day, {})
        delivered = seen.get("Email Delivered", 0) + seen.get("SMS Delivered", 0)
        opened = seen.get("Email Opened", 0)
        clicked = seen.get("Email Clicked", 0) + seen.get("SMS Clicked", 0)
        rows.append(
            DailyRates(
                day=day,
                sent=sent.get(day, 0),
                delivered=delivered,
                opened=opened,
                clicked=clicked,
                bounced=seen.get("Email Bounced", 0),
                unsubscribed=seen.get("Email Unsubscribed", 0),
                open_rate=_ratio(opened, delivered),
                click_rate=_ratio(clicked, delivered),
            )
        )
    return rows


@dataclass(frozen=True)
class FunnelStep:
    """One step of the purchase funnel: its events, its people and their share of the first step's."""

    step: str
    events: int
    people: int
    of_first: float  # people at this step over people at the first


def funnel(client: Any, period: Period) -> list[FunnelStep]:
    """The purchase funnel over the period, step by step."""
    found = {
        str(event): (int(events), int(people))
        for event, events, people in client.query(
            f"SELECT event, uniqExactMerge(events), uniqExactMerge(people) FROM funnel_daily WHERE {DAYS} "
            "GROUP BY event",
            parameters=period.parameters(),
        ).result_rows
    }
    first_people = found.get(FUNNEL_STEPS[0], (0, 0))[1]
    return [
        FunnelStep(step, *found.get(step, (0, 0)), _ratio(found.get(step, (0, 0))[1], first_people))
        for step in FUNNEL_STEPS
    ]


@dataclass(frozen=True)
class ReplySentimentCount:
    """SMS replies of one sentiment over a period, and how many people sent them."""

    sentiment: str  # positive, neutral, negative; "" for a reply no classifier labelled
    replies: int
    people: int


def reply_sentiments(client: Any, period: Period) -> list[ReplySentimentCount]:
    """SMS replies by the sentiment the collector gave them (the event's `sentiment` property)."""
    rows = client.query(
        "SELECT JSONExtractString(properties, 'sentiment') AS sentiment, count(), uniqExact(person_id) "
        f"FROM events FINAL WHERE event = 'SMS Replied' AND timestamp >= {SINCE} AND timestamp < {UNTIL} "
        "GROUP BY sentiment ORDER BY sentiment",
        parameters=period.parameters(),
    ).result_rows
    return _typed(ReplySentimentCount, rows)


@dataclass(frozen=True)
class DeliveryOutcome:
    """What became of the nudges of one rule and channel the sender took up in the period, by each one's
    last state in the ledger."""

    rule: str
    channel: str
    nudges: int
    sent: int
    unconfirmed: int  # handed to the provider, whose answer never came: not sent again
    failed: int
    expired: int
    in_flight: int  # sending or retrying when the period ended
    retried: int  # needed more than one attempt
    top_failure: str  # the commonest reason among the failed and expired, "" if none


DELIVERIES_SQL = f"""
SELECT rule, channel, count(), countIf(last = 'sent'), countIf(last = 'unconfirmed'), countIf(last = 'failed'),
       countIf(last = 'expired'), countIf(last IN ('sending', 'committed', 'retrying')), countIf(attempts > 1),
       arrayElement(topKIf(1)(reason, last IN ('failed', 'expired')), 1)
FROM
(
    SELECT trigger_id, any(rule) AS rule, any(channel) AS channel, max(attempt) AS attempts,
           argMax(state, (at, attempt)) AS last, argMax(reason, (at, attempt)) AS reason
    FROM deliveries FINAL
    WHERE at >= {SINCE} AND at < {UNTIL}
    GROUP BY trigger_id
)
GROUP BY rule, channel
ORDER BY rule, channel
"""


def delivery_outcomes(client: Any, period: Period) -> list[DeliveryOutcome]:
    """How the deliveries of each rule and channel ended over the period, with the most common failure."""
    rows = client.query(DELIVERIES_SQL, parameters=period.parameters()).result_rows
    return _typed(DeliveryOutcome, rows)


@dataclass(frozen=True)
class SuppressionSummary:
    """How many nudges were sent and how many suppressed, why, and day by day."""

    sent: int
    suppressed: int
    by_reason: dict[str, int]
    daily: list[dict[str, Any]]  # day, sent, suppressed


def suppressions(client: Any, period: Period) -> SuppressionSummary:
    """Nudges sent against nudges held back, by reason, from the rollups."""
    parameters = period.parameters()
    by_reason = {
        str(reason): int(count)
        for reason, count in client.query(
            f"SELECT reason, uniqExactMerge(suppressed) AS n FROM suppressions_daily WHERE {DAYS} "
            "GROUP BY reason ORDER BY n DESC, reason",
            parameters=parameters,
        ).result_rows
    }
    daily_sent = dict(
        client.query(
            f"SELECT day, uniqExactMerge(sent) FROM triggers_daily WHERE {DAYS} GROUP BY day", parameters=parameters
        ).result_rows
    )
    daily_held = dict(
        client.query(
            f"SELECT day, uniqExactMerge(suppressed) FROM suppressions_daily WHERE {DAYS} GROUP BY day",
            parameters=parameters,
        ).result_rows
    )
    total_sent = int(
        client.query(
            f"SELECT uniqExactMerge(sent) FROM triggers_daily WHERE {DAYS}", parameters=parameters
        ).result_rows[0][0]
    )
    daily = [
        {"day": day, "sent": int(daily_sent.get(day, 0)), "suppressed": int(daily_held.get(day, 0))}
        for day in sorted(set(daily_sent) | set(daily_held))
    ]
    return SuppressionSummary(total_sent, sum(by_reason.values()), by_reason, daily)


def active_people_hourly(client: Any, period: Period) -> list[dict[str, Any]]:
    """The people active in each hour of the period."""
    rows = client.query(
        f"SELECT hour, uniqExactMerge(people) FROM active_people_hourly WHERE hour >= toStartOfHour({SINCE}) "
        f"AND hour < {UNTIL} GROUP BY hour ORDER BY hour",
        parameters=period.parameters(),
    ).result_rows
    return [{"hour": hour, "people": int(people)} for hour, people in rows]


@dataclass(frozen=True)
class EngagementHour:
    """Email opens and clicks in one hour of the readers' own local day, over a period."""

    hour: int
    opens: int
    clicks: int
    best: bool


def engagement_by_local_hour(client: Any, period: Period, default_timezone: str | None = None) -> list[EngagementHour]:
    """When in their own day people open and click email: the send-time histogram, and in `best` the hour
    to set as the policy's `population_best_hour`. Each event counts in its person's timezone (the latest
    profile's, else `default_timezone`, else UTC), converted here rather than in SQL, where a time function
    takes one timezone for all rows; ClickHouse groups by zone and UTC hour, so the rows stay few."""
    names = sorted(ENGAGEMENT_HOUR_EVENTS)
    rows = client.query(
        "SELECT ifNull(p.timezone, ''), toStartOfHour(e.timestamp) AS utc_hour, e.event, uniqExact(e.message_id) "
        "FROM events AS e LEFT JOIN (SELECT person_id, argMax(timezone, version) AS timezone "
        "FROM profile_snapshots GROUP BY person_id) AS p ON e.person_id = p.person_id "
        f"WHERE e.type = 'track' AND e.event IN {{names:Array(String)}} AND e.timestamp >= {SINCE} "
        f"AND e.timestamp < {UNTIL} GROUP BY p.timezone, utc_hour, e.event",
        parameters={**period.parameters(), "names": names},
    ).result_rows
    fallback = _zone(default_timezone) or UTC
    counts = {hour: [0, 0] for hour in range(24)}
    for timezone, utc_hour, event, count in rows:
        local = _utc(utc_hour).astimezone(_zone(timezone) or fallback)
        counts[local.hour][0 if event == EventName.EMAIL_OPENED else 1] += int(count)
    totals = {hour: opens + clicks for hour, (opens, clicks) in counts.items()}
    most = max(totals.values())
    best = min(hour for hour, total in totals.items() if total == most) if most else None
    return [EngagementHour(hour, opens, clicks, hour == best) for hour, (opens, clicks) in counts.items()]


def _zone(name: str | None) -> ZoneInfo | None:
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


# --- people ---------------------------------------------------------------------------------------


def segment_members(client: Any, segment: str, day: date) -> list[str]:
    """People in `segment` at any moment of `day` (UTC): in it when the day began, or entering during it."""
    rows = client.query(
        """
        SELECT person_id
        FROM segment_changes FINAL
        WHERE segment = {segment:String} AND at < toDateTime64({day:Date} + 1, 3, 'UTC')
        GROUP BY person_id
        HAVING argMaxIf(change, at, at < toDateTime64({day:Date}, 3, 'UTC')) = 'enter'
            OR countIf(change = 'enter' AND at >= toDateTime64({day:Date}, 3, 'UTC')) > 0
        ORDER BY person_id
        """,
        parameters={"segment": segment, "day": day},
    ).result_rows
    return [str(person) for (person,) in rows]


@dataclass(frozen=True)
class Cohort:
    """One cohort of people who joined in a month, and what they have bought since."""

    cohort: date  # month of signing up, or of the first event for people who never signed up
    people: int
    buyers: int
    orders: int
    revenue: float
    lifetime_value: float  # revenue per person of the cohort, to date


# FINAL: a person's first event is read from the one copy of each message ClickHouse keeps, so the cohort
# a person falls in does not move when copies merge.
COHORTS_SQL = """
SELECT p.cohort, count() AS people, countIf(o.orders > 0) AS buyers, sum(o.orders) AS orders,
       sum(o.revenue) AS revenue
FROM
(
    SELECT person_id,
           toStartOfMonth(if(countIf(event = 'Signed Up') > 0, minIf(timestamp, event = 'Signed Up'), min(timestamp)))
               AS cohort
    FROM events FINAL
    GROUP BY person_id
) AS p
LEFT JOIN
(
    SELECT person_id, count() AS orders, sum(revenue) AS revenue FROM orders FINAL GROUP BY person_id
) AS o ON o.person_id = p.person_id
GROUP BY p.cohort
ORDER BY p.cohort
"""


def cohort_lifetime_value(client: Any) -> list[Cohort]:
    """Every monthly cohort with its buyers, orders, revenue and lifetime value to date."""
    return [
        Cohort(cohort, int(people), int(buyers), int(orders), round(float(revenue), 2), _money(revenue, people))
        for cohort, people, buyers, orders, revenue in client.query(COHORTS_SQL).result_rows
    ]


def _money(amount: float, people: int) -> float:
    return round(float(amount) / people, 2) if people else 0.0


@dataclass(frozen=True)
class ChurnRisk:
    """One buyer and how overdue their next order is, against their usual interval between orders."""

    person_id: str
    orders: int
    last_order: datetime
    last_seen: datetime
    days_since_order: float
    usual_interval_days: float | None  # None for one-time buyers
    overdue: float  # days since the last order over the allowed gap; above 1 is at risk


# The rule, per buyer: repeat buyers are at risk once the time since their last order is more than
# CHURN_INTERVAL_FACTOR times their average gap between orders (but at least CHURN_MIN_DAYS, so a
# weekly buyer is not flagged after eight days); one-time buyers once ONE_TIME_BUYER_DAYS have passed.
# Recent browsing does not clear the flag (last_seen is shown so a marketer can tell the two apart).
CHURN_INTERVAL_FACTOR = 2.0
CHURN_MIN_DAYS = 14
ONE_TIME_BUYER_DAYS = 60

CHURN_SQL = """
SELECT person_id, orders, last_order, last_seen, days_since, usual_days,
       days_since / if(orders >= 2, greatest({factor:Float64} * usual_days, {min_days:Float64}), {one_time:Float64})
           AS overdue
FROM
(
    SELECT o.person_id AS person_id, o.orders AS orders, o.last_order AS last_order,
           greatest(e.last_seen, o.last_order) AS last_seen,
           (toUnixTimestamp64Milli(fromUnixTimestamp64Milli({now_ms:Int64}, 'UTC'))
               - toUnixTimestamp64Milli(o.last_order)) / 86400000 AS days_since,
           if(o.orders >= 2,
              (toUnixTimestamp64Milli(o.last_order) - toUnixTimestamp64Milli(o.first_order))
                  / 86400000 / (o.orders - 1),
              NULL) AS usual_days
    FROM
    (
        SELECT person_id, count() AS orders, min(at) AS first_order, max(at) AS last_order
        FROM orders FINAL
        GROUP BY person_id
    ) AS o
    LEFT JOIN
    (
        SELECT person_id, max(timestamp) AS last_seen
        FROM events
        WHERE person_id IN (SELECT person_id FROM orders)
        GROUP BY person_id
    ) AS e ON e.person_id = o.person_id
)
WHERE overdue > 1
ORDER BY overdue DESC, person_id
LIMIT {limit:UInt32}
"""


def churn_risk(client: Any, now: datetime | None = None, limit: int = 100) -> list[ChurnRisk]:
    """The buyers most overdue for their next order, as of `now`, at most `limit` of them."""
    parameters = {
        "now_ms": _epoch_ms(now or datetime.now(UTC)),
        "factor": CHURN_INTERVAL_FACTOR,
        "min_days": float(CHURN_MIN_DAYS),
        "one_time": float(ONE_TIME_BUYER_DAYS),
        "limit": limit,
    }
    return [
        ChurnRisk(
            person_id=str(person),
            orders=int(orders),
            last_order=last_order,
            last_seen=last_seen,
            days_since_order=round(float(days_since), 2),
            usual_interval_days=None if usual is None else round(float(usual), 2),
            overdue=round(float(overdue), 2),
        )
        for person, orders, last_order, last_seen, days_since, usual, overdue in client.query(
            CHURN_SQL, parameters=parameters
        ).result_rows
    ]


@dataclass(frozen=True)
class ScoreBin:
    """People whose score lies in [low, high) (the last bin of a probability includes 1)."""

    low: float
    high: float | None  # None: no upper bound
    people: int


@dataclass(frozen=True)
class ScoreDistribution:
    """The latest training run's scores across people: churn risk in tenths, predicted value in bands."""

    model_version: str | None  # None until `nudgeflow models train` has stored scores
    people: int
    churn_risk: list[ScoreBin]
    predicted_clv: list[ScoreBin]


# Bands of predicted value in the shop's order currency: roughly doubling, so one-off buyers and the loyal
# both fall in bands of their own whatever the currency's scale.
CLV_BANDS = (0.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0)

SCORES_SQL = """
SELECT least(toUInt8(floor(churn_risk * 10)), 9) AS tenth, {bands:Array(Float64)} AS bands,
       arrayCount(edge -> edge <= predicted_clv, bands) - 1 AS band, count()
FROM scores FINAL
WHERE model_version = {version:String}
GROUP BY tenth, band
"""


def score_distribution(client: Any) -> ScoreDistribution:
    """How the latest model version's churn risk and predicted value spread over the people it scored."""
    latest = client.query("SELECT model_version FROM scores ORDER BY scored_at DESC, model_version DESC LIMIT 1")
    if not latest.result_rows:
        return ScoreDistribution(None, 0, [], [])
    version = str(latest.result_rows[0][0])
    tenths = [0] * 10
    bands = [0] * len(CLV_BANDS)
    for tenth, _, band, count in client.query(
        SCORES_SQL, parameters={"version": version, "bands": list(CLV_BANDS)}
    ).result_rows:
        tenths[int(tenth)] += int(count)
        bands[int(band)] += int(count)
    churn = [ScoreBin(round(n / 10, 1), round((n + 1) / 10, 1), people) for n, people in enumerate(tenths)]
    edges = [*CLV_BANDS[1:], None]
    value = [ScoreBin(low, high, people) for low, high, people in zip(CLV_BANDS, edges, bands, strict=True)]
    return ScoreDistribution(version, sum(tenths), churn, value)


@dataclass(frozen=True)
class BacktestFigure:
    """One figure of the latest back-test (`nudgeflow models evaluate`) beside its naive baseline."""

    evaluated_at: datetime
    cutoff: datetime
    horizon_days: int
    people: int
    figure: str
    model: float
    baseline: float
    beats_baseline: bool


LATEST_BACKTEST_SQL = """
SELECT evaluated_at, cutoff, horizon_days, people, figure, model, baseline, beats_baseline
FROM model_evaluations FINAL
WHERE evaluated_at = (SELECT max(evaluated_at) FROM model_evaluations)
ORDER BY figure
"""


def latest_backtest(client: Any) -> list[BacktestFigure]:
    """The figures of the latest back-test run, each with whether the model beat its baseline; empty before
    the first `nudgeflow models evaluate`."""
    return _typed(BacktestFigure, client.query(LATEST_BACKTEST_SQL).result_rows)


# --- privacy --------------------------------------------------------------------------------------

# Columns holding JSON text, returned parsed so an export reads as one document.
JSON_COLUMNS = frozenset({"properties", "context", "profile"})


def person_export(client: Any, person_id: str, options: RowOptions) -> dict[str, Any]:
    """Everything ClickHouse holds about a person (right of access): the rows of every person-level table,
    for their id and the anonymous ids merged into it, as erasure would delete them."""
    people = people_of(client, person_id, options)
    parameters = person_parameters(people)
    tables: dict[str, list[dict[str, Any]]] = {}
    for target in PERSON_TABLES:
        result = client.query(f"SELECT * FROM {target.table} WHERE {target.matches}", parameters=parameters)
        names = list(result.column_names)
        tables[target.table] = [
            {name: _exported(name, value) for name, value in zip(names, row, strict=True)} for row in result.result_rows
        ]
    return {"person_id": person_id, "ids": people, "tables": tables, "rows": sum(map(len, tables.values()))}


def _exported(column: str, value: Any) -> Any:
    if column in JSON_COLUMNS and isinstance(value, str):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    return value
