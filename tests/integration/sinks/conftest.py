"""Shared by the ClickHouse tests: one chDB directory per process, a database per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from schemas.settings import Settings
from sinks.clickhouse.client import connect
from sinks.clickhouse.schema import apply_migrations


@pytest.fixture(scope="session")
def chdb_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # chDB opens one directory per process; every test uses its own database inside it.
    return tmp_path_factory.mktemp("chdb")


@pytest.fixture
def sink_settings(settings: Settings, chdb_path: Path) -> Settings:
    """The test's pipeline, with chDB in the shared directory (a module may override this)."""
    return settings.model_copy(update={"clickhouse_path": chdb_path})


@pytest.fixture
def clickhouse(sink_settings: Settings) -> Iterator[Any]:
    client = connect(sink_settings)
    apply_migrations(client)
    yield client
    client.close()
