"""One-click unsubscribe tokens (RFC 8058): the sender signs them into each email, the collector checks them.

A token is `<payload>.<mac>`, both base64url without padding. The payload holds the person, the channel,
the expiry (Unix seconds) and the nudge it came with; the MAC is HMAC-SHA256 under a key derived from the
deployment's hash key, so a token cannot be made or altered without it, and a leaked token stops working.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime

import orjson

# Longest token accepted: a person id of the longest allowed length fits several times over.
MAX_TOKEN_LENGTH = 2048


class InvalidToken(ValueError):
    """Why a token was refused (malformed, forged, expired)."""


@dataclass(frozen=True)
class Unsubscribe:
    person_id: str
    channel: str
    expires: int
    trigger_id: str = ""


def _key(hash_key: bytes) -> bytes:
    # A key of its own: a token's MAC is never a valid contact digest or erased-person hash.
    return hmac.new(hash_key, b"nudgeflow unsubscribe token", hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def make_token(request: Unsubscribe, hash_key: bytes) -> str:
    payload = orjson.dumps([request.person_id, request.channel, request.expires, request.trigger_id])
    mac = hmac.new(_key(hash_key), payload, hashlib.sha256).digest()
    return f"{_b64(payload)}.{_b64(mac)}"


def read_token(token: str, hash_key: bytes, now: datetime) -> Unsubscribe:
    """The request a token carries, or InvalidToken with the reason."""
    if len(token) > MAX_TOKEN_LENGTH:
        raise InvalidToken(f"token is longer than {MAX_TOKEN_LENGTH} characters")
    encoded, dot, signature = token.partition(".")
    if not dot or not encoded or not signature:
        raise InvalidToken("malformed token")
    try:
        payload, mac = _unb64(encoded), _unb64(signature)
    except (binascii.Error, ValueError):
        raise InvalidToken("malformed token") from None
    if not hmac.compare_digest(mac, hmac.new(_key(hash_key), payload, hashlib.sha256).digest()):
        raise InvalidToken("the token's signature does not match")
    try:
        person_id, channel, expires, trigger_id = orjson.loads(payload)
    except (orjson.JSONDecodeError, ValueError, TypeError):
        raise InvalidToken("malformed token") from None
    if not (isinstance(person_id, str) and person_id and isinstance(channel, str) and isinstance(trigger_id, str)):
        raise InvalidToken("malformed token")
    if isinstance(expires, bool) or not isinstance(expires, int):
        raise InvalidToken("malformed token")
    if now.timestamp() > expires:
        raise InvalidToken("the link has expired")
    return Unsubscribe(person_id, channel, expires, trigger_id)
