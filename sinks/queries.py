"""Questions asked of ClickHouse, as functions returning plain Python values."""

from __future__ import annotations

from typing import Any

COUNTED_TABLES = ("events", "triggers", "dead_letters")


def table_counts(client: Any) -> dict[str, int]:
    """Distinct rows per table (FINAL collapses rows written twice by a replay)."""
    return {
        table: int(client.query(f"SELECT count() FROM {table} FINAL").result_rows[0][0]) for table in COUNTED_TABLES
    }


def triggers_by_rule(client: Any) -> dict[str, int]:
    rows = client.query("SELECT rule, count() FROM triggers FINAL GROUP BY rule ORDER BY rule").result_rows
    return {str(rule): int(count) for rule, count in rows}
