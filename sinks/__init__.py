"""Everything nudgeflow writes to ClickHouse: the schema, the batching sink and the dashboard queries."""
