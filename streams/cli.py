"""The `nudgeflow` command: every process of the pipeline and the tools around it."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from schemas.rules import InvalidRules, load_rules
from schemas.settings import Settings, UnsafeSettings
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


def refused(settings: Settings, component: str) -> bool:
    """Whether settings left open by development defaults keep `component` from starting (said on stderr)."""
    try:
        settings.check_closed(component)
    except UnsafeSettings as error:
        print(error, file=sys.stderr)
        return True
    return False


# A process that refuses its settings exits with this code, apart from a crash (1).
REFUSED = 2


def command_worker(settings: Settings, arguments: argparse.Namespace) -> int:
    from sinks.web import start_web
    from streams.api import build_api
    from streams.runners.batched import BatchedRunner, tune_garbage_collector
    from streams.topics import ensure_topics

    if refused(settings, "worker"):
        return REFUSED
    rules = load_rules(settings.rules_file)
    ensure_topics(settings)
    tune_garbage_collector()
    if (arguments.runner or settings.runner) == "faust":
        from streams.runners.faust import run_worker

        return run_worker(settings.model_copy(update={"runner": "faust"}), rules)

    async def main() -> None:
        worker = BatchedRunner(settings, rules)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, worker.stop)
        web = await start_web(build_api(worker), settings.worker_web_host, settings.worker_web_port)
        log.info("worker API on %s (/profiles/{id}, /segments/{name}/members, /metrics)", worker.url)
        try:
            await worker.run()
        finally:
            await web.cleanup()

    import uvloop  # the event loop's own overhead shows at tens of thousands of messages a second

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
    return 0


def command_sink(settings: Settings, arguments: argparse.Namespace) -> int:
    from sinks.client import connect
    from sinks.queries import table_counts
    from sinks.schema import apply_migrations
    from sinks.web import build_web_app, start_web
    from sinks.writer import ClickHouseSink
    from streams.topics import ensure_topics

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

    if refused(settings, "collector"):
        return REFUSED
    ensure_topics(settings)
    host = arguments.host or settings.collector_host
    port = arguments.port if arguments.port is not None else settings.collector_port
    unkeyed = [
        name
        for name, key in (("SendGrid", settings.sendgrid_public_key), ("Twilio", settings.twilio_auth_token))
        if key is None
    ]
    if unkeyed and (settings.allow_unsigned_webhooks or settings.demo):
        log.warning("collector: %s webhooks are accepted unsigned (demo only)", " and ".join(unkeyed))
    elif unkeyed:
        log.info("collector: %s webhooks are refused until a verification key is set", " and ".join(unkeyed))
    app = build_app(Collector(settings, KafkaEventProducer(settings)), listen_host=host)  # --host decides /metrics too
    print(f"collector: listening on http://{host}:{port} (OpenAPI at /openapi.json)", flush=True)
    web.run_app(app, host=host, port=port, print=None, access_log=None)
    return 0


def _sender_template_problems(settings: Settings) -> list[str]:
    """Faults of the templates directory, and template_ids of the rules it has no template for."""
    from sinks.sender.templates import EMAIL_PARTS, SMS_PART, Templates, check_directory

    templates = Templates(settings.sender.templates_dir)
    problems = [str(problem) for problem in check_directory(templates.directory)]
    rules = load_rules(settings.rules_file)
    for rule in rules.triggers:
        part = EMAIL_PARTS[1] if rule.channel.value == "email" else SMS_PART
        wanted = {step.template_id for step in rule.schedule} | {v.template_id for v in rule.variants if v.template_id}
        for template_id in sorted(wanted - templates.template_ids(part)):
            problems.append(f"{templates.directory}: rule {rule.name} needs {template_id}.{part}, which is missing")
    return problems


def command_send(settings: Settings, arguments: argparse.Namespace) -> int:
    """The sender: each nudge on the triggers topic rendered from its template and delivered once."""
    from sinks.sender.channels import EmailChannel, SmsChannel
    from sinks.sender.channels.sendgrid import SendGridChannel
    from sinks.sender.channels.smtp import SmtpChannel
    from sinks.sender.channels.twilio import TwilioChannel
    from sinks.sender.loop import Sender
    from sinks.sender.metrics import SenderMetrics, web_app
    from sinks.sender.templates import Templates
    from sinks.web import start_web
    from streams.topics import ensure_topics

    if refused(settings, "sender"):
        return REFUSED
    try:
        problems = _sender_template_problems(settings)
    except FileNotFoundError as error:
        problems = [str(error)]
    if problems:
        print("nudgeflow send will not start: the templates have faults\n  " + "\n  ".join(problems), file=sys.stderr)
        return REFUSED
    config = settings.sender
    email: EmailChannel | None = None
    sms: SmsChannel | None = None
    try:
        email = SendGridChannel(config) if config.email_provider == "sendgrid" else SmtpChannel(config)
    except ValueError as error:
        log.warning("send: email nudges will be dead-lettered: %s", error)
    try:
        sms = TwilioChannel(config, settings.twilio_auth_token)
    except ValueError as error:
        log.warning("send: SMS nudges will be dead-lettered: %s", error)
    ensure_topics(settings)

    async def main() -> None:
        metrics = SenderMetrics()
        sender = Sender(settings, Templates(config.templates_dir), email, sms, metrics)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, sender.stop)
        web = await start_web(web_app(metrics, settings), config.web_host, config.web_port)
        providers = ", ".join(f"{c.provider}" for c in (email, sms) if c is not None) or "none"
        where = f"http://{config.web_host}:{config.web_port}/metrics"
        print(f"send: delivering through {providers}; metrics on {where}", flush=True)
        try:
            await sender.run()
        finally:
            await web.cleanup()

    asyncio.run(main())
    return 0


def command_templates_check(settings: Settings, arguments: argparse.Namespace) -> int:
    from sinks.sender.templates import check_directory

    directory = Path(arguments.directory)
    problems = check_directory(directory)
    for problem in problems:
        print(problem if str(problem).startswith(str(directory)) else f"{directory}/{problem}", file=sys.stderr)
    if problems:
        return 1
    print(f"{directory}: ok")
    return 0


def command_demo_audience(settings: Settings, arguments: argparse.Namespace) -> int:
    """The demo's recipients: a local SMTP server and Twilio stand-in, acting on what they get."""
    from schemas.settings import DEMO_WRITE_KEY
    from sinks.sender.demo_audience import Audience, serve

    if not settings.demo:
        print("nudgeflow demo-audience is for the local demo (NUDGEFLOW_DEMO=true) only", file=sys.stderr)
        return REFUSED
    token = settings.twilio_auth_token.get_secret_value() if settings.twilio_auth_token else None
    audience = Audience(settings.sender_public_url, DEMO_WRITE_KEY, token, seed=arguments.seed)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await serve(audience, arguments.smtp_port, arguments.twilio_port, settings.sender.twilio_account_sid, stop)

    asyncio.run(main())
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
    from streams.settings_docs import settings_table, update_readme

    if arguments.write_readme is not None:
        changed = update_readme(Path(arguments.write_readme))
        print(f"{arguments.write_readme}: {'updated' if changed else 'already up to date'}")
        return 0
    print(settings_table(), end="")
    return 0


