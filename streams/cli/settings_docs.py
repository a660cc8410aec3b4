"""The configuration reference, rendered from the settings model so the README cannot drift from the code.

`nudgeflow settings` prints the table; a unit test checks that README.md holds exactly this text.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from pydantic import AliasChoices, BaseModel
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
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _cell(text: str) -> str:
    # A pipe would end the cell early; a newline would end the row.
    return text.replace("|", "\\|").replace("\n", " ")


def _code(text: str) -> str:
    return f"`{_cell(text)}`" if text else ""


def settings_table() -> str:
    """The markdown table of every setting: name, environment variables, default and description."""
    lines = ["| setting | environment | default | description |", "|---|---|---|---|"]
    nested: list[tuple[str, FieldInfo]] = []
    for name, field in Settings.model_fields.items():
        value = _default_of(field)
        if isinstance(value, BaseModel):
            nested.extend((f"{name}.{inner}", inner_field) for inner, inner_field in type(value).model_fields.items())
            continue
        lines.append(_row(name, environment_variables(name, field), value, field.description))
    # Groups (the limits) come last, one row per member: NUDGEFLOW_<GROUP>__<MEMBER>.
    prefix = str(Settings.model_config.get("env_prefix", ""))
    delimiter = str(Settings.model_config.get("env_nested_delimiter") or "__")
    for dotted, field in nested:
        variable = f"{prefix}{dotted.replace('.', delimiter)}".upper()
        lines.append(_row(dotted, [variable], _default_of(field), field.description))
    return "\n".join(lines) + "\n"


def _row(name: str, variables: list[str], value: Any, description: str | None) -> str:
    # "unset" and "empty" are words, not values to type, so they are not set in code font.
    default = describe_default(value) if value in (None, "") else _code(describe_default(value))
    names = ", ".join(_code(variable) for variable in variables)
    return f"| {name} | {names} | {default} | {_cell(description or '')} |"


def update_readme(readme: Path) -> bool:
    """Replace the settings table in README.md with the generated one; True if it changed."""
    text = readme.read_text()
    start = text.index("| setting | environment | default | description |")
    end = text.index("\n\n", start) + 1
    updated = text[:start] + settings_table() + text[end:]
    if updated == text:
        return False
    readme.write_text(updated)
    return True
