"""What the command modules share: where the repository's scripts are, and the refusal of unsafe settings."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeAlias

from schemas.settings import Settings, UnsafeSettings

REPO = Path(__file__).resolve().parents[2]
KAFKA_SCRIPT = REPO / "deploy" / "kafka" / "kafka.sh"
CLUSTER_SCRIPT = REPO / "deploy" / "kafka" / "cluster.sh"
DEMO_RULES = REPO / "deploy" / "rules.demo.yaml"

# Each command module's `register(commands)` adds its parser to this.
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

# What a command runs: the settings and its parsed arguments in, the exit code out.
Handler: TypeAlias = Callable[[Settings, argparse.Namespace], int]

log = logging.getLogger("nudgeflow")

# A process that refuses its settings exits with this code, apart from a crash (1).
REFUSED = 2


def kafka_environment(settings: Settings) -> dict[str, str]:
    """The environment of deploy/kafka/kafka.sh for the broker these settings name."""
    return {
        **os.environ,
        "KAFKA_PORT": str(settings.kafka_port),
        "KAFKA_DATA_DIR": str((settings.data_dir / "kafka").resolve()),
    }


def refused(settings: Settings, component: str) -> bool:
    """Whether settings left open by development defaults keep `component` from starting (said on stderr)."""
    try:
        settings.check_closed(component)
    except UnsafeSettings as error:
        print(error, file=sys.stderr)
        return True
    return False


def command_group(commands: Commands, name: str, help: str) -> Commands:
    """A command of subcommands, `nudgeflow <name> <subcommand>`, one of which must be named."""
    group = commands.add_parser(name, help=help)
    subcommands: Commands = group.add_subparsers(dest=f"{name}_command", required=True)
    return subcommands


def subcommand(group: Commands, name: str, help: str, handler: Handler, *positionals: str) -> argparse.ArgumentParser:
    """A subcommand of `group` running `handler`, with its positional arguments; options are added by the caller."""
    parser = group.add_parser(name, help=help)
    for positional in positionals:
        parser.add_argument(positional)
    parser.set_defaults(handler=handler)
    return parser
