"""The JSON Schema files kept in schemas/jsonschema/ are exactly what the models say today."""

from pathlib import Path

import orjson

from schemas.export import SHIPPED_DIRECTORY, export_json_schemas, rendered_schemas


def test_shipped_schema_files_match_the_models() -> None:
    shipped = {path.name: path.read_bytes() for path in SHIPPED_DIRECTORY.glob("*.json")}
    assert shipped == rendered_schemas(), "run `nudgeflow schemas export schemas/jsonschema` and commit the files"


def test_export_writes_one_file_per_wire_format(tmp_path: Path) -> None:
    written = export_json_schemas(tmp_path / "out")
    event = orjson.loads((tmp_path / "out" / "event.json").read_bytes())
    assert {"type", "timestamp", "userId", "anonymousId", "messageId"} <= set(event["properties"])
    trigger = orjson.loads((tmp_path / "out" / "trigger.json").read_bytes())
    assert {"triggerId", "address", "expiresAt", "variant"} <= set(trigger["properties"])
    assert len(written) == len(rendered_schemas())
