"""Prometheus metrics of the sender, in a registry of its own (several senders in one process for tests)."""

from __future__ import annotations

from aiohttp import web

from schemas.access import METRICS_PATH, token_guard
from schemas.metrics import ProcessMetrics, metrics_response
from schemas.settings import Settings

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
DELAY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)


class SenderMetrics(ProcessMetrics):
    """The sender's Prometheus metrics."""

    def __init__(self) -> None:
        super().__init__()
        self.sent = self.counter("nudgeflow_sender_sent", "Nudges the provider accepted", "channel", "provider")
        self.failed = self.counter(
            "nudgeflow_sender_failed",
            "Nudges given up on (refused, attempts used up, no template or address) or committed without an answer",
            "provider",
            "reason",
        )
        self.retried = self.counter(
            "nudgeflow_sender_retried", "Attempts refused in a way worth another one", "provider"
        )
        self.dropped = self.counter(
            "nudgeflow_sender_dropped",
            "Nudges not sent on purpose: expired, stale, or already in the ledger (a replay or a second copy)",
            "reason",
        )
        self.invalid = self.counter(
            "nudgeflow_sender_invalid_messages", "Trigger messages that could not be read: dead-lettered"
        )
        self.latency = self.histogram(
            "nudgeflow_sender_provider_seconds",
            "Duration of accepted provider calls, commit included",
            "provider",
            buckets=LATENCY_BUCKETS,
        )
        self.delay = self.histogram(
            "nudgeflow_sender_delay_seconds",
            "From the trigger's fired_at to the provider's acceptance",
            "channel",
            buckets=DELAY_BUCKETS,
        )
        self.in_flight = self.gauge("nudgeflow_sender_in_flight", "Nudges being sent now")
        self.ledger_size = self.gauge(
            "nudgeflow_sender_ledger_entries", "Nudges the ledger holds for the partitions owned"
        )


def web_app(metrics: SenderMetrics, settings: Settings) -> web.Application:
    """/metrics (open on loopback only, as every nudgeflow server's) and /health, which names nobody."""

    async def metrics_page(request: web.Request) -> web.Response:
        return metrics_response(metrics)

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    guard = token_guard(settings.api_tokens, public={"/health"}, listen_host=settings.sender.web_host)
    app = web.Application(middlewares=[guard])
    app.router.add_get(METRICS_PATH, metrics_page)
    app.router.add_get("/health", health)
    return app