@dataclass
class Child:
    """One process `nudgeflow run` keeps going: restarted when it dies, a bounded number of times."""

    name: str
    command: list[str]
    # A child that ends with exit code 0 is done (the simulator after --duration), not dead.
    restart_on_success: bool = True
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    failures: int = 0  # deaths in a row, each without a stable run in between
    restart_at: float | None = None
    finished: bool = False  # done, or given up on


@dataclass
class Supervisor:
    """Starts the children and restarts any that dies, with backoff, leaving the others running.

    A child that stayed up for `stable_seconds` starts again with a clean slate, so one crash an hour is
    restarted forever while a crash loop is given up after `max_restarts`."""

    children: list[Child]
    environment: dict[str, str]
    max_restarts: int = 5
    backoff_seconds: float = 1.0
    max_backoff_seconds: float = 30.0
    stable_seconds: float = 60.0
    prefix: list[str] = field(default_factory=lambda: [sys.executable, "-m", "streams.cli"])

    def start(self, child: Child) -> None:
        child.process = subprocess.Popen([*self.prefix, *child.command], env=self.environment, start_new_session=True)
        child.started_at = time.monotonic()
        child.restart_at = None
        print(f"nudgeflow: started {child.name} (pid {child.process.pid})", flush=True)

    def start_all(self) -> None:
        for child in self.children:
            self.start(child)

    def check(self, now: float | None = None) -> None:
        """Notice children that died and restart those whose backoff has passed."""
        now = time.monotonic() if now is None else now
        for child in self.children:
            if child.finished:
                continue
            if child.restart_at is not None:
                if now >= child.restart_at:
                    self.start(child)
                continue
            if child.process is None or (code := child.process.poll()) is None:
                continue
            if code == 0 and not child.restart_on_success:
                child.finished = True
                continue
            child.failures = 1 if now - child.started_at >= self.stable_seconds else child.failures + 1
            if child.failures > self.max_restarts:
                child.finished = True
                print(
                    f"nudgeflow: {child.name} exited with {code} {child.failures} times in a row; "
                    "not restarting it (the others keep running)",
                    file=sys.stderr,
                    flush=True,
                )
                continue
            delay = min(self.max_backoff_seconds, self.backoff_seconds * 2 ** (child.failures - 1))
            child.restart_at = now + delay
            print(
                f"nudgeflow: {child.name} exited with {code}; restarting it in {delay:g}s "
                f"(restart {child.failures} of at most {self.max_restarts})",
                file=sys.stderr,
                flush=True,
            )

    def running(self) -> bool:
        """Whether any child that is meant to keep running still does (or will be restarted)."""
        return any(child.restart_on_success and not child.finished for child in self.children)

    def stop_all(self, timeout: float = 20.0) -> None:
        live = [c.process for c in self.children if c.process is not None and c.process.poll() is None]
        for process in live:
            process.send_signal(signal.SIGTERM)
        for process in live:
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def demo_environment(settings: Settings) -> tuple[dict[str, str], str]:
    """The environment of the demo's processes, and the API token they accept.

    Demo mode only here: it lets the simulator's write key, unsigned webhooks and the built-in hash secret
    through. The API stays closed all the same, with a token made up for this run unless one is set."""
    environment = dict(os.environ)
    if "NUDGEFLOW_RULES_FILE" not in environment:
        environment["NUDGEFLOW_RULES_FILE"] = str(DEMO_RULES)  # short delays so the demo shows triggers
    environment["NUDGEFLOW_DEMO"] = "true"
    environment["NUDGEFLOW_ALLOW_UNSIGNED_WEBHOOKS"] = "true"
    if settings.api_tokens:
        token = settings.api_tokens[0].get_secret_value()
    else:
        token = secrets.token_urlsafe(24)
        environment["NUDGEFLOW_API_TOKENS"] = json.dumps([token])
    return environment, token


