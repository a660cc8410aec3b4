"""Markers by place: every test under tests/unit is `unit`, under tests/integration `integration`, under
tests/e2e `e2e`, so `make unit`, `make integration` and `make e2e` select them (pytest -m)."""

from __future__ import annotations

from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
KINDS = ("unit", "integration", "e2e")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        kind = item.path.relative_to(TESTS).parts[0] if item.path.is_relative_to(TESTS) else None
        if kind in KINDS:
            item.add_marker(getattr(pytest.mark, kind))
        if kind == "integration" and item.path.relative_to(TESTS).parts[1] == "cluster":
            item.add_marker(pytest.mark.cluster)  # the three-node failure tests: `make cluster`
