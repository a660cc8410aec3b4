"""`nudgeflow templates check DIR`: template faults with file, line and reason."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from schemas.settings import Settings
from streams.cli.base import Commands, command_group, subcommand


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
    templates = command_group(commands, "templates", "message templates")
    about = "check a templates directory; non-zero exit with the file, line and reason"
    subcommand(templates, "check", about, command_templates_check, "directory")
