"""JSON Schema files of the wire formats, for producers and senders written in other languages."""

from __future__ import annotations

from pathlib import Path

import orjson
from pydantic import BaseModel

from schemas.events import PROPERTIES_BY_EVENT, Event
from schemas.triggers import DeadLetter, Trigger

EXPORTED: dict[str, type[BaseModel]] = {
    "event": Event,
    "trigger": Trigger,
    "dead_letter": DeadLetter,
    **{f"properties.{name.value.lower().replace(' ', '_')}": model for name, model in PROPERTIES_BY_EVENT.items()},
}


def export_json_schemas(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, model in EXPORTED.items():
        path = directory / f"{name}.json"
        schema = model.model_json_schema(by_alias=True, mode="validation")
        path.write_bytes(orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")
        written.append(path)
    return written
