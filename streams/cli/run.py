"""`nudgeflow run`: the whole pipeline in demo mode on one machine, under the supervisor."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from typing import Any

from schemas.settings import Settings
from streams.cli.base import DEMO_RULES, KAFKA_SCRIPT, Commands, kafka_environment
from streams.cli.supervisor import Child, Supervisor


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
    """The demo's links for this run: the API token, the dashboard and a profile to fetch."""
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
        from streams.broker.topics import ensure_topics

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


def register(commands: Commands) -> None:
    """Add `nudgeflow run` to the command line."""
    run = commands.add_parser(
        "run", help="start Kafka, worker, sink, collector, sender, audience and simulator; print triggers and counts"
    )
    run.add_argument("--rate", type=float, default=3.0, help="shopper sessions per second")
    run.add_argument("--duration", type=float, default=600.0, help="seconds of simulated traffic")
    run.set_defaults(handler=command_run)
