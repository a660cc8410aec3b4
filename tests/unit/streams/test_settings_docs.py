"""The configuration reference in the README is exactly what the settings model renders."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from schemas.limits import Limits
from schemas.settings import SecuritySettings, SenderSettings, Settings
from streams.cli.settings_docs import environment_variables, settings_table

README = Path(__file__).resolve().parents[3] / "README.md"


def test_the_readme_holds_exactly_the_generated_table() -> None:
    table = settings_table()
    assert table in README.read_text(), "README.md is out of date: paste the output of `nudgeflow settings`"


def test_every_setting_has_a_row_and_a_description() -> None:
    rows = settings_table().splitlines()[2:]
    names = [row.split(" | ")[0].removeprefix("| ") for row in rows]
    plain = [name for name in Settings.model_fields if name not in ("limits", "sender", "security")]
    groups = [f"limits.{name}" for name in Limits.model_fields]
    groups += [f"sender.{name}" for name in SenderSettings.model_fields]
    groups += [f"security.{name}" for name in SecuritySettings.model_fields]
    assert names == plain + groups
    every = [*Settings.model_fields.values(), *Limits.model_fields.values(), *SenderSettings.model_fields.values()]
    every += SecuritySettings.model_fields.values()
    assert all(field.description for field in every)


def test_a_limit_is_set_through_its_nested_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NUDGEFLOW_LIMITS__JSON_DEPTH", "12")
    assert Settings().limits.json_depth == 12
    rows = {row.split(" | ")[0].removeprefix("| "): row for row in settings_table().splitlines()[2:]}
    assert "`NUDGEFLOW_LIMITS__JSON_DEPTH` | `32` |" in rows["limits.json_depth"]


def test_aliases_are_listed_after_the_prefixed_name() -> None:
    field = Settings.model_fields["kafka_bootstrap"]
    assert environment_variables("kafka_bootstrap", field) == ["NUDGEFLOW_KAFKA_BOOTSTRAP", "KAFKA_BOOTSTRAP"]
    assert environment_variables("partitions", Settings.model_fields["partitions"]) == ["NUDGEFLOW_PARTITIONS"]


def test_defaults_are_written_as_they_would_be_set() -> None:
    rows = {row.split(" | ")[0].removeprefix("| "): row for row in settings_table().splitlines()[2:]}
    assert "| `{}` |" in rows["collector_write_keys"]
    assert "| unset |" in rows["clickhouse_url"]
    assert "| `8` |" in rows["partitions"]


def test_the_cli_prints_the_table() -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "streams.cli", "settings"], capture_output=True, text=True, check=True, timeout=60
    )
    assert printed.stdout == settings_table()
