"""The configuration reference, rendered from the settings model so the README cannot drift from the code.

`nudgeflow settings` prints the table; a unit test checks that README.md holds exactly this text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from pydantic import AliasChoices
from pydantic.fields import FieldInfo

from schemas.settings import Settings


def environment_variables(name: str, field: FieldInfo) -> list[str]:
    """Every variable that sets the field: NUDGEFLOW_<NAME> first, then the plain aliases it also accepts."""
    prefix = str(Settings.model_config.get("env_prefix", ""))
    names = [f"{prefix}{name}".upper()]
    if isinstance(field.validation_alias, AliasChoices):
        for choice in field.validation_alias.choices:
            if isinstance(choice, str) and choice.upper() not in names:
                names.append(choice.upper())
    elif isinstance(field.validation_alias, str) and field.validation_alias.upper() not in names:
        names.append(field.validation_alias.upper())
    return names


def _default_of(field: FieldInfo) -> Any:
    if field.default_factory is not None:
        return field.default_factory()  # type: ignore[call-arg]
    return field.default


def describe_default(value: Any) -> str:
    """The default as an operator would write it in the environment; JSON for mappings and lists."""
    if value is None:
        return "unset"
    if value == "":
        return "empty"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    if isinstance(value, Path):
        return str(value)
    return str(value)


def _cell(text: str) -> str:
    # A pipe would end the cell early; a newline would end the row.
    return text.replace("|", "\\|").replace("\n", " ")


def _code(text: str) -> str:
    return f"`{_cell(text)}`" if text else ""


def settings_table() -> str:
    """The markdown table of every setting: name, environment variables, default and description."""
    lines = ["| setting | environment | default | description |", "|---|---|---|---|"]
    for name, field in Settings.model_fields.items():
        variables = ", ".join(_code(variable) for variable in environment_variables(name, field))
        value = _default_of(field)
        # "unset" and "empty" are words, not values to type, so they are not set in code font.
        default = describe_default(value) if value in (None, "") else _code(describe_default(value))
        lines.append(f"| {name} | {variables} | {default} | {_cell(field.description or '')} |")
    return "\n".join(lines) + "\n"
