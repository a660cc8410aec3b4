"""Messages of the identity topic: how people's states find each other across partitions.

Every message is keyed by the person (or anonymous id, or contact id) whose partition must act on it:

- `link` (keyed by an anonymous id): that visitor is now this person; hand the state over.
- `merge` (keyed by the person): absorb this anonymous state.
- `contact` (keyed by a contact id, see schemas.privacy.CONTACT_PREFIX): this person has, or no longer
  has, that email address or phone number; opt-outs naming only the contact reach them through it.
- `forget_merged` (sent to every partition): erase every anonymous id that was merged into this person.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from schemas.events import UtcDatetime
from schemas.limits import LimitExceeded, Limits, check_depth, check_document, decode_validated


class _IdentityModel(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    def to_json(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()


class Link(_IdentityModel):
    """An anonymous visitor identified as a person: the visitor's state is handed over to that person."""

    kind: Literal["link"] = "link"
    anonymous_id: str = Field(min_length=1)
    person_id: str = Field(min_length=1)


class Merge(_IdentityModel):
    """An anonymous visitor's whole state, handed to the person it turned out to be, to absorb."""

    kind: Literal["merge"] = "merge"
    anonymous_id: str = Field(min_length=1)
    person_id: str = Field(min_length=1)
    state: dict[str, Any] = Field(description="the anonymous visitor's whole state, as stored")


class ContactLink(_IdentityModel):
    """A person who now has, or no longer has, an email address or phone number (its contact id)."""

    kind: Literal["contact"] = "contact"
    contact_id: str = Field(min_length=1)
    person_id: str = Field(min_length=1)
    op: Literal["add", "remove"]


class ForgetMerged(_IdentityModel):
    """Sent to every partition for an erased person: every anonymous id merged into them is erased too."""

    kind: Literal["forget_merged"] = "forget_merged"
    person_id: str = Field(min_length=1)
    request_id: str
    requested_at: UtcDatetime


IdentityMessage = Annotated[Link | Merge | ContactLink | ForgetMerged, Field(discriminator="kind")]
_ADAPTER: TypeAdapter[Link | Merge | ContactLink | ForgetMerged] = TypeAdapter(IdentityMessage)

# A merge carries a whole state: its bound is the record size the worker itself stores, not an event's.
MERGE_BYTES = 1024 * 1024
# A state nests a few levels of its own (state, profile, traits) above what an event's traits may nest.
STATE_LEVELS = 8


class InvalidIdentityMessage(ValueError):
    """A message of the identity topic that cannot be acted on; the reason goes to the dead letter."""


def parse_identity(raw: bytes | None, limits: Limits) -> Link | Merge | ContactLink | ForgetMerged:
    """The identity message in `raw`, checked against the limits; InvalidIdentityMessage when it is not one."""
    message = decode_validated(raw, _ADAPTER.validate_python, MERGE_BYTES, InvalidIdentityMessage, "identity message")
    for name in ("anonymous_id", "person_id", "contact_id"):
        value = getattr(message, name, None)
        if isinstance(value, str) and len(value) > limits.id_length:
            raise InvalidIdentityMessage(f"over a limit: {name}: {len(value)} characters; at most {limits.id_length}")
    if isinstance(message, Merge):
        # The state of a merge is absorbed into a person's: it must hold no more than an event could have
        # put there, or every later snapshot of that person would be refused downstream.
        try:
            check_depth(message.state, limits.json_depth + STATE_LEVELS, "state")
            profile = message.state.get("profile")
            traits = profile.get("traits") if isinstance(profile, dict) else None
            if isinstance(traits, dict):
                # An event's traits start one level down: they may nest one level less than the event.
                check_document(traits, limits.model_copy(update={"json_depth": limits.json_depth - 1}))
        except LimitExceeded as error:
            raise InvalidIdentityMessage(f"over a limit: merge {error}") from None
    return message
