"""Everything nudgeflow keeps per person: the profile, the rules' pending work, and what was applied."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from schemas.profile import Profile
from streams.rules.carts import PendingCart


class SourcePosition(BaseModel):
    """Where a message came from; the state remembers the last one applied per topic partition."""

    model_config = ConfigDict(frozen=True)

    topic: str
    partition: int
    offset: int

    @property
    def stream(self) -> str:
        return f"{self.topic}/{self.partition}"


class PersonState(BaseModel):
    model_config = ConfigDict(frozen=True)

    profile: Profile
    carts: dict[str, PendingCart] = Field(default_factory=dict)
    applied_offsets: dict[str, int] = Field(default_factory=dict)

    @classmethod
    def new(cls, person_id: str) -> PersonState:
        return cls(profile=Profile(person_id=person_id))

    @property
    def person_id(self) -> str:
        return self.profile.person_id

    def already_applied(self, position: SourcePosition) -> bool:
        """True for a message at or below the last applied offset of its partition: a redelivery."""
        return position.offset <= self.applied_offsets.get(position.stream, -1)

    def record(self, position: SourcePosition) -> dict[str, int]:
        return {**self.applied_offsets, position.stream: position.offset}
