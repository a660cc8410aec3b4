"""The send-time histogram in chDB: opens and clicks counted in each reader's own local hour."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from schemas.settings import Settings
from sinks.analytics.queries import Period, engagement_by_local_hour
from sinks.analytics.report import REPORTS
from sinks.clickhouse.rows import EVENTS, PROFILE_SNAPSHOTS, RowOptions, event_row, profile_snapshot_row

pytestmark = pytest.mark.integration
DAY = datetime(2026, 11, 10, tzinfo=UTC)


def email_event(name: str, person: str, moment: datetime, message_id: str | None = None) -> bytes:
    return orjson.dumps(
        {
            "type": "track",
            "event": name,
            "userId": person,
            "messageId": message_id or str(uuid.uuid4()),
            "timestamp": moment.isoformat(),
            "properties": {},
        }
    )


def test_opens_and_clicks_count_in_each_readers_local_hour_and_the_busiest_is_best(
    sink_settings: Settings, clickhouse: Any
) -> None:
    options = RowOptions.of(sink_settings)
    opened = [
        # Someone in Shanghai opening at 01:xx UTC, 09:xx their time, on three days; one message stored twice.
        *(email_event("Email Opened", "mei", DAY + timedelta(days=d, hours=1, minutes=5)) for d in range(3)),
        email_event("Email Opened", "mei", DAY + timedelta(days=3, hours=1), message_id="twice"),
        email_event("Email Opened", "mei", DAY + timedelta(days=3, hours=1), message_id="twice"),
        # Someone without a profile's timezone: counted in UTC.
        email_event("Email Opened", "sam", DAY + timedelta(hours=15, minutes=30)),
        email_event("Email Clicked", "sam", DAY + timedelta(hours=15, minutes=31)),
        # Outside the period, and not an engagement event.
        email_event("Email Opened", "sam", DAY - timedelta(days=40)),
        email_event("Email Delivered", "sam", DAY + timedelta(hours=15)),
    ]
    rows = [event_row(raw, "events", 0, n, options, DAY + timedelta(days=5)) for n, raw in enumerate(opened)]
    clickhouse.insert("events", rows, column_names=list(EVENTS.columns))
    profile = orjson.dumps({"person_id": "mei", "event_count": 5, "timezone": "Asia/Shanghai"})
    snapshot = profile_snapshot_row(profile, b"mei", options)
    clickhouse.insert("profile_snapshots", [snapshot], column_names=list(PROFILE_SNAPSHOTS.columns))

    period = Period(DAY - timedelta(days=1), DAY + timedelta(days=5))
    hours = {row.hour: row for row in engagement_by_local_hour(clickhouse, period)}
    assert sorted(hours) == list(range(24))
    assert (hours[9].opens, hours[9].clicks) == (4, 0)
    assert (hours[15].opens, hours[15].clicks) == (1, 1)
    assert sum(row.opens + row.clicks for row in hours.values()) == 6
    assert [hour for hour, row in hours.items() if row.best] == [9]
    report = REPORTS["send-times"](clickhouse, period.since, period.until)
    assert [row["hour"] for row in report if row["best"]] == [9]
