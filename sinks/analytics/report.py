"""The reports of `nudgeflow report <name>`: each a question from queries.py, as rows of plain values."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, is_dataclass
from datetime import date, datetime
from typing import Any

from sinks.analytics import queries
from sinks.analytics.attribution import Model

Row = dict[str, Any]


def _rows(values: list[Any]) -> list[Row]:
    return [asdict(value) if is_dataclass(value) and not isinstance(value, type) else dict(value) for value in values]


def _period(since: datetime, until: datetime) -> queries.Period:
    return queries.Period(since, until)


def _campaigns(client: Any, since: datetime, until: datetime) -> list[Row]:
    """Each arm of each campaign with, beside it, the arm it was tested against and the p-value."""
    report = queries.campaign_report(client, _period(since, until))
    tests = {(test.rule, test.variant): test for test in queries.campaign_significance(report)}
    rows = []
    for arm in report:
        test = tests.get((arm.campaign, arm.variant))
        row = asdict(arm)
        row["against"] = test.baseline if test else ""
        row["p_value"] = test.p_value if test else None
        row["significant"] = test.significant if test else None
        rows.append(row)
    return rows


def _scores(client: Any, since: datetime, until: datetime) -> list[Row]:
    """One row per band of the latest scores: churn risk in tenths, then predicted value."""
    found = queries.score_distribution(client)
    return [
        {"model_version": found.model_version, "score": name, "from": band.low, "to": band.high, "people": band.people}
        for name, bins in (("churn_risk", found.churn_risk), ("predicted_clv", found.predicted_clv))
        for band in bins
    ]


REPORTS: dict[str, Callable[[Any, datetime, datetime], list[Row]]] = {
    "rules": lambda c, s, u: _rows(queries.rule_report(c, _period(s, u))),
    "campaigns": _campaigns,
    "significance": lambda c, s, u: _rows(queries.variant_significance(queries.rule_report(c, _period(s, u)))),
    "attribution-last-touch": lambda c, s, u: _rows(queries.attribution(c, _period(s, u), Model.LAST_TOUCH)),
    "attribution-linear": lambda c, s, u: _rows(queries.attribution(c, _period(s, u), Model.LINEAR)),
    "ltv": lambda c, s, u: _rows(queries.cohort_lifetime_value(c)),
    "churn": lambda c, s, u: _rows(queries.churn_risk(c, now=u)),
    "funnel": lambda c, s, u: _rows(queries.funnel(c, _period(s, u))),
    "rates": lambda c, s, u: _rows(queries.daily_rates(c, _period(s, u))),
    "suppressions": lambda c, s, u: [
        {"reason": reason, "suppressed": count}
        for reason, count in queries.suppressions(c, _period(s, u)).by_reason.items()
    ],
    "deliveries": lambda c, s, u: _rows(queries.delivery_outcomes(c, _period(s, u))),
    "active": lambda c, s, u: _rows(queries.active_people_hourly(c, _period(s, u))),
    "send-times": lambda c, s, u: _rows(queries.engagement_by_local_hour(c, _period(s, u))),
    "scores": _scores,
    "backtest": lambda c, s, u: _rows(queries.latest_backtest(c)),
    "replies": lambda c, s, u: _rows(queries.reply_sentiments(c, _period(s, u))),
}


def _cell(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{key} {_cell(count)}" for key, count in value.items())
    if isinstance(value, float):
        return f"{value:,.4f}".rstrip("0").rstrip(".") if value != int(value) else f"{value:,.0f}"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    if isinstance(value, date):
        return value.isoformat()
    return "" if value is None else str(value)


def render_table(rows: list[Row]) -> str:
    """Columns aligned for a terminal: text left, numbers right."""
    if not rows:
        return "(no rows)"
    columns = list(rows[0])
    cells = [[_cell(row.get(column)) for column in columns] for row in rows]
    widths = [max(len(column), *(len(line[i]) for line in cells)) for i, column in enumerate(columns)]
    numeric = [all(isinstance(row.get(column), int | float) for row in rows) for column in columns]

    def line(values: list[str]) -> str:
        return "  ".join(
            value.rjust(width) if right else value.ljust(width)
            for value, width, right in zip(values, widths, numeric, strict=True)
        ).rstrip()

    return "\n".join([line(columns), line(["-" * width for width in widths]), *map(line, cells)])
