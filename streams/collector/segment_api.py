"""The Segment / RudderStack HTTP tracking API, without the HTTP: write keys, call shapes, batch envelopes.

Everything here is a pure function of the decoded request and the server's receive time, so the aiohttp
handlers only read bodies and move the outcome to Kafka.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, get_args

import orjson
from pydantic import ValidationError

from schemas.consent import CLIENT_SOURCES, states_consent
from schemas.events import Event, EventType
from schemas.limits import LimitExceeded, Limits, check_document, check_timestamp, describe_validation_error
from schemas.privacy import CONTACT_PREFIX
from streams.collector.cleaning import clean_traits
from streams.collector.skew import ImplausibleTimestamps, derived_timestamp

CALL_TYPES: tuple[str, ...] = get_args(EventType)
PERSON_FIELDS = ("userId", "anonymousId", "previousId")


class InvalidCall(ValueError):
    """One event the collector will not accept, with a reason the sender can act on."""


class PayloadTooLarge(InvalidCall):
    """An event above the per-event size limit (HTTP 413 when it is the whole request)."""


@dataclass(frozen=True)
class Rejection:
    """One item of a call that was refused: where it was, why, and what it was."""

    index: int
    reason: str
    raw: Any


@dataclass(frozen=True)
class Reception:
    """What the collector knows of a request, the same for every call in it: the limits, when it came, the
    phone region of numbers without a country code, how to make a missing messageId, the source of its write
    key, and who sent it (`request_context`, the `ip` and `userAgent` a consent's proof keeps). `contact_ids`
    is for the collector's own webhook events only: they may carry person ids of the contact form."""

    limits: Limits
    received_at: datetime
    default_region: str
    new_message_id: Callable[[], str]
    source: str | None = None
    request_context: Mapping[str, str] | None = None
    contact_ids: bool = False


@dataclass
class BatchOutcome:
    """What became of a call's items: the events accepted and the items rejected."""

    accepted: list[Event] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)


def write_key_from_authorization(header: str | None) -> str | None:
    """The write key of HTTP Basic auth (the user name; the password is empty), or None."""
    if not header:
        return None
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() != "basic" or not credentials:
        return None
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, _, _password = decoded.partition(":")
    return user or None


def source_for(write_key: str | None, write_keys: Mapping[str, str]) -> str:
    """The source name of a known write key; raises InvalidCall saying what is wrong otherwise."""
    if not write_key:
        raise InvalidCall("missing write key: send it as the HTTP Basic auth user name or as writeKey in the body")
    source = write_keys.get(write_key)
    if source is None:
        raise InvalidCall("unknown write key")
    return source


