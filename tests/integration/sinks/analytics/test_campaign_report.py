"""Campaign results on the real broker and chDB: known rows through the sink, the report per campaign and arm,
the significance against the holdout, `nudgeflow report campaigns`'s rows and the token-guarded endpoint."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kafka import KafkaProducer

from schemas.settings import Settings
from schemas.triggers import Channel, Suppression, SuppressionReason, Trigger, make_trigger_id
from sinks.analytics import queries
from sinks.analytics.report import REPORTS, render_table
from sinks.analytics.significance import two_proportion_z_test
from sinks.analytics.web import build_web_app, start_web
from sinks.clickhouse.metrics import SinkMetrics
from sinks.clickhouse.writer import ClickHouseSink
from tests.integration.conftest import API_AUTH, TEST_API_TOKEN, free_port
from tests.integration.sinks.browser import CHROMIUM, chromium
from tests.integration.sinks.scenario import Scenario, nudge, track
from tests.integration.sinks.sink_runner import sink_while

pytestmark = pytest.mark.integration


def campaign_nudge(person: str, moment: datetime, variant: str) -> Trigger:
    rule = "campaign:winter"
    return Trigger(
        trigger_id=make_trigger_id(rule, person, "2026-12-24", moment),
        rule=rule,
        person_id=person,
        channel=Channel.EMAIL,
        template_id="winter_sale",
        due_at=moment,
        fired_at=moment,
        variant=variant,
        context={"campaign": "winter", "occurrence": "2026-12-24"},
    )


def winter(now: datetime) -> Scenario:
    """The campaign `winter`: plain (c1-c4 sent, c10 opted out), countdown (c5-c7 sent, c8 capped, c9 had left
    the audience), holdout (h1-h3). c2 unsubscribes from plain; c1 (80), c5 (40), c6 (60) and h1 (25) order
    within the week; c7 orders ten days later, outside it. A rule's nudge (r1) is no campaign's."""
    base = now - timedelta(days=20)
    s = Scenario(base)
    plain = [campaign_nudge(f"c{i}", base, "plain") for i in range(1, 5)]
    countdown = [campaign_nudge(f"c{i}", base, "countdown") for i in range(5, 8)]
    s.triggers = [*plain, *countdown, nudge("cart_abandonment", "r1", base, None)]
    by_person = {t.person_id: t for t in s.triggers}

    def event(name: str, person: str, at: datetime, **properties: Any) -> None:
        s.events.append((person, track(name, person, at, **properties)))

    feedback = {
        "Email Delivered": ["c1", "c2", "c3", "c4", "c5", "c6", "r1"],
        "Email Opened": ["c1", "c2", "r1"],
        "Email Clicked": ["c1", "c5"],
        "Email Unsubscribed": ["c2"],
    }
    for name, people in feedback.items():
        for person in people:
            event(name, person, base + timedelta(hours=1), trigger_id=by_person[person].trigger_id)
    for person, revenue, after in [("c1", 80.0, 1), ("c5", 40.0, 2), ("c6", 60.0, 3), ("h1", 25.0, 1), ("c7", 9.0, 10)]:
        event("Order Completed", person, base + timedelta(days=after), order_id=f"o-{person}", revenue=revenue)
    event("Order Completed", "r1", base + timedelta(days=1), order_id="o-r1", revenue=500.0)

    def held(person: str, variant: str, reason: SuppressionReason) -> Suppression:
        return Suppression(trigger=campaign_nudge(person, base, variant), reason=reason, decided_at=base)

    s.suppressions = [
        held("c10", "plain", SuppressionReason.OPTED_OUT),
        held("c8", "countdown", SuppressionReason.FREQUENCY_CAP),
        held("c9", "countdown", SuppressionReason.NOT_IN_AUDIENCE),
        *(held(f"h{i}", "holdout", SuppressionReason.HOLDOUT) for i in range(1, 4)),
    ]
    return s


async def test_campaign_results_per_arm_with_the_significance_against_the_holdout(
    sink_settings: Settings, clickhouse: Any, producer: KafkaProducer, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    scenario = winter(now)
    scenario.send(producer, sink_settings)
    expected = scenario.expected_counts
    sink = ClickHouseSink(sink_settings, clickhouse)

    def landed() -> bool:
        tables = [t for t in expected if t != "segment_changes"]
        found = {t: int(clickhouse.query(f"SELECT count() FROM {t} FINAL").result_rows[0][0]) for t in tables}
        return found == {t: expected[t] for t in tables}

    await sink_while(sink, landed)
    period = queries.Period(now - timedelta(days=30), now)
    report = queries.campaign_report(clickhouse, period)

    arms = {row.variant: row for row in report}
    assert {row.campaign for row in report} == {"winter"}  # the rule's nudge is no campaign's
    plain, countdown, holdout = arms["plain"], arms["countdown"], arms["holdout"]
    assert (plain.audience, plain.sent, plain.suppressed, plain.suppressed_by_reason) == (5, 4, 1, {"opted_out": 1})
    assert (plain.delivered, plain.opened, plain.clicked, plain.unsubscribed) == (4, 2, 1, 1)
    assert (plain.converted, plain.revenue, plain.conversion_rate) == (1, 80.0, 0.25)
    # c9 had left the audience by their moment: suppressed with the reason, not counted in it.
    assert (countdown.audience, countdown.sent, countdown.suppressed) == (4, 3, 2)
    assert countdown.suppressed_by_reason == {"frequency_cap": 1, "not_in_audience": 1}
    assert (countdown.delivered, countdown.opened, countdown.clicked, countdown.unsubscribed) == (2, 0, 1, 0)
    assert (countdown.converted, countdown.revenue, countdown.conversion_rate) == (2, 100.0, round(2 / 3, 4))
    assert (holdout.audience, holdout.sent, holdout.suppressed_by_reason) == (3, 0, {"holdout": 3})
    assert (holdout.converted, holdout.revenue, holdout.conversion_rate) == (1, 25.0, round(1 / 3, 4))

    tests = {test.variant: test for test in queries.campaign_significance(report)}
    assert set(tests) == {"plain", "countdown"}
    assert {test.baseline for test in tests.values()} == {"holdout"}
    reference = two_proportion_z_test(1, 3, 2, 3)
    assert reference is not None
    assert tests["countdown"].p_value == pytest.approx(reference.p_value)
    assert tests["countdown"].significant is False

    rows = REPORTS["campaigns"](clickhouse, period.since, period.until)
    assert [(row["variant"], row["against"], row["audience"]) for row in rows] == [
        ("countdown", "holdout", 4),
        ("holdout", "", 3),
        ("plain", "holdout", 5),
    ]
    table = render_table(rows)
    assert "frequency_cap 1, not_in_audience 1" in table and "winter" in table

    port = free_port()
    runner = await start_web(build_web_app(clickhouse, SinkMetrics(), sink_settings), "127.0.0.1", port)
    try:
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{port}/api/campaigns?days=30"
            async with http.get(url) as response:
                assert response.status == 401
                assert "winter" not in await response.text()
            async with http.get(url, headers=API_AUTH) as response:
                assert response.status == 200
                answer = await response.json()
            async with http.get(f"http://127.0.0.1:{port}/api/campaigns?days=0", headers=API_AUTH) as response:
                assert response.status == 400
        dom = ""
        if shutil.which(CHROMIUM):
            dom = await chromium(tmp_path, "--dump-dom", f"http://127.0.0.1:{port}/dashboard#token={TEST_API_TOKEN}")
    finally:
        await runner.cleanup()
    assert {arm["variant"]: arm["audience"] for arm in answer["arms"]} == {"plain": 5, "countdown": 4, "holdout": 3}
    assert {test["variant"] for test in answer["tests"]} == {"plain", "countdown"}
    if dom:  # without Chromium (`make browser`), the endpoint's figures above are what the page would show
        assert 'data-loaded="true"' in dom, dom[-2000:]
        assert 'data-chart="campaigns" data-points="3"' in dom
        assert "frequency_cap 1, not_in_audience 1" in dom and "vs holdout" in dom
