"""The worker's Prometheus metrics (schemas.metrics: a registry of its own, as every process's)."""

from __future__ import annotations

from schemas.metrics import ProcessMetrics

TRIGGER_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class WorkerMetrics(ProcessMetrics):
    """The worker's Prometheus metrics."""

    def __init__(self) -> None:
        super().__init__()
        self.events = self.counter("nudgeflow_events_total", "Events applied, by type and event name", "type", "event")
        self.invalid = self.counter(
            "nudgeflow_invalid_messages_total", "Messages sent to the dead-letter topic, by reason", "reason"
        )
        self.repeated = self.counter(
            "nudgeflow_repeated_events_total", "Events whose messageId the person's state had applied already"
        )
        self.quarantined = self.counter(
            "nudgeflow_quarantined_states_total", "States set aside on the quarantine topic, by what failed", "stage"
        )
        self.skipped = self.counter(
            "nudgeflow_skipped_records_total", "Source records Faust skipped, read again by the Faust runner"
        )
        self.dropped_erased = self.counter(
            "nudgeflow_erased_events_dropped_total", "Late events of erased people, dropped"
        )
        self.triggers = self.counter(
            "nudgeflow_triggers_total", "Triggers published for the senders, by rule and channel", "rule", "channel"
        )
        self.suppressed = self.counter(
            "nudgeflow_suppressed_total",
            "Due triggers held back by the policy gate, by rule and reason",
            "rule",
            "reason",
        )
        self.trigger_latency = self.histogram(
            "nudgeflow_trigger_latency_seconds",
            "From the moment a trigger was due (or its event happened) to its publication",
            buckets=TRIGGER_LATENCY_BUCKETS,
        )
        self.lag = self.gauge(
            "nudgeflow_consumer_lag", "Messages behind the end of the log, per topic partition", "topic", "partition"
        )
        self.pending_timers = self.gauge("nudgeflow_pending_timers", "People with a pending deadline")
        self.profiles = self.gauge("nudgeflow_profiles_held", "Profiles in this worker's tables")
