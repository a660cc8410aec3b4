"""Kafka as every nudgeflow process meets it: the topics and their creation (`topics`), the start-up check
that names the cause when a broker refuses the settings (`check`), and the outbox that sends what a batch
produced as a few record batches (`outbox`). It imports `schemas` only."""