def demo_links(settings: Settings, token: str) -> str:
    from urllib.parse import quote

    worker = f"http://{settings.worker_web_host}:{settings.worker_web_port}"
    sink = f"http://{settings.sink_web_host}:{settings.sink_web_port}"
    return (
        f"nudgeflow: API token for this run: {token}\n"
        f"  dashboard: {sink}/dashboard#token={quote(token, safe='')}\n"
        f'  a profile: curl -H "Authorization: Bearer {token}" {worker}/profiles/shopper-000042'
    )


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _demo_delivery(environment: dict[str, str], smtp_port: int, twilio_port: int) -> dict[str, str]:
    """The sender's settings in the demo: email to the audience's SMTP server, SMS to its Twilio stand-in.
    Settings already in the environment win, except where the demo's own servers must be used."""
    defaults = {
        "NUDGEFLOW_SENDER__FROM_EMAIL": "nudges@shop.example",
        "NUDGEFLOW_SENDER__FROM_NAME": "nudgeflow demo shop",
        "NUDGEFLOW_SENDER__TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
        "NUDGEFLOW_SENDER__TWILIO_FROM_NUMBER": "+14155550100",
        "NUDGEFLOW_SENDER__SMTP_PER_SECOND": "50",
        "NUDGEFLOW_SENDER__TWILIO_PER_SECOND": "20",
        "NUDGEFLOW_TWILIO_AUTH_TOKEN": secrets.token_hex(16),  # the audience signs its Twilio callbacks with it
    }
    forced = {
        "NUDGEFLOW_SENDER__EMAIL_PROVIDER": "smtp",
        "NUDGEFLOW_SENDER__SMTP_HOST": "127.0.0.1",
        "NUDGEFLOW_SENDER__SMTP_PORT": str(smtp_port),
        "NUDGEFLOW_SENDER__SMTP_SECURITY": "none",
        "NUDGEFLOW_SENDER__TWILIO_BASE_URL": f"http://127.0.0.1:{twilio_port}",
    }
    return {**defaults, **{k: v for k, v in environment.items() if k in defaults}, **forced}


