"""`nudgeflow templates check DIR`: template faults with file, line and reason."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from schemas.settings import Settings
from streams.cli.base import Commands


def command_templates_check(settings: Settings, arguments: argparse.Namespace) -> int:
    """`nudgeflow templates check`: check a templates directory; each problem with its file, line and reason."""
    from sinks.sender.templates import check_directory

    directory = Path(arguments.directory)
    problems = check_directory(directory)
    for problem in problems:
        print(problem if str(problem).startswith(str(directory)) else f"{directory}/{problem}", file=sys.stderr)
    if problems:
        return 1
    print(f"{directory}: ok")
    return 0


def register(commands: Commands) -> None:
    """Add `nudgeflow templates` and its subcommand to the command line."""
    templates = commands.add_parser("templates", help="message templates")
    templates_commands = templates.add_subparsers(dest="templates_command", required=True)
    templates_check = templates_commands.add_parser(
        "check", help="check a templates directory; non-zero exit with the file, line and reason"
    )
    templates_check.add_argument("directory")
    templates_check.set_defaults(handler=command_templates_check)
