"""`nudgeflow sink`: events, triggers and dead letters into ClickHouse, and the dashboard."""

from __future__ import annotations

import argparse
import asyncio
import signal

from schemas.settings import Settings
from streams.cli.base import REFUSED, Commands, log, refused


def command_sink(settings: Settings, arguments: argparse.Namespace) -> int:
    """`nudgeflow sink`: apply the migrations, then write the topics to ClickHouse and serve the sink's web app."""
    from sinks.analytics.queries import table_counts
    from sinks.analytics.web import build_web_app, start_web
    from sinks.clickhouse.client import connect
    from sinks.clickhouse.schema import apply_migrations
    from sinks.clickhouse.writer import ClickHouseSink
    from streams.broker.topics import ensure_topics

    if refused(settings, "sink"):
        return REFUSED
    ensure_topics(settings)
    client = connect(settings)
    applied = apply_migrations(client)
    if applied:
        log.info("applied migrations: %s", ", ".join(applied))
    sink = ClickHouseSink(settings, client)

    async def report() -> None:
        while True:
            await asyncio.sleep(arguments.report_every)
            counts = await asyncio.to_thread(table_counts, client)
            print("clickhouse: " + "  ".join(f"{table}={count}" for table, count in counts.items()), flush=True)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, sink.stop)
        reporter = asyncio.create_task(report()) if arguments.report_every else None
        # In embedded mode only this process may open the chDB directory, so it answers the dashboard too.
        web = await start_web(
            build_web_app(client, sink.metrics, settings), settings.sink_web_host, settings.sink_web_port
        )
        log.info("dashboard on http://%s:%d/dashboard", settings.sink_web_host, settings.sink_web_port)
        try:
            await sink.run()
        finally:
            if reporter:
                reporter.cancel()
            await web.cleanup()

    asyncio.run(main())
    return 0


def register(commands: Commands) -> None:
    """Add `nudgeflow sink` to the command line."""
    sink = commands.add_parser("sink", help="write events, triggers and dead letters to ClickHouse")
    sink.add_argument("--report-every", type=float, default=0.0, help="print table counts every N seconds")
    sink.set_defaults(handler=command_sink)
