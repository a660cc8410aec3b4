"""How much any one input may hold: the one definition every input path checks against.

The collector checks a call before it answers (a 400 that names the field and the limit); the worker and
the sink check again, because producers may write to Kafka directly (a dead letter with the same reason).
The same numbers cap how far a person's stored state can grow, so no input can make a state too large to
store, to read back or to send to the broker (docs/architecture.md, "Bounded input").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

# Fields of an event that are identifiers: bounded by `id_length`, not by `string_length`.
ID_FIELDS = ("userId", "anonymousId", "previousId", "messageId", "groupId")
ID_PROPERTIES = ("product_id", "cart_id", "order_id", "checkout_id", "sku", "trigger_id", "campaign_id")


class Limits(BaseModel):
    """Bounds on what one input may hold and how far one person's state may grow.

    Set from the environment as NUDGEFLOW_LIMITS__<NAME>, e.g. NUDGEFLOW_LIMITS__JSON_DEPTH=16."""

    model_config = ConfigDict(frozen=True)

    event_bytes: int = Field(default=32 * 1024, ge=1024, description="bytes of one event as JSON")
    batch_bytes: int = Field(default=500 * 1024, ge=1024, description="bytes of one HTTP batch request")
    json_depth: int = Field(default=32, ge=4, le=128, description="nesting of objects and arrays in one event")
    id_length: int = Field(default=256, ge=16, le=4096, description="characters of an id (user, message, product)")
    string_length: int = Field(default=2048, ge=64, description="characters of any other string value")
    object_keys: int = Field(default=256, ge=8, description="keys of any one JSON object")
    array_items: int = Field(default=256, ge=8, description="items of any one JSON array (products of a cart event)")
    properties: int = Field(default=128, ge=8, description="top-level properties of one event")
    traits: int = Field(default=128, ge=8, description="top-level traits of one event, and traits kept per person")
    traits_bytes: int = Field(default=16 * 1024, ge=1024, description="bytes of the traits kept per person, as JSON")
    number_magnitude: float = Field(default=1e12, gt=0, description="largest absolute value of any number")
    oldest_timestamp: datetime = Field(
        default=datetime(2000, 1, 1, tzinfo=UTC), description="earliest event timestamp accepted"
    )
    future_seconds: float = Field(
        default=900.0,
        ge=0,
        description="how far past the receiving clock an event timestamp may be (it would move stream time)",
    )
    reply_text_length: int = Field(
        default=1600, ge=16, description="characters of an SMS reply the sentiment classifier reads (Twilio's longest)"
    )
    dead_letter_bytes: int = Field(default=16 * 1024, ge=256, description="bytes of a rejected message kept")
    # What a person's state keeps: each way it grows has its own cap (docs/architecture.md, "Bounded input").
    stored_text_length: int = Field(
        default=512, ge=64, description="characters of a product's name or URL kept in a cart or a pending nudge"
    )
    cart_items: int = Field(default=10, ge=1, description="products kept per cart, the least recently added dropped")
    carts: int = Field(default=5, ge=1, description="carts kept per person, the least recently touched dropped")
    pending: int = Field(default=32, ge=4, description="nudges waiting per person; past it new entries are not made")
    context_bytes: int = Field(
        default=2048, ge=512, description="bytes of what a waiting nudge carries (products past it are left out)"
    )
    bought_products: int = Field(
        default=32, ge=1, description="products a person bought kept, the most recent, left out of recommendations"
    )
    rule_history: int = Field(default=128, ge=16, description="per-key rule history entries kept per person")
    sent_records: int = Field(default=128, ge=8, description="recent sends kept per person for caps and dedupe")
    message_ids: int = Field(default=64, ge=1, description="recent messageIds kept per person to drop repeats")
    anonymous_ids: int = Field(default=20, ge=1, description="anonymous ids listed on a person's profile")
    persons_per_contact: int = Field(default=32, ge=1, description="people one email address or phone number maps to")

    @property
    def future(self) -> timedelta:
        return timedelta(seconds=self.future_seconds)


DEFAULT_LIMITS = Limits()


class LimitExceeded(ValueError):
    """An input over a limit; the message names where (a JSON path) and which limit."""

    def __init__(self, where: str, detail: str) -> None:
        super().__init__(f"{where}: {detail}")
        self.where = where
        self.detail = detail


def check_document(document: Mapping[str, Any], limits: Limits) -> None:
    """Raise LimitExceeded for the first part of a decoded event that is over a limit.

    Iterative, so an input nested far beyond the limit costs no recursion and raises the same way. Scalars
    are checked where they stand and only containers are stacked; a value's path is kept as a chain of
    (parent, key) links and spelt out only for the message of a violation (this runs on every event)."""
    _check_fields(document, limits)
    depth_limit, keys_limit, items_limit = limits.json_depth, limits.object_keys, limits.array_items
    key_length, string_length, magnitude = limits.id_length, limits.string_length, limits.number_magnitude
    stack: list[tuple[Any, int, _Path]] = [(document, 1, None)]
    while stack:
        container, depth, path = stack.pop()
        if depth > depth_limit:
            raise LimitExceeded(_spelt(path), f"nested deeper than {depth_limit} levels")
        if type(container) is dict:
            if len(container) > keys_limit:
                raise LimitExceeded(_spelt(path), f"{len(container)} keys; at most {keys_limit}")
            entries: Any = container.items()
        else:
            if len(container) > items_limit:
                raise LimitExceeded(_spelt(path), f"{len(container)} items; at most {items_limit}")
            entries = enumerate(container)
        for step, item in entries:
            if type(step) is str and len(step) > key_length:
                raise LimitExceeded(_spelt(path), f"a key of {len(step)} characters; at most {key_length}")
            kind = type(item)
            if kind is str:
                if len(item) > string_length:
                    raise LimitExceeded(_spelt((path, step)), f"{len(item)} characters; at most {string_length}")
            elif kind is dict or kind is list:
                stack.append((item, depth + 1, (path, step)))
            elif (kind is float or kind is int) and not -magnitude <= item <= magnitude:  # NaN fails too
                raise LimitExceeded(_spelt((path, step)), f"number {item!r} outside ±{magnitude:g}")


# A value's place in a document: None for the document itself, else (the parent's place, key or index).
_Path = tuple[Any, str | int] | None


def _spelt(path: _Path) -> str:
    parts: list[str] = []
    while path is not None:
        path, step = path
        parts.append(f"[{step}]" if isinstance(step, int) else f".{step}")
    return "".join(reversed(parts)).removeprefix(".") or "event"


def _check_fields(document: Mapping[str, Any], limits: Limits) -> None:
    most = limits.id_length
    for name in ID_FIELDS:
        value = document.get(name)
        if type(value) is str and len(value) > most:
            raise LimitExceeded(name, f"{len(value)} characters; at most {most}")
    for section, count in (("properties", limits.properties), ("traits", limits.traits)):
        values = document.get(section)
        if type(values) is not dict:
            continue
        if len(values) > count:
            raise LimitExceeded(section, f"{len(values)} {section}; at most {count}")
        for name in ID_PROPERTIES:
            value = values.get(name)
            if type(value) is str and len(value) > most:
                raise LimitExceeded(f"{section}.{name}", f"{len(value)} characters; at most {most}")
        products = values.get("products")
        if type(products) is list:
            for index, product in enumerate(products):
                value = product.get("product_id") if type(product) is dict else None
                if type(value) is str and len(value) > most:
                    raise LimitExceeded(
                        f"{section}.products[{index}].product_id", f"{len(value)} characters; at most {most}"
                    )


def check_timestamp(moment: datetime, received_at: datetime, limits: Limits) -> None:
    """An event's time must lie between the oldest accepted and a little past the receiving clock: a later
    one would move its partition's stream time forward and fire other people's reminders early."""
    if moment < limits.oldest_timestamp:
        raise LimitExceeded("timestamp", f"{moment.isoformat()} is before {limits.oldest_timestamp.date().isoformat()}")
    if moment - received_at > limits.future:  # a difference cannot overflow near year 9999; a sum can
        raise LimitExceeded(
            "timestamp",
            f"{moment.isoformat()} is more than {limits.future_seconds:g}s after the time it was received",
        )


def check_depth(document: Any, most: int, where: str) -> None:
    """Raise LimitExceeded when `document` nests deeper than `most` levels (iteratively: no recursion)."""
    stack: list[tuple[Any, int]] = [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > most:
            raise LimitExceeded(where, f"nested deeper than {most} levels")
        if type(value) is dict:
            stack.extend((item, depth + 1) for item in value.values() if type(item) in (dict, list))
        elif type(value) is list:
            stack.extend((item, depth + 1) for item in value if type(item) in (dict, list))


def within_depth(document: Any, most: int) -> bool:
    """Whether a decoded JSON value nests no deeper than `most` objects and arrays."""
    try:
        check_depth(document, most, "document")
    except LimitExceeded:
        return False
    return True


Refusal = TypeVar("Refusal", bound=ValueError)


def decode_object(
    raw: bytes | None, most_bytes: int, refusal: type[Refusal], what: str = "message", depth: int | None = None
) -> dict[str, Any]:
    """The one way a record or body becomes a JSON object: bounded in bytes (and, given `depth`, in nesting)
    before and after decoding, or `refusal` raised with the reason a producer can act on. orjson itself
    refuses invalid UTF-8, NaN and Infinity, and numbers beyond a double."""
    if not raw:
        raise refusal("empty message")
    if len(raw) > most_bytes:
        raise refusal(f"over a limit: {what} is {len(raw)} bytes; at most {most_bytes}")
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise refusal(f"not JSON: {error}") from None
    if not isinstance(document, dict):
        raise refusal(f"not a JSON object but {type(document).__name__}")
    if depth is not None and not within_depth(document, depth):
        raise refusal(f"over a limit: {what} nested deeper than {depth} levels")
    return document


Decoded = TypeVar("Decoded")


def describe_validation_error(error: ValidationError) -> str:
    """A validation error in one line: each problem as `where: message`, separated by semicolons."""
    parts = []
    for problem in error.errors(include_url=False):
        where = ".".join(str(part) for part in problem["loc"]) or "event"
        parts.append(f"{where}: {problem['msg']}")
    return "; ".join(parts)


def decode_validated(
    raw: bytes | None,
    validate: Callable[[dict[str, Any]], Decoded],
    most_bytes: int,
    refusal: type[Refusal],
    what: str,
) -> Decoded:
    """A topic's record as its model: `decode_object`, then `validate` (a model's `model_validate`, an
    adapter's `validate_python`), or `refusal` saying `invalid <what>: ` and every problem."""
    document = decode_object(raw, most_bytes, refusal, what)
    try:
        return validate(document)
    except ValidationError as error:
        raise refusal(f"invalid {what}: {describe_validation_error(error)}") from None


def check_id(where: str, value: str, limits: Limits) -> None:
    """Refuse an id longer than the limit, naming `where` it was."""
    if len(value) > limits.id_length:
        raise LimitExceeded(where, f"{len(value)} characters; at most {limits.id_length}")


def truncated(raw: bytes, limits: Limits) -> bytes:
    """At most dead_letter_bytes of a rejected message, cut on a UTF-8 boundary."""
    if len(raw) <= limits.dead_letter_bytes:
        return raw
    return raw[: limits.dead_letter_bytes].decode(errors="ignore").encode()
