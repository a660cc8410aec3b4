"""One-click unsubscribe tokens (RFC 8058): the sender signs them into each email, the collector checks them.

Signed as every link is (`schemas.signed_links`, purpose "unsubscribe"): the person, the channel, the expiry
and the nudge it came with, so a token cannot be made or altered without the key, and a leaked token stops
working.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from schemas.signed_links import MAX_TOKEN_LENGTH, InvalidToken, sign, verify

__all__ = ["MAX_TOKEN_LENGTH", "InvalidToken", "Unsubscribe", "make_token", "read_token"]

PURPOSE = "unsubscribe"


@dataclass(frozen=True)
class Unsubscribe:
    """What an unsubscribe link stands for: a person leaving a channel, until the link expires."""

    person_id: str
    channel: str
    expires: int
    trigger_id: str = ""


def make_token(request: Unsubscribe, hash_key: bytes) -> str:
    """The signed token of an unsubscribe link."""
    return sign(PURPOSE, request.person_id, request.channel, request.expires, [request.trigger_id], hash_key)


def read_token(token: str, hash_key: bytes, now: datetime) -> Unsubscribe:
    """The request a token carries, or InvalidToken with the reason."""
    person_id, channel, expires, (trigger_id,) = verify(PURPOSE, token, hash_key, now, extra=1)
    return Unsubscribe(person_id, channel, expires, trigger_id)
