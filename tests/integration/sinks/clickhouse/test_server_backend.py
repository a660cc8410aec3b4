"""The same questions against a ClickHouse server, when CLICKHOUSE_URL points at one."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from schemas.settings import Settings
from sinks.analytics import queries
from sinks.analytics.attribution import Model
from sinks.clickhouse.client import connect
from sinks.clickhouse.erasure import erase_person
from sinks.clickhouse.rows import (
    EVENTS,
    SEGMENT_CHANGES,
    SUPPRESSIONS,
    TRIGGERS,
    RowOptions,
    event_row,
    segment_change_row,
    suppression_row,
    trigger_row,
)
from sinks.clickhouse.schema import apply_migrations
from tests.integration.sinks.scenario import shop

pytestmark = pytest.mark.integration
OPTIONS = RowOptions(b"server-test-key")


@pytest.fixture
def server() -> Iterator[Any]:
    url = os.environ.get("CLICKHOUSE_URL")
    if not url:
        pytest.skip("CLICKHOUSE_URL is not set: no ClickHouse server to run the queries against")
    database = f"t{uuid.uuid4().hex[:10]}"
    client = connect(Settings(clickhouse_url=url, clickhouse_database=database))
    apply_migrations(client)
    yield client
    client.command(f"DROP DATABASE IF EXISTS {database}")
    client.close()


def load_shop(server: Any, now: datetime) -> None:
    scenario = shop(now)
    # Rows through the sink's own row functions, inserted as the sink does (no broker needed here).
    events = [event_row(value, "events", 0, n, OPTIONS) for n, (_, value) in enumerate(scenario.events)]
    server.insert(EVENTS.table, events, column_names=list(EVENTS.columns))
    server.insert(
        TRIGGERS.table,
        [trigger_row(t.to_json(), OPTIONS) for t in scenario.triggers],
        column_names=list(TRIGGERS.columns),
    )
    server.insert(
        SUPPRESSIONS.table,
        [suppression_row(s.to_json(), OPTIONS) for s in scenario.suppressions],
        column_names=list(SUPPRESSIONS.columns),
    )
    server.insert(
        SEGMENT_CHANGES.table,
        [segment_change_row(c.to_json(), OPTIONS) for c in scenario.segments],
        column_names=list(SEGMENT_CHANGES.columns),
    )


def test_every_report_runs_unchanged_on_a_server(server: Any) -> None:
    now = datetime.now(UTC)
    scenario = shop(now)
    load_shop(server, now)
    period = queries.Period(now - timedelta(days=30), now)
    arms = {(r.rule, r.variant): r for r in queries.rule_report(server, period)}
    assert arms[("cart_abandonment", "b")].converted == 1
    assert arms[("browse_abandonment", "")].revenue == 100.0
    assert sum(c.revenue for c in queries.attribution(server, period, Model.LINEAR)) == pytest.approx(150.0)
    assert [s.people for s in queries.funnel(server, period)] == [8, 5, 3, 3]
    assert queries.suppressions(server, period).by_reason == {"quiet_hours": 2, "frequency_cap": 1}
    assert sum(d.delivered for d in queries.daily_rates(server, period)) == 7
    assert sum(c.people for c in queries.cohort_lifetime_value(server)) == 9
    assert [r.person_id for r in queries.churn_risk(server, now=now)] == ["p9"]
    assert queries.active_people_hourly(server, period)
    assert queries.segment_members(server, "vip", (scenario.base + timedelta(days=2)).date()) == ["p1", "p3"]


def test_erasure_and_export_run_unchanged_on_a_server(server: Any) -> None:
    now = datetime.now(UTC)
    load_shop(server, now)
    period = queries.Period(now - timedelta(days=30), now)
    people_before = [s.people for s in queries.funnel(server, period)]
    assert queries.person_export(server, "p1", OPTIONS)["rows"] > 0
    deleted = erase_person(server, "p1", OPTIONS)
    assert deleted["events"] > 0
    assert queries.person_export(server, "p1", OPTIONS)["rows"] == 0
    assert queries.funnel(server, period)[0].people == people_before[0] - 1
    assert erase_person(server, "p1", OPTIONS) == dict.fromkeys(deleted, 0)  # a second run finds nothing left
