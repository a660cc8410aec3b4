"""Shared by the ClickHouse tests: one chDB directory per process, a database per test."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def chdb_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # chDB opens one directory per process; every test uses its own database inside it.
    return tmp_path_factory.mktemp("chdb")
