"""Prometheus metrics of the ClickHouse sink, served at /metrics by the sink's web server.

They live in their own registry so several sinks in one process (tests, benchmarks) do not collide
on the global one, and a sink's /metrics shows its own figures.
"""

from __future__ import annotations

from schemas.metrics import ProcessMetrics

# Batches run from one row to sink_batch_size (20,000 by default); inserts from milliseconds to the
# seconds of a slow server.
BATCH_SIZE_BUCKETS = (1, 10, 50, 100, 500, 1000, 2500, 5000, 10000, 50000)
LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class SinkMetrics(ProcessMetrics):
    """The sink's Prometheus metrics: rows, batches and inserts per table, and what was dropped or set aside."""

    def __init__(self) -> None:
        super().__init__()
        self.rows_written = self.counter("nudgeflow_sink_rows_written", "Rows inserted into ClickHouse", "table")
        self.batch_size = self.histogram(
            "nudgeflow_sink_batch_rows", "Rows per insert", "table", buckets=BATCH_SIZE_BUCKETS
        )
        self.insert_latency = self.histogram(
            "nudgeflow_sink_insert_seconds", "Duration of successful inserts", "table", buckets=LATENCY_BUCKETS
        )
        self.insert_errors = self.counter(
            "nudgeflow_sink_insert_errors", "Failed insert attempts (each is retried)", "table"
        )
        self.dead_lettered = self.counter(
            "nudgeflow_sink_dead_lettered",
            "Messages set aside on the dead-letter topic: no row could be made, or ClickHouse refused the row",
            "table",
        )
        self.unstorable_letters = self.counter(
            "nudgeflow_sink_unstorable_dead_letters",
            "Dead letters that could not be stored themselves: logged and dropped, never dead-lettered again",
        )
        self.rows_dropped_as_erased = self.counter(
            "nudgeflow_sink_rows_dropped_as_erased", "Rows not written because their person was erased", "table"
        )
        self.commit_failures = self.counter(
            "nudgeflow_sink_commit_failures",
            "Offset commits that failed (after a rebalance, or a broker error); the batch is read again",
        )
