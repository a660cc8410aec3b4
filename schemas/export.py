"""JSON Schema files of the wire formats, for producers and senders written in other languages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import orjson
from pydantic import BaseModel

from schemas.campaigns import CampaignControl
from schemas.consent import ConsentChange
from schemas.deliveries import DeliveryRecord
from schemas.events import PROPERTIES_BY_EVENT, Event
from schemas.identity import ContactLink, ForgetMerged, Link, Merge
from schemas.privacy import AuditRecord, ErasureRequest
from schemas.profile import Profile
from schemas.recommendations import Recommendation
from schemas.scores import Score
from schemas.segments import SegmentChange
from schemas.triggers import DeadLetter, QuarantinedState, Suppression, Trigger

# Where the exported files are kept in the repository, for producers and senders to vendor.
SHIPPED_DIRECTORY = Path(__file__).resolve().parent / "jsonschema"

EXPORTED: dict[str, type[BaseModel] | type[msgspec.Struct]] = {
    "event": Event,
    "trigger": Trigger,
    "suppression": Suppression,
    "segment_change": SegmentChange,
    "consent_change": ConsentChange,
    "profile": Profile,
    "dead_letter": DeadLetter,
    "erasure_request": ErasureRequest,
    "audit_record": AuditRecord,
    "quarantined_state": QuarantinedState,
    "delivery_record": DeliveryRecord,
    "identity.link": Link,
    "identity.merge": Merge,
    "identity.contact": ContactLink,
    "identity.forget_merged": ForgetMerged,
    "campaign_control": CampaignControl,
    "score": Score,
    "recommendation": Recommendation,
    **{f"properties.{name.value.lower().replace(' ', '_')}": model for name, model in PROPERTIES_BY_EVENT.items()},
}


def json_schema(model: type[BaseModel] | type[msgspec.Struct]) -> dict[str, Any]:
    """The wire models' schemas come from pydantic; the profile is the core's plain data (msgspec)."""
    if issubclass(model, BaseModel):
        return model.model_json_schema(by_alias=True, mode="validation")
    return msgspec.json.schema(model)


def rendered_schemas() -> dict[str, bytes]:
    """File name -> JSON Schema document of every wire format."""
    return {
        f"{name}.json": orjson.dumps(json_schema(model), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
        for name, model in EXPORTED.items()
    }


def export_json_schemas(directory: Path) -> list[Path]:
    """Write the JSON Schema of each message into `directory`; the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, document in rendered_schemas().items():
        path = directory / name
        path.write_bytes(document)
        written.append(path)
    return written
