"""`nudgeflow settings`: the configuration reference, or the README's table rewritten."""

from __future__ import annotations

import argparse
from pathlib import Path

from schemas.settings import Settings
from streams.cli.base import Commands


def command_settings(settings: Settings, arguments: argparse.Namespace) -> int:
    """`nudgeflow settings`: print the configuration reference, or update the table in a README."""
    from streams.cli.settings_docs import settings_table, update_readme

    if arguments.write_readme is not None:
        changed = update_readme(Path(arguments.write_readme))
        print(f"{arguments.write_readme}: {'updated' if changed else 'already up to date'}")
        return 0
    print(settings_table(), end="")
    return 0


def register(commands: Commands) -> None:
    """Add `nudgeflow settings` to the command line."""
    settings_command = commands.add_parser(
        "settings", help="print the configuration reference (every NUDGEFLOW_* variable) as a markdown table"
    )
    settings_command.add_argument("--write-readme", metavar="README", help="replace the table in this README instead")
    settings_command.set_defaults(handler=command_settings)
