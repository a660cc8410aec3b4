"""The collector's Prometheus metrics (schemas.metrics: a registry of its own, as every process's)."""

from __future__ import annotations

from schemas.metrics import ProcessMetrics

REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class CollectorMetrics(ProcessMetrics):
    """The collector's Prometheus metrics: requests, their latency and events by outcome."""

    def __init__(self) -> None:
        super().__init__()
        self.requests = self.counter(
            "nudgeflow_collector_requests_total", "HTTP requests, by route and status", "route", "status"
        )
        self.latency = self.histogram(
            "nudgeflow_collector_request_seconds",
            "Time to answer a request, by route",
            "route",
            buckets=REQUEST_BUCKETS,
        )
        self.events = self.counter(
            "nudgeflow_collector_events_total",
            "Events by outcome: accepted, duplicate or rejected, per source",
            "source",
            "outcome",
        )
