"""`nudgeflow rules check FILE`: a rules file validated, with line and reason."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from schemas.rules import InvalidRules, load_rules
from schemas.settings import Settings
from streams.cli.base import Commands, command_group, subcommand


def command_rules_check(settings: Settings, arguments: argparse.Namespace) -> int:
    """`nudgeflow rules check`: validate a rules file; the line and the reason when it is not valid."""
    try:
        rules = load_rules(Path(arguments.file))
    except InvalidRules as error:
        print(error, file=sys.stderr)
        return 1
    print(f"{arguments.file}: ok ({len(type(rules).model_fields)} sections)")
    return 0


def register(commands: Commands) -> None:
    """Add `nudgeflow rules` and its subcommand to the command line."""
    rules = command_group(commands, "rules", "rules files")
    about = "validate a rules file; non-zero exit with line and reason"
    subcommand(rules, "check", about, command_rules_check, "file")
