"""One way to reach ClickHouse: embedded chDB by default, a server when a URL is configured."""

from __future__ import annotations

from typing import Any

import clickhouse_connect

from schemas.connections import clickhouse_options
from schemas.settings import Settings


def connect(settings: Settings) -> Any:
    """A clickhouse-connect client on nudgeflow's database, creating the database if needed."""
    if settings.clickhouse_url:
        server = clickhouse_connect.get_client(**clickhouse_options(settings))
        server.command(f"CREATE DATABASE IF NOT EXISTS {settings.clickhouse_database}")
        return clickhouse_connect.get_client(**clickhouse_options(settings), database=settings.clickhouse_database)
    path = settings.clickhouse_path or settings.data_dir / "clickhouse"
    path.mkdir(parents=True, exist_ok=True)
    embedded = clickhouse_connect.get_client(interface="chdb", path=str(path.resolve()))
    embedded.command(f"CREATE DATABASE IF NOT EXISTS {settings.clickhouse_database}")
    embedded.command(f"USE {settings.clickhouse_database}")
    return embedded
