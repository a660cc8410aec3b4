"""The `nudgeflow` parser, assembled from one module per command, and the entry point."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from schemas.connections import BrokerRefused, BrokerUnavailable
from schemas.rules import InvalidRules
from schemas.settings import Settings
from streams.cli import (
    campaign,
    collector,
    demo_audience,
    erase,
    export,
    kafka,
    models,
    profile,
    replay,
    report,
    rules,
    run,
    schemas,
    send,
    settings,
    simulate,
    sink,
    templates,
    triggers,
    worker,
)
from streams.cli.base import REFUSED
from streams.logs import configure_logging

# The order `nudgeflow --help` lists them in.
COMMANDS = (
    run,
    worker,
    sink,
    report,
    models,
    simulate,
    collector,
    send,
    templates,
    demo_audience,
    triggers,
    kafka,
    settings,
    rules,
    campaign,
    schemas,
    profile,
    export,
    erase,
    replay,
)


def build_parser() -> argparse.ArgumentParser:
    """The `nudgeflow` argument parser, with every command's subcommand."""
    parser = argparse.ArgumentParser(
        prog="nudgeflow",
        description="Event-streaming behavioural pipeline for email and SMS nudges. "
        "Configuration comes from NUDGEFLOW_* environment variables.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line: read the settings, run the command asked for, and turn known failures into one line and an
    exit code."""
    arguments = build_parser().parse_args(argv)
    try:
        configured = Settings()
    except ValidationError as error:
        # What is wrong with which setting, one line each; no traceback, and no value (it may be a secret).
        for problem in error.errors(include_input=False, include_url=False):
            place = ".".join(str(part) for part in problem["loc"])
            print(f"nudgeflow: invalid settings: {place}: {problem['msg']}", file=sys.stderr)
        return REFUSED
    configure_logging(configured)
    try:
        result: int = arguments.handler(configured, arguments)
    except InvalidRules as error:
        print(f"nudgeflow: invalid rules: {error}", file=sys.stderr)
        return 1
    except BrokerUnavailable as error:
        # One line naming the cause, not a client's traceback; a refusal is the settings' fault (REFUSED).
        print(f"nudgeflow: {error}", file=sys.stderr)
        return REFUSED if isinstance(error, BrokerRefused) else 1
    except KeyboardInterrupt:
        return 130
    return result


if __name__ == "__main__":
    sys.exit(main())
