"""The worker's Prometheus metrics, in a registry of its own (several workers can share a test process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class WorkerMetrics:
    """The worker's Prometheus metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.events = Counter(
            "nudgeflow_events_total",
            "Events applied, by type and event name",
            ["type", "event"],
            registry=self.registry,
        )
        self.invalid = Counter(
            "nudgeflow_invalid_messages_total", "Messages sent to the dead-letter topic, by reason", ["reason"],
            registry=self.registry,
        )  # fmt: skip
        self.repeated = Counter(
            "nudgeflow_repeated_events_total", "Events whose messageId the person's state had applied already",
            registry=self.registry,
        )  # fmt: skip
        self.quarantined = Counter(
            "nudgeflow_quarantined_states_total", "States set aside on the quarantine topic, by what failed",
            ["stage"], registry=self.registry,
        )  # fmt: skip
        self.skipped = Counter(
            "nudgeflow_skipped_records_total",
            "Source records Faust skipped, read again by the Faust runner",
            registry=self.registry,
        )
        self.dropped_erased = Counter(
            "nudgeflow_erased_events_dropped_total", "Late events of erased people, dropped", registry=self.registry
        )
        self.triggers = Counter(
            "nudgeflow_triggers_total", "Triggers published for the senders, by rule and channel", ["rule", "channel"],
            registry=self.registry,
        )  # fmt: skip
        self.suppressed = Counter(
            "nudgeflow_suppressed_total", "Due triggers held back by the policy gate, by rule and reason",
            ["rule", "reason"], registry=self.registry,
        )  # fmt: skip
        self.trigger_latency = Histogram(
            "nudgeflow_trigger_latency_seconds",
            "From the moment a trigger was due (or its event happened) to its publication",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )
        self.lag = Gauge(
            "nudgeflow_consumer_lag", "Messages behind the end of the log, per topic partition", ["topic", "partition"],
            registry=self.registry,
        )  # fmt: skip
        self.pending_timers = Gauge(
            "nudgeflow_pending_timers", "People with a pending deadline", registry=self.registry
        )
        self.profiles = Gauge("nudgeflow_profiles_held", "Profiles in this worker's tables", registry=self.registry)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
