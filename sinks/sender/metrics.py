"""Prometheus metrics of the sender, in a registry of its own (several senders in one process for tests)."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

from schemas.access import METRICS_PATH, token_guard
from schemas.settings import Settings

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
DELAY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)


@dataclass
class SenderMetrics:
    """The sender's Prometheus metrics."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.sent = Counter(
            "nudgeflow_sender_sent", "Nudges the provider accepted", ["channel", "provider"], registry=self.registry
        )
        self.failed = Counter(
            "nudgeflow_sender_failed",
            "Nudges given up on (refused, attempts used up, no template or address) or committed without an answer",
            ["provider", "reason"],
            registry=self.registry,
        )
        self.retried = Counter(
            "nudgeflow_sender_retried",
            "Attempts refused in a way worth another one",
            ["provider"],
            registry=self.registry,
        )
        self.dropped = Counter(
            "nudgeflow_sender_dropped",
            "Nudges not sent on purpose: expired, stale, or already in the ledger (a replay or a second copy)",
            ["reason"],
            registry=self.registry,
        )
        self.invalid = Counter(
            "nudgeflow_sender_invalid_messages",
            "Trigger messages that could not be read: dead-lettered",
            registry=self.registry,
        )
        self.latency = Histogram(
            "nudgeflow_sender_provider_seconds",
            "Duration of accepted provider calls, commit included",
            ["provider"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.delay = Histogram(
            "nudgeflow_sender_delay_seconds",
            "From the trigger's fired_at to the provider's acceptance",
            ["channel"],
            buckets=DELAY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge("nudgeflow_sender_in_flight", "Nudges being sent now", registry=self.registry)
        self.ledger_size = Gauge(
            "nudgeflow_sender_ledger_entries",
            "Nudges the ledger holds for the partitions owned",
            registry=self.registry,
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def web_app(metrics: SenderMetrics, settings: Settings) -> web.Application:
    """/metrics (open on loopback only, as every nudgeflow server's) and /health, which names nobody."""

    async def metrics_page(request: web.Request) -> web.Response:
        return web.Response(body=metrics.exposition(), content_type="text/plain", charset="utf-8")

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    guard = token_guard(settings.api_tokens, public={"/health"}, listen_host=settings.sender.web_host)
    app = web.Application(middlewares=[guard])
    app.router.add_get(METRICS_PATH, metrics_page)
    app.router.add_get("/health", health)
    return app
