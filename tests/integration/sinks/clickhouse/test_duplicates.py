"""Copies of one event collapse on (person_id, message_id) in chDB whatever timestamp each copy was given (the
collector derives it from the sentAt skew, so a retry through another replica differs slightly), and every
report counts the event once - also on a database written before the events table was keyed that way."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from schemas.settings import Settings
from sinks.analytics import queries
from sinks.analytics.attribution import Model
from sinks.clickhouse.client import connect
from sinks.clickhouse.rows import EVENTS, TRIGGERS, RowOptions, event_row, trigger_row
from sinks.clickhouse.schema import apply_migrations, migration_files, statements
from tests.integration.conftest import TEST_HASH_SECRET
from tests.integration.sinks.scenario import nudge

pytestmark = pytest.mark.integration

OPTIONS = RowOptions(TEST_HASH_SECRET.encode())
# Either side of midnight at the end of a month: the two copies fall in different days, hours and months.
MIDNIGHT = datetime(2026, 1, 31, 23, 59, 59, 600_000, tzinfo=UTC)
SKEW = timedelta(milliseconds=800)


@pytest.fixture
def sink_settings(chdb_path: Path) -> Settings:
    """No broker here: rows are inserted as the sink inserts them."""
    return Settings(
        clickhouse_path=chdb_path, clickhouse_database=f"t{uuid.uuid4().hex[:10]}", hash_secret=TEST_HASH_SECRET
    )


def copies(name: str, person: str, moment: datetime, **properties: Any) -> list[bytes]:
    """One event as two collector replicas would publish it: same messageId, timestamps SKEW apart."""
    message_id = str(uuid.uuid4())
    return [
        orjson.dumps(
            {
                "type": "track",
                "event": name,
                "userId": person,
                "messageId": message_id,
                "timestamp": at.isoformat(),
                "properties": properties,
            }
        )
        for at in (moment, moment + SKEW)
    ]


def insert_each_copy_apart(client: Any, events: list[list[bytes]]) -> None:
    """Every copy in an insert of its own, with its own token: nothing is deduplicated at insert time."""
    for copy_number in (0, 1):
        rows = [event_row(pair[copy_number], "events", 0, n, OPTIONS) for n, pair in enumerate(events)]
        client.insert(
            EVENTS.table,
            rows,
            column_names=list(EVENTS.columns),
            settings={"insert_deduplication_token": f"copy-{copy_number}"},
        )


def shop_with_copies(client: Any) -> int:
    """A person who views, signs up, is nudged, opens the email and orders; every event sent twice."""
    trigger = nudge("cart_abandonment", "ana", MIDNIGHT - timedelta(hours=1), None)
    client.insert(TRIGGERS.table, [trigger_row(trigger.to_json(), OPTIONS)], column_names=list(TRIGGERS.columns))
    events = [
        copies("Signed Up", "ana", MIDNIGHT - timedelta(days=3)),
        copies("Product Viewed", "ana", MIDNIGHT, product_id="sku-1"),
        copies("Email Opened", "ana", MIDNIGHT, trigger_id=trigger.trigger_id),
        copies("Order Completed", "ana", MIDNIGHT, order_id="o1", revenue=40.0),
    ]
    insert_each_copy_apart(client, events)
    return len(events)


def assert_counted_once(client: Any, distinct: int) -> None:
    assert int(client.query("SELECT count() FROM events FINAL").result_rows[0][0]) == distinct
    period = queries.Period(MIDNIGHT - timedelta(days=10), MIDNIGHT + timedelta(days=2))
    funnel = {step.step: (step.events, step.people) for step in queries.funnel(client, period)}
    assert funnel["Product Viewed"] == (1, 1) and funnel["Order Completed"] == (1, 1)
    rates = queries.daily_rates(client, period)
    assert sum(day.opened for day in rates) == 1  # on one day, though the copies straddle midnight
    assert sum(day.sent for day in rates) == 1
    [cohort] = queries.cohort_lifetime_value(client)
    assert (cohort.cohort, cohort.people, cohort.orders, cohort.revenue) == (
        MIDNIGHT.date().replace(day=1),
        1,
        1,
        40.0,
    )
    [arm] = queries.rule_report(client, period)
    assert (arm.sent, arm.opened, arm.converted, arm.revenue) == (1, 1, 1, 40.0)
    [credit] = queries.attribution(client, period, Model.LAST_TOUCH)
    assert (credit.orders, credit.revenue) == (1, 40.0)


async def test_copies_with_different_timestamps_collapse_and_are_counted_once(
    sink_settings: Settings, clickhouse: Any
) -> None:
    distinct = shop_with_copies(clickhouse)
    assert int(clickhouse.query("SELECT count() FROM events").result_rows[0][0]) == 2 * distinct  # not merged yet
    assert_counted_once(clickhouse, distinct)
    # Once merged, a single row per event is left on disk, across the month boundary too.
    clickhouse.command("OPTIMIZE TABLE events FINAL")
    assert int(clickhouse.query("SELECT count() FROM events").result_rows[0][0]) == distinct
    assert_counted_once(clickhouse, distinct)


async def test_a_database_written_before_the_new_key_is_migrated_with_its_rows_and_views(
    sink_settings: Settings,
) -> None:
    client = connect(sink_settings)
    try:
        # The schema as it was before 005, with copies already stored twice under the old key.
        client.command(
            "CREATE TABLE IF NOT EXISTS schema_migrations (name String, applied_at DateTime64(3, 'UTC') "
            "DEFAULT now64(3)) ENGINE = ReplacingMergeTree ORDER BY name"
        )
        earlier = [(name, sql) for name, sql in migration_files() if name < "005"]
        assert len(earlier) == 4
        for name, sql in earlier:
            for statement in statements(sql):
                client.command(statement)
            client.insert("schema_migrations", [[name]], column_names=["name"])
        distinct = shop_with_copies(client)
        client.command("OPTIMIZE TABLE events FINAL")
        assert int(client.query("SELECT count() FROM events FINAL").result_rows[0][0]) == 2 * distinct

        assert apply_migrations(client) == [name for name, _ in migration_files() if name >= "005"]
        assert "ORDER BY (person_id, message_id)" in str(
            client.query(
                "SELECT create_table_query FROM system.tables WHERE database = currentDatabase() AND name = 'events'"
            ).result_rows[0][0]
        )
        assert_counted_once(client, distinct)

        # The views feed the rollups from the new table: a later order and view arrive in them.
        later = [
            copies("Product Viewed", "ben", MIDNIGHT, product_id="sku-2"),
            copies("Order Completed", "ben", MIDNIGHT, order_id="o2", revenue=10.0),
        ]
        insert_each_copy_apart(client, later)
        period = queries.Period(MIDNIGHT - timedelta(days=1), MIDNIGHT + timedelta(days=1))
        funnel = {step.step: step.people for step in queries.funnel(client, period)}
        assert funnel["Product Viewed"] == 2 and funnel["Order Completed"] == 2
        revenue = client.query("SELECT sum(revenue) FROM orders FINAL").result_rows[0][0]
        assert revenue == pytest.approx(50.0)
        tables = {str(name) for (name,) in client.query("SHOW TABLES").result_rows}
        assert "events_by_message" not in tables and "events_by_time_retired" not in tables
    finally:
        client.close()
