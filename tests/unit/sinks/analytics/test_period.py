"""The one reading of a report period, shared by `nudgeflow report` and the sink's web API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sinks.analytics.queries import MAX_PERIOD_DAYS, Period

NOW = datetime(2026, 12, 24, 10, tzinfo=UTC)


def test_the_days_before_until_default_to_thirty_before_now() -> None:
    assert Period.parse(now=NOW) == Period(NOW - timedelta(days=30), NOW)
    assert Period.parse(days="7", now=NOW) == Period(NOW - timedelta(days=7), NOW)
    until = datetime(2026, 12, 1, tzinfo=UTC)
    assert Period.parse(until="2026-12-01", days="2", now=NOW) == Period(until - timedelta(days=2), until)


def test_since_wins_over_days_and_a_time_without_a_zone_is_utc() -> None:
    period = Period.parse(since="2026-12-20T08:00", until="2026-12-21T08:00+08:00", days="3", now=NOW)
    assert period.since == datetime(2026, 12, 20, 8, tzinfo=UTC)
    assert period.until == datetime(2026, 12, 21, 0, tzinfo=UTC)
    assert Period.parse(since="2026-12-20", now=NOW).until == NOW


@pytest.mark.parametrize(
    ("arguments", "reason"),
    [
        ({"days": "0"}, "between 1 and"),
        ({"days": str(MAX_PERIOD_DAYS + 1)}, "between 1 and"),
        ({"days": "week"}, "whole number"),
        ({"since": "yesterday"}, "since must be an ISO time"),
        ({"until": "x" * 10_000}, "until must be an ISO time"),
        ({"since": "2026-12-25"}, "since must be before until"),
    ],
)
def test_a_bad_period_is_refused_with_the_reason(arguments: dict[str, str], reason: str) -> None:
    with pytest.raises(ValueError, match=reason) as refused:
        Period.parse(now=NOW, **arguments)
    assert len(str(refused.value)) < 120  # never the whole of what was sent
