"""The live profile of one person: the single view every rule, segment and dashboard reads."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from schemas.events import UtcDatetime


class Profile(BaseModel):
    model_config = ConfigDict(frozen=True)

    person_id: str
    first_seen: UtcDatetime | None = None
    last_seen: UtcDatetime | None = None
    event_count: int = 0
    order_count: int = 0
    revenue: float = 0.0
    traits: dict[str, Any] = Field(default_factory=dict)
    timezone: str | None = None
    locale: str | None = None
