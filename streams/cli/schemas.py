"""`nudgeflow schemas export DIR`: JSON Schema files of every topic for other languages."""

from __future__ import annotations

import argparse
from pathlib import Path

from schemas.settings import Settings
from streams.cli.base import Commands, command_group, subcommand


def command_schemas_export(settings: Settings, arguments: argparse.Namespace) -> int:
    """`nudgeflow schemas export`: write the JSON Schema files into a directory and name each."""
    from schemas.export import export_json_schemas

    for path in export_json_schemas(Path(arguments.directory)):
        print(path)
    return 0


def register(commands: Commands) -> None:
    """Add `nudgeflow schemas` and its subcommand to the command line."""
    schemas = command_group(commands, "schemas", "event and trigger schemas")
    about = "write JSON Schema files for other languages"
    subcommand(schemas, "export", about, command_schemas_export, "directory")
