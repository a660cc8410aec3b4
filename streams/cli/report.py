"""`nudgeflow report NAME`: one analytics question answered from ClickHouse."""

from __future__ import annotations

import argparse
import sys

from schemas.settings import Settings
from streams.cli.base import Commands


def command_report(settings: Settings, arguments: argparse.Namespace) -> int:
    """Answer one question from ClickHouse. In embedded mode the sink owns chDB: stop it, or ask its /api."""
    import orjson

    from sinks.analytics.queries import Period
    from sinks.analytics.report import REPORTS, render_table
    from sinks.clickhouse.client import connect
    from sinks.clickhouse.schema import apply_migrations

    try:
        period = Period.parse(arguments.since, arguments.until, arguments.days)
    except ValueError as error:
        print(f"nudgeflow report: bad period: {error}", file=sys.stderr)
        return 2
    client = connect(settings)
    apply_migrations(client)
    try:
        rows = REPORTS[arguments.name](client, period.since, period.until)
    finally:
        client.close()
    if arguments.json:
        sys.stdout.buffer.write(orjson.dumps(rows, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS) + b"\n")
    else:
        print(render_table(rows))
    return 0


def register(commands: Commands) -> None:
    """Add `nudgeflow report` to the command line."""
    from sinks.analytics.report import REPORTS

    report = commands.add_parser("report", help="answer a question from ClickHouse (rules, attribution, ltv, ...)")
    report.add_argument("name", choices=sorted(REPORTS))
    report.add_argument("--since", help="ISO time, default --days before --until")
    report.add_argument("--until", help="ISO time, default now")
    report.add_argument("--days", help="without --since: the days before --until (default 30)")
    report.add_argument("--json", action="store_true", help="JSON instead of a table")
    report.set_defaults(handler=command_report)
