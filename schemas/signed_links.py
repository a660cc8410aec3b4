"""Signed, expiring tokens for the links nudgeflow puts in its messages (unsubscribe, confirm a subscription),
checked by the collector: one signing scheme for every kind of link.

A token is `<payload>.<mac>`, both base64url without padding. The payload is a JSON list whose first items
are the person, the channel and the expiry (Unix seconds); the MAC is HMAC-SHA256 under a key derived from
the deployment's hash key and the link's purpose, so a token cannot be made or altered without the key, and
a token for one purpose (unsubscribe) is not a token for another (confirm).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from datetime import datetime
from typing import Any

import orjson

# Longest token accepted: a person id of the longest allowed length fits several times over.
MAX_TOKEN_LENGTH = 2048


class InvalidToken(ValueError):
    """Why a token was refused: malformed (the subclasses say more)."""


class ForgedToken(InvalidToken):
    """The signature does not match: altered, made without the key, or meant for another purpose."""


class ExpiredToken(InvalidToken):
    """Signed, but past its expiry."""


def _key(hash_key: bytes, purpose: str) -> bytes:
    # A key of its own per purpose: a token's MAC is never a valid contact digest or erased-person hash.
    return hmac.new(hash_key, f"nudgeflow {purpose} token".encode(), hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(purpose: str, person_id: str, channel: str, expires: int, extra: list[str], hash_key: bytes) -> str:
    """A token carrying the person, channel, expiry and `extra`, signed with a key derived for `purpose`."""
    payload = orjson.dumps([person_id, channel, expires, *extra])
    mac = hmac.new(_key(hash_key, purpose), payload, hashlib.sha256).digest()
    return f"{_b64(payload)}.{_b64(mac)}"


def verify(purpose: str, token: str, hash_key: bytes, now: datetime, extra: int) -> tuple[str, str, int, list[str]]:
    """(person, channel, expiry, the `extra` strings) of a token signed for `purpose`, or InvalidToken (or
    one of its subclasses) with the reason. The signature is checked before anything in the payload is read."""
    if len(token) > MAX_TOKEN_LENGTH:
        raise InvalidToken(f"token is longer than {MAX_TOKEN_LENGTH} characters")
    encoded, dot, signature = token.partition(".")
    if not dot or not encoded or not signature:
        raise InvalidToken("malformed token")
    try:
        payload, mac = _unb64(encoded), _unb64(signature)
    except (binascii.Error, ValueError):
        raise InvalidToken("malformed token") from None
    if not hmac.compare_digest(mac, hmac.new(_key(hash_key, purpose), payload, hashlib.sha256).digest()):
        raise ForgedToken("the token's signature does not match")
    try:
        fields: Any = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise InvalidToken("malformed token") from None
    if not isinstance(fields, list) or len(fields) != 3 + extra:
        raise InvalidToken("malformed token")
    person_id, channel, expires, *rest = fields
    if not (isinstance(person_id, str) and person_id and isinstance(channel, str)):
        raise InvalidToken("malformed token")
    if isinstance(expires, bool) or not isinstance(expires, int) or not all(isinstance(x, str) for x in rest):
        raise InvalidToken("malformed token")
    if now.timestamp() > expires:
        raise ExpiredToken("the link has expired")
    return person_id, channel, expires, rest
