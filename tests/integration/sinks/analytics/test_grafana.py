"""Every panel of the Grafana dashboard runs on chDB against the migrated schema, with the datasource's
time macros expanded as the plugin expands them, and answers rows for a day of activity."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

REPO = Path(__file__).resolve().parents[4]
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "nudgeflow.json"


def panel_queries() -> list[tuple[str, str]]:
    dashboard = orjson.loads(DASHBOARD.read_bytes())
    return [(panel["title"], target["rawSql"]) for panel in dashboard["panels"] for target in panel["targets"]]


def expand(sql: str, since: datetime, until: datetime) -> str:
    # grafana-clickhouse-datasource writes $__fromTime / $__toTime as toDateTime(<unix seconds>).
    return sql.replace("$__fromTime", f"toDateTime({int(since.timestamp())})").replace(
        "$__toTime", f"toDateTime({int(until.timestamp())})"
    )


def activity(client: Any, now: datetime) -> None:
    """A nudge, its delivery, open and click, an order after it and a suppression, through the tables'
    own insert paths (the materialized views fill the rollups)."""
    at = now - timedelta(hours=2)
    stamp = at.strftime("%Y-%m-%d %H:%M:%S")
    trigger_id = "a" * 32
    client.command(
        "INSERT INTO triggers (trigger_id, rule, person_id, channel, template_id, due_at, fired_at, context) "
        f"VALUES ('{trigger_id}', 'cart_abandonment', 'p1', 'email', 'cart_abandonment', '{stamp}', '{stamp}', '{{}}')"
    )
    events = [
        ("Product Viewed", "{}"),
        ("Product Added", "{}"),
        ("Email Delivered", orjson.dumps({"trigger_id": trigger_id}).decode()),
        ("Email Opened", orjson.dumps({"trigger_id": trigger_id}).decode()),
        ("Email Clicked", orjson.dumps({"trigger_id": trigger_id}).decode()),
        ("Order Completed", orjson.dumps({"order_id": "o1", "revenue": 42.0}).decode()),
    ]
    for number, (event, properties) in enumerate(events):
        moment = (at + timedelta(minutes=number + 1)).strftime("%Y-%m-%d %H:%M:%S")
        client.command(
            "INSERT INTO events (message_id, person_id, type, event, timestamp, properties, context, topic, "
            f"partition, offset) VALUES ('m{number}', 'p1', 'track', '{event}', '{moment}', '{properties}', '{{}}', "
            f"'events', 0, {number})"
        )
    client.command(
        "INSERT INTO suppressions (trigger_id, rule, person_id, channel, template_id, due_at, fired_at, context, "
        f"reason, detail, decided_at) VALUES ('{'b' * 32}', 'cart_abandonment', 'p2', 'email', 'cart_abandonment', "
        f"'{stamp}', '{stamp}', '{{}}', 'frequency_cap', '', '{stamp}')"
    )


def test_the_dashboard_has_panels() -> None:
    assert len(panel_queries()) >= 7


@pytest.mark.parametrize(("title", "sql"), panel_queries(), ids=[title for title, _ in panel_queries()])
def test_each_panel_runs_on_the_migrated_schema(clickhouse: Any, title: str, sql: str) -> None:
    now = datetime.now(UTC)
    activity(clickhouse, now)
    rows = clickhouse.query(expand(sql, now - timedelta(days=30), now + timedelta(minutes=5))).result_rows
    assert rows, f"{title}: no rows for a day of activity"
