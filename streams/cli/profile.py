"""`nudgeflow profile ID`: the worker's live profile of one person."""

from __future__ import annotations

import argparse
import sys

from schemas.settings import Settings
from streams.cli.base import Commands
from streams.cli.http import get_json, person_url


def command_profile(settings: Settings, arguments: argparse.Namespace) -> int:
    """The worker's live profile of one person, as JSON."""
    import orjson

    url = person_url(settings.worker_web_host, settings.worker_web_port, "/profiles/{}", arguments.person_id)
    profile, problem = get_json(url, settings)
    if problem is not None:
        print(f"nudgeflow profile: {problem}", file=sys.stderr)
        return 1
    sys.stdout.buffer.write(orjson.dumps(profile, option=orjson.OPT_INDENT_2) + b"\n")
    return 0


def register(commands: Commands) -> None:
    """Add `nudgeflow profile` to the command line."""
    profile = commands.add_parser("profile", help="print the worker's live profile of a person")
    profile.add_argument("person_id")
    profile.set_defaults(handler=command_profile)
