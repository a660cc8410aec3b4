"""Segment membership changes, published on the `segments` topic."""

from __future__ import annotations

from typing import Literal

from schemas.events import UtcDatetime, WireModel


class SegmentChange(WireModel):
    """A person entering or leaving a segment, at the moment (event time) it happened."""

    person_id: str
    segment: str
    change: Literal["enter", "exit"]
    at: UtcDatetime
