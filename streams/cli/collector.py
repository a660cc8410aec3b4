"""`nudgeflow collector`: the Segment-compatible HTTP API and the sender webhooks."""

from __future__ import annotations

import argparse

from schemas.settings import Settings
from streams.cli.base import REFUSED, Commands, log, refused


def command_collector(settings: Settings, arguments: argparse.Namespace) -> int:
    """The HTTP collector: Segment-compatible /v1/* calls and sender webhooks onto the events topic."""
    from aiohttp import web

    from streams.broker.topics import ensure_topics
    from streams.collector.app import Collector, build_app
    from streams.collector.producer import KafkaEventProducer

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


def register(commands: Commands) -> None:
    """Add `nudgeflow collector` to the command line."""
    collector = commands.add_parser("collector", help="HTTP collector: Segment-compatible API and sender webhooks")
    collector.add_argument("--host", default=None, help="interface to listen on (default: collector_host setting)")
    collector.add_argument("--port", type=int, default=None, help="port (default: collector_port setting)")
    collector.set_defaults(handler=command_collector)