def command_run(settings: Settings, arguments: argparse.Namespace) -> int:
    """Kafka, the worker, the sink, the collector, the sender and its audience, the simulator and a trigger
    printer, until Ctrl-C."""
    environment, token = demo_environment(settings)
    started_kafka = (
        subprocess.call(
            ["bash", str(KAFKA_SCRIPT), "status"], env=kafka_environment(settings), stdout=subprocess.DEVNULL
        )
        != 0
    )
    if started_kafka and subprocess.call(["bash", str(KAFKA_SCRIPT), "start"], env=kafka_environment(settings)) != 0:
        return 1
    smtp_port, twilio_port = _free_port(), _free_port()
    environment.update(_demo_delivery(environment, smtp_port, twilio_port))
    supervisor = Supervisor(
        [
            Child("worker", ["worker"]),
            Child("sink", ["sink", "--report-every", "5"]),
            Child("collector", ["collector"]),
            # The loop closes here: nudges go to the audience, whose opens, clicks, orders and opt-outs come
            # back through the collector's webhooks and /v1 calls onto the events topic.
            Child("audience", ["demo-audience", "--smtp-port", str(smtp_port), "--twilio-port", str(twilio_port)]),
            Child("sender", ["send"]),
            Child("triggers", ["triggers", "--follow-new"]),
            Child(
                "simulate",
                ["simulate", "--rate", str(arguments.rate), "--duration", str(arguments.duration)],
                restart_on_success=False,
            ),
        ],
        environment,
    )
    # `kill` stops the demo as Ctrl-C does: children and the broker it started go with it.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        from streams.topics import ensure_topics

        ensure_topics(settings)
        supervisor.start_all()
        print(demo_links(settings, token), flush=True)
        print("nudgeflow: running; triggers and ClickHouse counts follow. Ctrl-C stops everything.", flush=True)
        while supervisor.running():
            time.sleep(0.5)
            supervisor.check()
        print("nudgeflow: every process gave up; stopping", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nnudgeflow: stopping", flush=True)
        return 0
    finally:
        supervisor.stop_all()
        if started_kafka:
            subprocess.call(["bash", str(KAFKA_SCRIPT), "stop"], env=kafka_environment(settings))


def _authorization(settings: Settings) -> dict[str, str]:
    """The header the CLI's HTTP calls send: the first configured API token, if any."""
    if not settings.api_tokens:
        return {}
    return {"Authorization": f"Bearer {settings.api_tokens[0].get_secret_value()}"}


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the 3xx comes back as an HTTPError, and get_json follows it itself


MAX_REDIRECTS = 3


def get_json(url: str, settings: Settings, timeout: float = 10.0) -> tuple[Any, str | None]:
    """GET a JSON document: (document, None), or (None, why not) when the process is down or says no.

    Redirects (a worker sending the caller to the worker that holds the person) are followed here, with
    the token sent again: HTTP clients drop Authorization on a redirect to another host or port."""
    import orjson

    opener = urllib.request.build_opener(_NoRedirects)
    headers = _authorization(settings)
    for _ in range(MAX_REDIRECTS + 1):
        try:
            with opener.open(urllib.request.Request(url, headers=headers), timeout=timeout) as response:
                return orjson.loads(response.read()), None
        except urllib.error.HTTPError as error:
            location = error.headers.get("Location")
            if error.code in (301, 302, 303, 307, 308) and location:
                url = urllib.parse.urljoin(url, location)
                if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
                    return None, f"redirected to {url}, which is not HTTP"
                continue
            hint = " (set NUDGEFLOW_API_TOKENS to a token the server accepts)" if error.code == 401 else ""
            return None, f"{url} answered {error.code}: {error.read().decode(errors='replace')[:200]}{hint}"
        except (urllib.error.URLError, OSError, ValueError) as error:
            return None, f"{url} unavailable: {error}"
    return None, f"{url}: more than {MAX_REDIRECTS} redirects"


def _person_url(host: str, port: int, path: str, person_id: str) -> str:
    from urllib.parse import quote

    return f"http://{host}:{port}{path.format(quote(person_id, safe=''))}"


def command_profile(settings: Settings, arguments: argparse.Namespace) -> int:
    """The worker's live profile of one person, as JSON."""
    import orjson

    url = _person_url(settings.worker_web_host, settings.worker_web_port, "/profiles/{}", arguments.person_id)
    profile, problem = get_json(url, settings)
    if problem is not None:
        print(f"nudgeflow profile: {problem}", file=sys.stderr)
        return 1
    sys.stdout.buffer.write(orjson.dumps(profile, option=orjson.OPT_INDENT_2) + b"\n")
    return 0


def command_export(settings: Settings, arguments: argparse.Namespace) -> int:
    """Everything held about a person (right of access): the worker's live profile and ClickHouse's rows.
    A process that is down is named under "unavailable" instead of failing the whole export."""
    import orjson

    person = arguments.person_id
    profile, profile_problem = get_json(
        _person_url(settings.worker_web_host, settings.worker_web_port, "/profiles/{}", person), settings
    )
    stored, sink_problem = get_json(
        _person_url(settings.sink_web_host, settings.sink_web_port, "/api/people/{}/export", person), settings
    )
    unavailable = {
        part: problem for part, problem in (("profile", profile_problem), ("clickhouse", sink_problem)) if problem
    }
    document: dict[str, Any] = {"person_id": person, "profile": profile, "clickhouse": stored}
    if unavailable:
        document["unavailable"] = unavailable
    sys.stdout.buffer.write(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")
    return 1 if len(unavailable) == 2 else 0


def command_erase(settings: Settings, arguments: argparse.Namespace) -> int:
    """Ask the worker and the sink to forget a person: an erasure request on the privacy topic."""
    import uuid
    from datetime import UTC, datetime

    from kafka import KafkaProducer

    from schemas.privacy import ErasureRequest
    from streams.topics import ensure_topics

    ensure_topics(settings, [settings.privacy_topic])
    request = ErasureRequest(
        request_id=str(uuid.uuid4()), person_id=arguments.person_id, requested_at=datetime.now(UTC)
    )
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap.split(","), acks="all")
    try:
        producer.send(settings.privacy_topic, key=arguments.person_id.encode(), value=request.to_json()).get(timeout=30)
    finally:
        producer.close()
    print(request.request_id)
    return 0


def command_replay(settings: Settings, arguments: argparse.Namespace) -> int:
    """Events from a JSON-lines file or another topic onto the events topic, within a time range."""
    from kafka import KafkaProducer

    from streams.replay import (
        Invalid,
        Keep,
        Tally,
        TimeRange,
        decide,
        file_line,
        parse_moment,
        parse_source,
        progress_line,
    )
    from streams.topics import ensure_topics

    try:
        source = parse_source(arguments.source)
        window = TimeRange(
            parse_moment(arguments.since) if arguments.since else None,
            parse_moment(arguments.until) if arguments.until else None,
        )
    except ValueError as error:
        print(f"nudgeflow replay: {error}", file=sys.stderr)
        return 2
    target = (
        settings
        if arguments.to_namespace is None
        else settings.model_copy(update={"namespace": arguments.to_namespace})
    )
    ensure_topics(target, [target.events_topic])
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap.split(","), acks="all", linger_ms=20)
    tally = Tally()
    started = time.monotonic()
    drawn_at = 0.0

    def handle(raw: bytes, where: str, total: int | None) -> None:
        nonlocal drawn_at
        decision = decide(raw, where, window)
        tally.count(decision)
        if isinstance(decision, Keep):
            producer.send(target.events_topic, key=decision.key, value=decision.value)
        elif isinstance(decision, Invalid):
            # Over the progress bar, then on its own line, so every bad line stays readable.
            print(f"\r{decision.where}: {decision.reason}".ljust(60), file=sys.stderr)
        now = time.monotonic()
        if now - drawn_at >= 0.2:
            drawn_at = now
            print(progress_line(tally.read, total, now - started), end="", file=sys.stderr, flush=True)

    try:
        if source.path is not None:
            path = Path(source.path)
            with path.open("rb") as counting:
                total = sum(1 for line in counting if line.strip())
            with path.open("rb") as lines:
                for number, line in enumerate(lines, start=1):
                    raw = file_line(line)
                    if raw is not None:
                        handle(raw, f"line {number}", total)
        else:
            assert source.topic is not None
            for raw, where, total in _topic_messages(settings, source.topic):
                handle(raw, where, total)
        producer.flush()
    finally:
        producer.close()
    elapsed = time.monotonic() - started
    print(progress_line(tally.read, tally.read, elapsed), file=sys.stderr)
    print(tally.summary(elapsed, target.events_topic), flush=True)
    return 0


