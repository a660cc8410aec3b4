"""The one shape of every process's Prometheus metrics (worker, collector, sink, sender).

Each process's metrics are a `ProcessMetrics` with a registry of its own, so several processes in one test
or benchmark do not collide on the global registry and each /metrics shows its own figures; the metrics are
declared on it with `counter`, `gauge` and `histogram`, and `metrics_response` is what every /metrics route
answers.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class ProcessMetrics:
    """A process's metrics: declare them in `__init__` after calling this one."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()

    def counter(self, name: str, documentation: str, *labels: str) -> Counter:
        """A counter in this process's registry."""
        return Counter(name, documentation, labels, registry=self.registry)

    def gauge(self, name: str, documentation: str, *labels: str) -> Gauge:
        """A gauge in this process's registry."""
        return Gauge(name, documentation, labels, registry=self.registry)

    def histogram(self, name: str, documentation: str, *labels: str, buckets: Sequence[float]) -> Histogram:
        """A histogram in this process's registry, with buckets that fit what it measures."""
        return Histogram(name, documentation, labels, buckets=buckets, registry=self.registry)

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)


def metrics_response(metrics: ProcessMetrics) -> web.Response:
    """What a /metrics route answers."""
    return web.Response(body=metrics.exposition(), content_type=CONTENT_TYPE_LATEST.split(";")[0], charset="utf-8")
