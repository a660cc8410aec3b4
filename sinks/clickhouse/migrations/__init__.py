"""Versioned SQL migrations, applied in file-name order by sinks.clickhouse.schema."""
