"""The `nudgeflow` command: every process of the pipeline and the tools around it."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from schemas.rules import InvalidRules, load_rules
from schemas.settings import Settings
from streams.logs import configure_logging

REPO = Path(__file__).resolve().parents[1]
KAFKA_SCRIPT = REPO / "deploy" / "kafka" / "kafka.sh"
DEMO_RULES = REPO / "deploy" / "rules.demo.yaml"

log = logging.getLogger("nudgeflow")


def kafka_environment(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "KAFKA_PORT": str(settings.kafka_port),
        "KAFKA_DATA_DIR": str((settings.data_dir / "kafka").resolve()),
    }


def command_kafka(settings: Settings, arguments: argparse.Namespace) -> int:
    return subprocess.call(["bash", str(KAFKA_SCRIPT), arguments.action], env=kafka_environment(settings))


def command_topics(settings: Settings, arguments: argparse.Namespace) -> int:
    from streams.topics import ensure_topics

    created = ensure_topics(settings)
    print(f"created: {', '.join(created)}" if created else "all topics exist")
    return 0


def command_worker(settings: Settings, arguments: argparse.Namespace) -> int:
    import faust

    from streams.topics import ensure_topics
    from streams.worker import build_app

    rules = load_rules(settings.rules_file)
    ensure_topics(settings)
    app = build_app(settings, rules)
    # override_logging=False: Faust would replace our handler with its coloured one and drop NUDGEFLOW_LOG_FORMAT.
    worker = faust.Worker(app, loglevel=settings.log_level, quiet=True, redirect_stdouts=False, override_logging=False)
    worker.execute_from_commandline()
    return 0


def command_sink(settings: Settings, arguments: argparse.Namespace) -> int:
    from sinks.client import connect
    from sinks.queries import table_counts
    from sinks.schema import apply_migrations
    from sinks.web import build_web_app, start_web
    from sinks.writer import ClickHouseSink
    from streams.topics import ensure_topics

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
        web = await start_web(build_web_app(client, sink.metrics), settings.sink_web_host, settings.sink_web_port)
        log.info("dashboard on http://%s:%d/dashboard", settings.sink_web_host, settings.sink_web_port)
        try:
            await sink.run()
        finally:
            if reporter:
                reporter.cancel()
            await web.cleanup()

    asyncio.run(main())
    return 0


def command_report(settings: Settings, arguments: argparse.Namespace) -> int:
    """Answer one question from ClickHouse. In embedded mode the sink owns chDB: stop it, or ask its /api."""
    from datetime import UTC, datetime, timedelta

    import orjson

    from sinks.client import connect
    from sinks.report import REPORTS, render_table
    from sinks.schema import apply_migrations

    until = datetime.fromisoformat(arguments.until) if arguments.until else datetime.now(UTC)
    since = datetime.fromisoformat(arguments.since) if arguments.since else until - timedelta(days=30)
    client = connect(settings)
    apply_migrations(client)
    try:
        rows = REPORTS[arguments.name](
            client, since.replace(tzinfo=since.tzinfo or UTC), until.replace(tzinfo=until.tzinfo or UTC)
        )
    finally:
        client.close()
    if arguments.json:
        sys.stdout.buffer.write(orjson.dumps(rows, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS) + b"\n")
    else:
        print(render_table(rows))
    return 0


def command_simulate(settings: Settings, arguments: argparse.Namespace) -> int:
    from streams.simulator import Simulator
    from streams.topics import ensure_topics

    ensure_topics(settings)
    simulator = Simulator(settings, arguments.rate, arguments.shoppers, arguments.seed)
    sent = simulator.run(arguments.duration)
    print(f"simulate: sent {sent} events to {settings.events_topic}", flush=True)
    return 0


def command_collector(settings: Settings, arguments: argparse.Namespace) -> int:
    """The HTTP collector: Segment-compatible /v1/* calls and sender webhooks onto the events topic."""
    from aiohttp import web

    from streams.collector.app import Collector, build_app
    from streams.collector.producer import KafkaEventProducer
    from streams.topics import ensure_topics

    ensure_topics(settings)
    host = arguments.host or settings.collector_host
    port = arguments.port if arguments.port is not None else settings.collector_port
    if settings.sendgrid_public_key is None or settings.twilio_auth_token is None:
        log.warning("collector: webhook signatures are not verified for senders without a configured key")
    app = build_app(Collector(settings, KafkaEventProducer(settings)))
    print(f"collector: listening on http://{host}:{port} (OpenAPI at /openapi.json)", flush=True)
    web.run_app(app, host=host, port=port, print=None, access_log=None)
    return 0


def command_triggers(settings: Settings, arguments: argparse.Namespace) -> int:
    """Print each trigger as it is published: what the email and SMS senders receive."""
    from kafka import KafkaConsumer

    from schemas.triggers import Trigger

    consumer = KafkaConsumer(
        settings.triggers_topic,
        bootstrap_servers=settings.kafka_bootstrap.split(","),
        auto_offset_reset="latest" if arguments.follow_new else "earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    try:
        for message in consumer:
            trigger = Trigger.model_validate_json(message.value)
            items = ", ".join(item.get("name") or item["product_id"] for item in trigger.context.get("items", []))
            print(
                f"trigger {trigger.rule} -> {trigger.person_id} via {trigger.channel.value}"
                f" (due {trigger.due_at:%H:%M:%S}, id {trigger.trigger_id[:12]}) {items}",
                flush=True,
            )
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    return 0


def command_rules_check(settings: Settings, arguments: argparse.Namespace) -> int:
    try:
        rules = load_rules(Path(arguments.file))
    except InvalidRules as error:
        print(error, file=sys.stderr)
        return 1
    print(f"{arguments.file}: ok ({len(type(rules).model_fields)} sections)")
    return 0


def command_schemas_export(settings: Settings, arguments: argparse.Namespace) -> int:
    from schemas.export import export_json_schemas

    for path in export_json_schemas(Path(arguments.directory)):
        print(path)
    return 0


def command_settings(settings: Settings, arguments: argparse.Namespace) -> int:
    from streams.settings_docs import settings_table

    print(settings_table(), end="")
    return 0


def command_run(settings: Settings, arguments: argparse.Namespace) -> int:
    """Kafka, the worker, the sink, the simulator and a trigger printer, until Ctrl-C."""
    environment = dict(os.environ)
    if "NUDGEFLOW_RULES_FILE" not in environment:
        environment["NUDGEFLOW_RULES_FILE"] = str(DEMO_RULES)  # short delays so the demo shows triggers
    started_kafka = (
        subprocess.call(
            ["bash", str(KAFKA_SCRIPT), "status"], env=kafka_environment(settings), stdout=subprocess.DEVNULL
        )
        != 0
    )
    if started_kafka and subprocess.call(["bash", str(KAFKA_SCRIPT), "start"], env=kafka_environment(settings)) != 0:
        return 1
    me = [sys.executable, "-m", "streams.cli"]
    children: list[subprocess.Popen[bytes]] = []
    try:
        from streams.topics import ensure_topics

        ensure_topics(settings)
        for command in (
            ["worker"],
            ["sink", "--report-every", "5"],
            ["triggers", "--follow-new"],
            ["simulate", "--rate", str(arguments.rate), "--duration", str(arguments.duration)],
        ):
            children.append(subprocess.Popen([*me, *command], env=environment, start_new_session=True))
        print("nudgeflow: running; triggers and ClickHouse counts follow. Ctrl-C stops everything.", flush=True)
        while all(child.poll() is None for child in children[:3]):
            time.sleep(0.5)
        print("nudgeflow: a process exited; stopping", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nnudgeflow: stopping", flush=True)
        return 0
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                child.kill()
        if started_kafka:
            subprocess.call(["bash", str(KAFKA_SCRIPT), "stop"], env=kafka_environment(settings))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nudgeflow",
        description="Event-streaming behavioural pipeline for email and SMS nudges. "
        "Configuration comes from NUDGEFLOW_* environment variables.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="start Kafka, worker, sink and the simulator; print triggers and counts")
    run.add_argument("--rate", type=float, default=3.0, help="shopper sessions per second")
    run.add_argument("--duration", type=float, default=600.0, help="seconds of simulated traffic")
    run.set_defaults(handler=command_run)

    commands.add_parser("worker", help="run the stream worker (profiles, rules, timers)").set_defaults(
        handler=command_worker
    )

    sink = commands.add_parser("sink", help="write events, triggers and dead letters to ClickHouse")
    sink.add_argument("--report-every", type=float, default=0.0, help="print table counts every N seconds")
    sink.set_defaults(handler=command_sink)

    from sinks.report import REPORTS

    report = commands.add_parser("report", help="answer a question from ClickHouse (rules, attribution, ltv, ...)")
    report.add_argument("name", choices=sorted(REPORTS))
    report.add_argument("--since", help="ISO time, default 30 days before --until")
    report.add_argument("--until", help="ISO time, default now")
    report.add_argument("--json", action="store_true", help="JSON instead of a table")
    report.set_defaults(handler=command_report)

    simulate = commands.add_parser("simulate", help="play realistic shopper sessions onto the events topic")
    simulate.add_argument("--rate", type=float, default=3.0, help="shopper sessions per second")
    simulate.add_argument("--duration", type=float, default=60.0, help="seconds of traffic")
    simulate.add_argument("--shoppers", type=int, default=500, help="distinct shoppers")
    simulate.add_argument("--seed", type=int, default=None)
    simulate.set_defaults(handler=command_simulate)

    collector = commands.add_parser("collector", help="HTTP collector: Segment-compatible API and sender webhooks")
    collector.add_argument("--host", default=None, help="interface to listen on (default: collector_host setting)")
    collector.add_argument("--port", type=int, default=None, help="port (default: collector_port setting)")
    collector.set_defaults(handler=command_collector)

    triggers = commands.add_parser("triggers", help="print triggers as the senders receive them")
    triggers.add_argument("--follow-new", action="store_true", help="only triggers published from now on")
    triggers.set_defaults(handler=command_triggers)

    kafka = commands.add_parser("kafka", help="the local Kafka broker")
    kafka.add_argument("action", choices=["start", "stop", "status", "fetch"])
    kafka.set_defaults(handler=command_kafka)

    commands.add_parser("topics", help="create nudgeflow's topics").set_defaults(handler=command_topics)

    commands.add_parser(
        "settings", help="print the configuration reference (every NUDGEFLOW_* variable) as a markdown table"
    ).set_defaults(handler=command_settings)

    rules = commands.add_parser("rules", help="rules files")
    rules_commands = rules.add_subparsers(dest="rules_command", required=True)
    check = rules_commands.add_parser("check", help="validate a rules file; non-zero exit with line and reason")
    check.add_argument("file")
    check.set_defaults(handler=command_rules_check)

    schemas = commands.add_parser("schemas", help="event and trigger schemas")
    schemas_commands = schemas.add_subparsers(dest="schemas_command", required=True)
    export = schemas_commands.add_parser("export", help="write JSON Schema files for other languages")
    export.add_argument("directory")
    export.set_defaults(handler=command_schemas_export)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = build_parser().parse_args(argv)
    settings = Settings()
    configure_logging(settings)
    try:
        result: int = arguments.handler(settings, arguments)
    except InvalidRules as error:
        print(f"nudgeflow: invalid rules: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return result


if __name__ == "__main__":
    sys.exit(main())