def _topic_messages(settings: Settings, topic: str) -> Iterator[tuple[bytes, str, int]]:
    """Every message of a topic as it stands now (later messages are not waited for), with its place."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap.split(","), enable_auto_commit=False, group_id=None
    )
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise SystemExit(f"nudgeflow replay: no topic named {topic}")
        assigned = [TopicPartition(topic, partition) for partition in sorted(partitions)]
        consumer.assign(assigned)
        consumer.seek_to_beginning(*assigned)
        ends = consumer.end_offsets(assigned)
        starts = consumer.beginning_offsets(assigned)
        total = sum(ends[tp] - starts[tp] for tp in assigned)
        remaining = {tp for tp in assigned if ends[tp] > starts[tp]}
        while remaining:
            for tp, records in consumer.poll(timeout_ms=500).items():
                for record in records:
                    if record.offset < ends[tp] and record.value:
                        yield record.value, f"{topic}[{tp.partition}]@{record.offset}", total
            remaining = {tp for tp in remaining if consumer.position(tp) < ends[tp]}
    finally:
        consumer.close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nudgeflow",
        description="Event-streaming behavioural pipeline for email and SMS nudges. "
        "Configuration comes from NUDGEFLOW_* environment variables.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run", help="start Kafka, worker, sink, collector, sender, audience and simulator; print triggers and counts"
    )
    run.add_argument("--rate", type=float, default=3.0, help="shopper sessions per second")
    run.add_argument("--duration", type=float, default=600.0, help="seconds of simulated traffic")
    run.set_defaults(handler=command_run)

    worker = commands.add_parser("worker", help="run the stream worker (profiles, rules, timers)")
    worker.add_argument("--runner", choices=["batched", "faust"], help="what hosts it (default: the runner setting)")
    worker.set_defaults(handler=command_worker)

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

    commands.add_parser("send", help="render and deliver each nudge once (SMTP, SendGrid, Twilio)").set_defaults(
        handler=command_send
    )

    templates = commands.add_parser("templates", help="message templates")
    templates_commands = templates.add_subparsers(dest="templates_command", required=True)
    templates_check = templates_commands.add_parser(
        "check", help="check a templates directory; non-zero exit with the file, line and reason"
    )
    templates_check.add_argument("directory")
    templates_check.set_defaults(handler=command_templates_check)

    audience = commands.add_parser("demo-audience", help="the demo's SMTP server, Twilio stand-in and recipients")
    audience.add_argument("--smtp-port", type=int, default=2525)
    audience.add_argument("--twilio-port", type=int, default=6069)
    audience.add_argument("--seed", type=int, default=None)
    audience.set_defaults(handler=command_demo_audience)

    triggers = commands.add_parser("triggers", help="print triggers as the senders receive them")
    triggers.add_argument("--follow-new", action="store_true", help="only triggers published from now on")
    triggers.set_defaults(handler=command_triggers)

    kafka = commands.add_parser("kafka", help="the local Kafka broker")
    kafka.add_argument("action", choices=["start", "stop", "status", "fetch"])
    kafka.set_defaults(handler=command_kafka)

    commands.add_parser("topics", help="create nudgeflow's topics").set_defaults(handler=command_topics)

    settings_command = commands.add_parser(
        "settings", help="print the configuration reference (every NUDGEFLOW_* variable) as a markdown table"
    )
    settings_command.add_argument("--write-readme", metavar="README", help="replace the table in this README instead")
    settings_command.set_defaults(handler=command_settings)

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

    profile = commands.add_parser("profile", help="print the worker's live profile of a person")
    profile.add_argument("person_id")
    profile.set_defaults(handler=command_profile)

    export_person = commands.add_parser(
        "export", help="everything held about a person (worker profile and ClickHouse rows) as one JSON"
    )
    export_person.add_argument("person_id")
    export_person.set_defaults(handler=command_export)

    erase = commands.add_parser("erase", help="forget a person: an erasure request for the worker and the sink")
    erase.add_argument("person_id")
    erase.set_defaults(handler=command_erase)

    replay = commands.add_parser("replay", help="backfill events from a JSON-lines file or topic:NAME")
    replay.add_argument("source", help="a JSON-lines file of events, or topic:NAME for an existing topic")
    replay.add_argument("--since", help="ISO time: only events at or after it (event timestamp)")
    replay.add_argument("--until", help="ISO time: only events before it")
    replay.add_argument("--to-namespace", default=None, help="produce to this namespace's events topic instead")
    replay.set_defaults(handler=command_replay)
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