def prepare_event(
    raw: Any,
    reception: Reception,
    *,
    call_type: str | None = None,
    batch_sent_at: Any = None,
    batch_context: Mapping[str, Any] | None = None,
) -> Event:
    """One call as it goes onto the events topic, or InvalidCall with the reason.

    The route decides `type` for single calls; inside a batch each call names its own. The server sets
    `receivedAt`; with a `sentAt` (the call's own, else the batch's) the timestamp is corrected for the
    device's clock skew and the client's value kept as `originalTimestamp`. The call must be within
    `limits`, the corrected timestamp too. Person ids of the contact form (privacy.CONTACT_PREFIX) are
    refused unless `contact_ids`: only the collector's own webhook events may carry them, and so may a
    consent source other than the client's own (`CLIENT_SOURCES`). `request_context` (the request's `ip`
    and `userAgent`) fills what the context of a call stating a consent does not say.
    """
    limits, received_at, contact_ids = reception.limits, reception.received_at, reception.contact_ids
    source, request_context = reception.source, reception.request_context
    if not isinstance(raw, dict):
        raise InvalidCall(f"an event must be a JSON object, not {_json_type(raw)}")
    own = {name: value for name, value in raw.items() if name != "writeKey"}
    if not contact_ids:
        for name in PERSON_FIELDS:
            value = own.get(name)
            if isinstance(value, str) and value.startswith(CONTACT_PREFIX):
                raise InvalidCall(f"{name}: ids starting with {CONTACT_PREFIX!r} are reserved for the collector")
    # Until the bounds are checked below, only the top level of the call and its context is read.
    document = dict(own)
    if call_type is not None:
        document["type"] = call_type
    if batch_context:
        own_context = document.get("context")
        if own_context is None or isinstance(own_context, dict):
            document["context"] = {**batch_context, **(own_context or {})}
    if source is not None and isinstance(document.get("context", {}), dict):
        document["context"] = {**document.get("context", {}), "source": source}
    context = document.get("context")
    context_traits = context.get("traits") if isinstance(context, dict) else None
    if document.get("type") == "identify" and not document.get("traits") and isinstance(context_traits, dict):
        document["traits"] = context_traits  # RudderStack's SDKs send identify traits in context.traits only
    if request_context and states_consent(document) and isinstance(document.get("context", {}), dict):
        # Only a consent's proof needs who sent it; other calls keep no address they did not send.
        document["context"] = {**request_context, **document.get("context", {})}
    if document.get("sentAt") is None and batch_sent_at is not None:
        document["sentAt"] = batch_sent_at
    # Bounds before anything recursive (orjson.dumps and pydantic fail past a few hundred levels), once: the
    # call as merged with its batch's part holds all of the call's own values.
    _within(document, limits)
    size = len(orjson.dumps(own))
    if size > limits.event_bytes:
        raise PayloadTooLarge(f"event is {size} bytes; at most {limits.event_bytes} bytes are accepted per event")
    if "type" not in document:
        raise InvalidCall(f"type: missing; one of {', '.join(CALL_TYPES)}")
    client_timestamp = document.get("timestamp") is not None
    if not client_timestamp:
        document["timestamp"] = received_at  # Segment's rule: no timestamp means "now"
        document.pop("sentAt", None)  # nothing to correct
    if not document.get("messageId"):
        document["messageId"] = reception.new_message_id()
    document["receivedAt"] = received_at
    try:
        event = Event.model_validate(document)
    except ValidationError as error:
        raise InvalidCall(describe_validation_error(error)) from None
    claimed = event.context.consent_source
    if claimed is not None and claimed not in CLIENT_SOURCES and not contact_ids:
        allowed = ", ".join(sorted(CLIENT_SOURCES))
        raise InvalidCall(f"context.consentSource: {claimed.value} is set by the collector itself; one of {allowed}")
    updates: dict[str, Any] = {}
    timestamp = event.timestamp
    if event.sent_at is not None:
        try:
            timestamp = derived_timestamp(event.timestamp, event.sent_at, received_at)
        except ImplausibleTimestamps as error:
            raise InvalidCall(str(error)) from None
        updates["timestamp"] = timestamp
        updates["originalTimestamp"] = event.timestamp
    try:
        check_timestamp(timestamp, received_at, limits)
    except LimitExceeded as error:
        raise InvalidCall(str(error)) from None
    if event.type == "identify" and event.traits:
        updates["traits"] = clean_traits(event.traits, reception.default_region)
    return event.model_copy(update=updates) if updates else event


def _within(document: dict[str, Any], limits: Limits) -> None:
    try:
        check_document(document, limits)
    except LimitExceeded as error:
        raise InvalidCall(str(error)) from None


def prepare_batch(document: Any, reception: Reception) -> BatchOutcome:
    """The calls of a /v1/batch (or /v1/import) envelope: each accepted or rejected on its own."""
    if not isinstance(document, dict):
        raise InvalidCall(f"a batch must be a JSON object with a batch array, not {_json_type(document)}")
    calls = document.get("batch")
    if not isinstance(calls, list):
        raise InvalidCall("batch: missing or not an array of events")
    if not calls:
        raise InvalidCall("batch: empty; send at least one event")
    context = document.get("context")
    # What the envelope gives every call is checked once: refusing it refuses the whole batch.
    _within({"context": context, "sentAt": document.get("sentAt")}, reception.limits)
    outcome = BatchOutcome()
    for index, raw in enumerate(calls):
        try:
            outcome.accepted.append(
                prepare_event(
                    raw,
                    reception,
                    batch_sent_at=document.get("sentAt"),
                    batch_context=context if isinstance(context, dict) else None,
                )
            )
        except InvalidCall as error:
            outcome.rejected.append(Rejection(index, str(error), raw))
    return outcome


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__
