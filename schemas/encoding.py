"""The one codec of the plain data inside the core (msgspec Structs): a person's state as stored in the
tables and their changelogs, and a profile as published on the profiles topic.

msgspec writes and reads Structs in C against their declared types: a state encodes in a few microseconds
and decodes into typed data without a validation pass (bench/core_throughput.py). Datetimes come out in
RFC 3339 (`Z` for UTC); states stored by the earlier codec (orjson over pydantic models, `+00:00`) decode
alike. Fields a reader does not know are skipped, so an older worker reads a newer state.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

import msgspec

Plain = TypeVar("Plain")

_ENCODER = msgspec.json.Encoder()


def encode(value: object) -> bytes:
    """A Struct (or plain values holding Structs) as JSON."""
    return _ENCODER.encode(value)


class Decoder(Generic[Plain]):
    """JSON into `kind`; NotDecodable (a ValueError) for anything else: not JSON, or of another shape."""

    __slots__ = ("_decode",)

    def __init__(self, kind: type[Plain]) -> None:
        self._decode = msgspec.json.Decoder(kind).decode

    def decode(self, data: bytes | str) -> Plain:
        try:
            return self._decode(data)
        except msgspec.DecodeError as error:
            raise NotDecodable(str(error)) from None


class NotDecodable(ValueError):
    """Stored or sent data that is not what it should be; msgspec's message says where."""


def to_plain(value: object) -> Any:
    """A Struct as JSON-ready builtins (dicts, lists, ISO strings), e.g. inside another message."""
    return msgspec.to_builtins(value)


def from_plain(document: object, kind: type[Plain]) -> Plain:
    """Builtins (as `to_plain` gives them, or as decoded from JSON) checked and turned into `kind`."""
    try:
        return msgspec.convert(document, kind)
    except msgspec.ValidationError as error:
        raise NotDecodable(str(error)) from None
