"""The live profile of one person: the single view every rule, segment and dashboard reads."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from schemas.events import UtcDatetime


class ConsentState(StrEnum):
    OPTED_IN = "opted_in"
    OPTED_OUT = "opted_out"


class DayCounts(BaseModel):
    """One day's activity; the rolling 7/30/90-day windows are sums over at most 90 of these."""

    model_config = ConfigDict(frozen=True)

    views: int = 0
    adds: int = 0
    orders: int = 0
    revenue: float = 0.0


class SeenRange(BaseModel):
    model_config = ConfigDict(frozen=True)

    first: UtcDatetime
    last: UtcDatetime


class Profile(BaseModel):
    model_config = ConfigDict(frozen=True)

    person_id: str
    identified: bool = Field(default=False, description="seen with a userId, not only an anonymous id")
    anonymous_ids: list[str] = Field(default_factory=list)
    first_seen: UtcDatetime | None = None
    last_seen: UtcDatetime | None = None
    channels: dict[str, SeenRange] = Field(default_factory=dict, description="web, app, email, sms")
    days: dict[str, DayCounts] = Field(default_factory=dict, description="ISO date -> counts, last 90 days")
    event_count: int = 0
    order_count: int = 0
    revenue: float = 0.0
    first_order_at: UtcDatetime | None = None
    last_order_at: UtcDatetime | None = None
    engagement: float = 0.0
    engagement_at: UtcDatetime | None = None
    unopened_emails: int = 0
    last_email_sent_at: UtcDatetime | None = None
    last_email_open_at: UtcDatetime | None = None
    last_email_click_at: UtcDatetime | None = None
    last_login_at: UtcDatetime | None = None
    last_visit_at: UtcDatetime | None = None
    email: str | None = None
    phone: str | None = None
    name: str | None = None
    birthday: str | None = Field(default=None, description="YYYY-MM-DD or --MM-DD")
    timezone: str | None = None
    locale: str | None = None
    consent: dict[str, ConsentState] = Field(default_factory=dict, description="channel -> consent")
    traits: dict[str, Any] = Field(default_factory=dict)
    recently_viewed: list[str] = Field(default_factory=list, description="product ids, most recent first")
