"""`nudgeflow export ID`: everything held about a person (right of access)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from schemas.settings import Settings
from streams.cli.base import Commands
from streams.cli.http import get_json, person_url


def command_export(settings: Settings, arguments: argparse.Namespace) -> int:
    """Everything held about a person (right of access): the worker's live profile and ClickHouse's rows.
    A process that is down is named under "unavailable" instead of failing the whole export."""
    import orjson

    person = arguments.person_id
    profile, profile_problem = get_json(
        person_url(settings.worker_web_host, settings.worker_web_port, "/profiles/{}", person), settings
    )
    stored, sink_problem = get_json(
        person_url(settings.sink_web_host, settings.sink_web_port, "/api/people/{}/export", person), settings
    )
    unavailable = {
        part: problem for part, problem in (("profile", profile_problem), ("clickhouse", sink_problem)) if problem
    }
    document: dict[str, Any] = {"person_id": person, "profile": profile, "clickhouse": stored}
    if unavailable:
        document["unavailable"] = unavailable
    sys.stdout.buffer.write(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")
    return 1 if len(unavailable) == 2 else 0


def register(commands: Commands) -> None:
    """Add `nudgeflow export` to the command line."""
    export_person = commands.add_parser(
        "export", help="everything held about a person (worker profile and ClickHouse rows) as one JSON"
    )
    export_person.add_argument("person_id")
    export_person.set_defaults(handler=command_export)
