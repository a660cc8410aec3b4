"""Analytics on the real broker and chDB: known answers, replays that change nothing, an outage, the dashboard."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from schemas.settings import Settings
from sinks.analytics import queries
from sinks.analytics.attribution import Model
from sinks.analytics.web import build_web_app, start_web
from sinks.clickhouse.rows import EVENTS, SEGMENT_CHANGES, SUPPRESSIONS, TRIGGERS
from sinks.clickhouse.writer import ClickHouseSink
from sinks.predictions.evaluate import Comparison, Evaluation, store_evaluation
from sinks.predictions.publish import store_scores
from tests.integration.conftest import API_AUTH, TEST_API_TOKEN, free_port
from tests.integration.sinks.analytics.test_score_distribution import score
from tests.integration.sinks.browser import CHROMIUM, chromium
from tests.integration.sinks.scenario import Scenario, shop, track
from tests.integration.sinks.sink_runner import sink_while

pytestmark = pytest.mark.integration


def final_counts(client: Any, tables: list[str]) -> dict[str, int]:
    return {t: int(client.query(f"SELECT count() FROM {t} FINAL").result_rows[0][0]) for t in tables}


async def load(scenario: Scenario, settings: Settings, client: Any, producer: KafkaProducer) -> ClickHouseSink:
    scenario.send(producer, settings)
    expected = scenario.expected_counts
    sink = ClickHouseSink(settings, client)
    await sink_while(sink, lambda: final_counts(client, list(expected)) == expected)
    return sink


def answers(client: Any, now: datetime) -> dict[str, Any]:
    period = queries.Period(now - timedelta(days=30), now)
    return {
        "rules": queries.rule_report(client, period),
        "linear": queries.attribution(client, period, Model.LINEAR),
        "last": queries.attribution(client, period, Model.LAST_TOUCH),
        "funnel": queries.funnel(client, period),
        "rates": queries.daily_rates(client, period),
        "held": queries.suppressions(client, period),
        "active": queries.active_people_hourly(client, period),
        "cohorts": queries.cohort_lifetime_value(client),
        "churn": queries.churn_risk(client, now=now),
    }


async def test_reports_give_the_known_answers_and_a_replay_changes_none_of_them(
    sink_settings: Settings, clickhouse: Any, producer: KafkaProducer
) -> None:
    now = datetime.now(UTC)
    scenario = shop(now)
    await load(scenario, sink_settings, clickhouse, producer)
    first = answers(clickhouse, now)

    arms = {(r.rule, r.variant): r for r in first["rules"]}
    control, b = arms[("cart_abandonment", "control")], arms[("cart_abandonment", "b")]
    assert (control.sent, control.delivered, control.opened, control.clicked, control.converted) == (4, 4, 2, 1, 1)
    assert (b.sent, b.delivered, b.opened, b.clicked, b.bounced, b.unsubscribed, b.converted) == (4, 3, 3, 2, 1, 1, 1)
    assert (control.open_rate, b.click_rate, b.conversion_rate) == (0.5, round(2 / 3, 4), 0.25)
    assert (control.revenue, b.revenue, arms[("browse_abandonment", "")].revenue) == (0.0, 50.0, 100.0)
    [test] = queries.variant_significance(first["rules"])
    assert (test.baseline, test.variant, test.p_value) == ("control", "b", pytest.approx(1.0))

    assert {(c.rule, c.variant): (c.orders, c.revenue) for c in first["linear"]} == {
        ("browse_abandonment", ""): (0.5, 50.0),
        ("cart_abandonment", "b"): (1.0, 50.0),
        ("cart_abandonment", "control"): (0.5, 50.0),
    }
    assert [(s.step, s.people) for s in first["funnel"]] == [
        ("Product Viewed", 8),
        ("Product Added", 5),
        ("Checkout Started", 3),
        ("Order Completed", 3),
    ]
    assert (first["held"].sent, first["held"].by_reason) == (9, {"quiet_hours": 2, "frequency_cap": 1})
    assert sum(day.sent for day in first["rates"]) == 9
    assert sum(day.delivered for day in first["rates"]) == 7
    assert sum(c.people for c in first["cohorts"]) == 9
    assert sum(c.revenue for c in first["cohorts"]) == pytest.approx(220.0)
    assert [(r.person_id, r.orders, r.overdue) for r in first["churn"]] == [("p9", 2, 4.5)]
    assert queries.segment_members(clickhouse, "vip", (scenario.base - timedelta(days=2)).date()) == ["p1", "p2"]
    assert queries.segment_members(clickhouse, "vip", (scenario.base + timedelta(days=2)).date()) == ["p1", "p3"]

    # A replay: a second consumer group reads every topic again through the sink...
    replay = ClickHouseSink(sink_settings, clickhouse, group_id=f"{sink_settings.app_id}-replay")
    await sink_while(replay, lambda: replay.stats.rows_written["events"] >= len(scenario.events))
    # ...and, because the sink's batches can line up with the first run's and be deduplicated by token,
    # the same rows once more without a token, which certainly reach the materialized views twice.
    for spec in (EVENTS, TRIGGERS, SUPPRESSIONS, SEGMENT_CHANGES):
        columns = ", ".join(spec.columns)
        clickhouse.command(f"INSERT INTO {spec.table} ({columns}) SELECT {columns} FROM {spec.table}")
    assert int(clickhouse.query("SELECT count() FROM events").result_rows[0][0]) >= 2 * len(scenario.events)
    assert answers(clickhouse, now) == first


async def test_sink_retries_through_an_outage_commits_nothing_and_then_writes_each_event_once(
    sink_settings: Settings, clickhouse: Any, producer: KafkaProducer
) -> None:
    settings = sink_settings
    now = datetime.now(UTC)
    sink = ClickHouseSink(settings, clickhouse)
    partitions = [TopicPartition(settings.events_topic, p) for p in range(settings.partitions)]

    def committed() -> int:
        consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=sink.group_id)
        try:
            return sum(consumer.committed(tp) or 0 for tp in partitions)
        finally:
            consumer.close()

    def events_rows() -> tuple[int, int]:
        row = clickhouse.query("SELECT count(), uniqExact(message_id) FROM events").result_rows[0]
        return int(row[0]), int(row[1])

    task = asyncio.create_task(sink.run())
    try:
        producer.send(settings.events_topic, key=b"w", value=track("Product Viewed", "w", now, product_id="s"))
        await wait_for(lambda: events_rows() == (1, 1) and committed() == 1)

        clickhouse.command("DETACH TABLE events")
        for i in range(20):
            person = f"o{i}"
            producer.send(
                settings.events_topic, key=person.encode(), value=track("Product Viewed", person, now, product_id="s")
            )
        producer.flush()
        await wait_for(lambda: sink.stats.insert_errors >= 3, extra=sink.stats)
        assert committed() == 1  # nothing read during the outage is acknowledged
        assert "events" in (sink.stats.last_error or "")

        clickhouse.command("ATTACH TABLE events")
        await wait_for(lambda: events_rows() == (21, 21) and committed() == 21, within=60)
    finally:
        sink.stop()
        await task
    assert events_rows() == (21, 21)
    assert sink.metrics.insert_errors.labels("events")._value.get() == sink.stats.insert_errors


async def wait_for(condition: Callable[[], bool], within: float = 30, extra: Any = None) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await asyncio.to_thread(condition):
            return
        await asyncio.sleep(0.3)
    raise AssertionError(f"condition not met in time; {extra}")


async def test_dashboard_renders_real_figures_in_headless_chromium(
    sink_settings: Settings, clickhouse: Any, producer: KafkaProducer, tmp_path: Path
) -> None:
    if not shutil.which(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing: `make browser` installs Debian's chromium package")
    sink = await load(shop(datetime.now(UTC)), sink_settings, clickhouse, producer)
    store_scores(clickhouse, [score("p1", "v1", 0.05, 30.0), score("p2", "v1", 0.9, 400.0)])
    # A back-test where the churn model beats the recency rule and the value model loses to the average.
    comparisons = [Comparison("churn AUC", 0.8125, 0.7, False), Comparison("value MAE", 52.5, 48.25, True)]
    evaluation = Evaluation(datetime(2026, 9, 1, tzinfo=UTC), 90, 1200, 0.4, comparisons, {})
    store_evaluation(clickhouse, evaluation, datetime.now(UTC))
    port = free_port()
    runner = await start_web(build_web_app(clickhouse, sink.metrics, sink_settings), "127.0.0.1", port)
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/metrics") as response:
                metrics = await response.text()
            async with http.get(f"{url}/api/variants?days=30", headers=API_AUTH) as response:
                variants = await response.json()
        assert 'nudgeflow_sink_rows_written_total{table="events"}' in metrics
        assert sum(arm["sent"] for arm in variants["arms"]) == 9

        screenshot = tmp_path / "dashboard.png"
        # The token travels in the fragment, which the browser keeps to itself; the page sends it as a header.
        with_token = f"{url}/dashboard#token={TEST_API_TOKEN}"
        dom = await chromium(tmp_path / "a", "--dump-dom", with_token)
        await chromium(tmp_path / "b", f"--screenshot={screenshot}", with_token)
        without = await chromium(tmp_path / "c", "--dump-dom", f"{url}/dashboard")
        wrong = await chromium(tmp_path / "d", "--dump-dom", f"{url}/dashboard#token=not-{TEST_API_TOKEN}")
    finally:
        await runner.cleanup()
    assert 'data-loaded="unauthorized"' in without and "No API token" in without, without[-2000:]
    assert 'data-loaded="unauthorized"' in wrong and "The API token was refused" in wrong, wrong[-2000:]
    assert 'data-kpi="sent"' not in without + wrong  # no figures without a token
    assert 'data-loaded="true"' in dom, dom[-2000:]
    assert 'data-chart="funnel" data-points="4"' in dom
    assert 'data-chart="variants" data-points="3"' in dom
    assert 'data-chart="suppressions" data-points="3"' in dom
    assert 'data-chart="rates" data-points=' in dom
    # Five people opened and three clicked (shop()); two have scores.
    assert 'data-chart="send-times" data-points="24"' in dom
    assert 'data-chart="churn-risk" data-points="10"' in dom
    assert 'data-chart="predicted-clv" data-points="9"' in dom
    assert 'data-chart="backtest" data-points="2"' in dom
    assert "trained before 2026-09-01, scored the 90 days after; 1,200 customers" in dom
    assert '<td>churn AUC</td><td>0.813</td><td>0.7</td><td data-beats="true">yes</td>' in dom
    assert '<td>value MAE</td><td>52.5</td><td>48.25</td><td data-beats="false">no</td>' in dom
    assert 'data-kpi="sent">sent<b>9</b>' in dom
    assert 'data-kpi="revenue">revenue<b>150</b>' in dom
    assert "held: quiet_hours" in dom
    assert screenshot.stat().st_size > 10_000
    if kept := os.environ.get("NUDGEFLOW_KEEP_SCREENSHOT"):  # `make screenshot`: the README's picture
        shutil.copyfile(screenshot, kept)
