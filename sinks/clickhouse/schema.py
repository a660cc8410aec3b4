"""Versioned schema migrations, applied in order at start; each runs once per database."""

from __future__ import annotations

from importlib import resources
from typing import Any

MIGRATIONS_PACKAGE = "sinks.clickhouse.migrations"


def migration_files() -> list[tuple[str, str]]:
    """The migrations shipped with the sink, as (file name, SQL), in the order they apply."""
    folder = resources.files(MIGRATIONS_PACKAGE)
    found = [(entry.name, entry.read_text()) for entry in folder.iterdir() if entry.name.endswith(".sql")]
    return sorted(found)


def statements(sql: str) -> list[str]:
    """The statements of a migration, without comments."""
    # Migrations hold no semicolons inside literals; comments are dropped before splitting.
    lines = [line for line in sql.splitlines() if not line.strip().startswith("--")]
    return [statement.strip() for statement in "\n".join(lines).split(";") if statement.strip()]


def apply_migrations(client: Any) -> list[str]:
    """Apply the migrations not yet recorded in schema_migrations; returns the names applied now."""
    client.command(
        "CREATE TABLE IF NOT EXISTS schema_migrations (name String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
        "ENGINE = ReplacingMergeTree ORDER BY name"
    )
    done = {row[0] for row in client.query("SELECT name FROM schema_migrations").result_rows}
    applied = []
    for name, sql in migration_files():
        if name in done:
            continue
        for statement in statements(sql):
            client.command(statement)
        client.insert("schema_migrations", [[name]], column_names=["name"])
        applied.append(name)
    return applied
