"""The collector's Prometheus metrics, in a registry of its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest


class CollectorMetrics:
    """The collector's Prometheus metrics: requests, their latency and events by outcome."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "nudgeflow_collector_requests_total", "HTTP requests, by route and status", ["route", "status"],
            registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "nudgeflow_collector_request_seconds", "Time to answer a request, by route", ["route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5), registry=self.registry,
        )  # fmt: skip
        self.events = Counter(
            "nudgeflow_collector_events_total", "Events by outcome: accepted, duplicate or rejected, per source",
            ["source", "outcome"], registry=self.registry,
        )  # fmt: skip

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
