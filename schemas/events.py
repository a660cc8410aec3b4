"""The event envelope (Segment-compatible) and the typed properties of the events nudgeflow understands.

Trackers and producers send Segment-style JSON (camelCase). Inside nudgeflow the same models are used with
snake_case attribute names; serialising by alias gives back the wire format.
"""

from __future__ import annotations

import builtins
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from schemas.limits import (
    DEFAULT_LIMITS,
    LimitExceeded,
    Limits,
    check_document,
    check_timestamp,
    decode_object,
    describe_validation_error,
)
from schemas.profile import ConsentSource, ReplySentiment


def _as_utc(moment: datetime) -> datetime:
    # A timestamp without a zone is taken as UTC, as Segment does; every time inside nudgeflow is aware.
    try:
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00+01:00, whose UTC instant is before year 1
        raise ValueError("outside the range of dates") from None


UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]


class WireModel(BaseModel):
    """Base for models that travel as Segment-style camelCase JSON."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    def to_json(self) -> bytes:
        return self.model_dump_json(by_alias=True, exclude_none=True).encode()


class Properties(BaseModel):
    """Base of typed track properties, which Segment's specs write in snake_case."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)


PropertiesT = TypeVar("PropertiesT", bound=Properties)


class EventName(StrEnum):
    """Track event names with a meaning to nudgeflow (Segment's e-commerce and messaging specs)."""

    PRODUCT_VIEWED = "Product Viewed"
    PRODUCT_ADDED = "Product Added"
    PRODUCT_REMOVED = "Product Removed"
    CART_VIEWED = "Cart Viewed"
    CHECKOUT_STARTED = "Checkout Started"
    ORDER_COMPLETED = "Order Completed"
    SIGNED_UP = "Signed Up"
    LOGGED_IN = "Logged In"
    EMAIL_DELIVERED = "Email Delivered"
    EMAIL_OPENED = "Email Opened"
    EMAIL_CLICKED = "Email Clicked"
    EMAIL_BOUNCED = "Email Bounced"
    EMAIL_UNSUBSCRIBED = "Email Unsubscribed"
    SMS_DELIVERED = "SMS Delivered"
    SMS_CLICKED = "SMS Clicked"
    SMS_REPLIED = "SMS Replied"


# The events that tell when in their day a person reads email: what `send_time: best` learns from (the
# person's hours in the core, the population's in ClickHouse).
ENGAGEMENT_HOUR_EVENTS = frozenset({EventName.EMAIL_OPENED, EventName.EMAIL_CLICKED})


class Product(Properties):
    """One product, as a product event names it or a cart or order lists it."""

    product_id: str = Field(min_length=1)
    sku: str | None = None
    name: str | None = None
    category: str | None = None
    brand: str | None = None
    price: float | None = Field(default=None, ge=0)
    quantity: int = Field(default=1, ge=1)
    url: str | None = None
    image_url: str | None = None


class ProductProperties(Product):
    """Product Viewed, Product Added, Product Removed: the product itself, optionally inside a cart."""

    cart_id: str | None = None


class CartProperties(Properties):
    """Cart Viewed, Checkout Started."""

    cart_id: str | None = None
    checkout_id: str | None = None
    value: float | None = Field(default=None, ge=0)
    currency: str | None = None
    products: list[Product] = Field(default_factory=list)


class OrderProperties(CartProperties):
    """The properties of an order event: the cart's, with the order id and its amounts."""

    order_id: str = Field(min_length=1)
    revenue: float | None = Field(default=None, ge=0)
    total: float | None = Field(default=None, ge=0)


class MessageProperties(Properties):
    """Email and SMS feedback from the senders: which nudge it was about, when the sender knows."""

    trigger_id: str | None = None
    rule: str | None = None
    campaign_id: str | None = None
    variant: str | None = None
    url: str | None = None
    reason: str | None = None


class SmsReplyProperties(MessageProperties):
    """The properties of an SMS reply: its text and, when known, the number it came from."""

    body: str
    from_number: str | None = Field(default=None, alias="from")
    # Set by the collector when it maps the inbound SMS, and only checked here: the label is decided once at
    # the edge and carried by the event, so the profile, ClickHouse and a replay all read the same one.
    sentiment: ReplySentiment | None = None
    sentiment_score: float | None = Field(default=None, ge=-1.0, le=1.0, alias="sentimentScore")


class SignupProperties(Properties):
    """The properties of a signup event: how the person signed up, when known."""

    method: str | None = None


PROPERTIES_BY_EVENT: dict[EventName, type[Properties]] = {
    EventName.PRODUCT_VIEWED: ProductProperties,
    EventName.PRODUCT_ADDED: ProductProperties,
    EventName.PRODUCT_REMOVED: ProductProperties,
    EventName.CART_VIEWED: CartProperties,
    EventName.CHECKOUT_STARTED: CartProperties,
    EventName.ORDER_COMPLETED: OrderProperties,
    EventName.SIGNED_UP: SignupProperties,
    EventName.LOGGED_IN: SignupProperties,
    EventName.EMAIL_DELIVERED: MessageProperties,
    EventName.EMAIL_OPENED: MessageProperties,
    EventName.EMAIL_CLICKED: MessageProperties,
    EventName.EMAIL_BOUNCED: MessageProperties,
    EventName.EMAIL_UNSUBSCRIBED: MessageProperties,
    EventName.SMS_DELIVERED: MessageProperties,
    EventName.SMS_CLICKED: MessageProperties,
    EventName.SMS_REPLIED: SmsReplyProperties,
}


class EventContext(WireModel):
    """What an event says about where it came from: the person's timezone and locale, the device, the channel, and how a
    consent it carries was given."""

    timezone: str | None = None
    locale: str | None = None
    ip: str | None = None
    user_agent: str | None = None
    channel: str | None = None
    # How a consent the event carries was given (schemas/consent.py); the collector's own endpoints set it.
    consent_source: ConsentSource | None = None


EventType = Literal["track", "identify", "page", "screen", "alias", "group"]


class Event(WireModel):
    """One Segment-spec call: track, identify, page, screen, alias or group."""

    type: EventType
    event: str | None = None
    user_id: str | None = Field(default=None, min_length=1)
    anonymous_id: str | None = Field(default=None, min_length=1)
    previous_id: str | None = None
    message_id: str | None = None
    timestamp: UtcDatetime
    sent_at: UtcDatetime | None = None
    received_at: UtcDatetime | None = None
    name: str | None = None
    properties: dict[str, Any] = Field(default_factory=dict)
    traits: dict[str, Any] = Field(default_factory=dict)
    context: EventContext = Field(default_factory=EventContext)

    @model_validator(mode="after")
    def _check_identity_and_properties(self) -> Event:
        if self.user_id is None and self.anonymous_id is None:
            raise ValueError("an event needs userId or anonymousId")
        if self.type == "track":
            if not self.event:
                raise ValueError("a track event needs an event name")
            properties_model = PROPERTIES_BY_EVENT.get(self.event)  # type: ignore[call-overload]
            if properties_model is not None:
                try:
                    properties_model.model_validate(self.properties)
                except ValidationError as error:
                    raise ValueError(f"properties of {self.event}: {describe_validation_error(error)}") from None
        return self

    @property
    def person_id(self) -> str:
        """The key the event is partitioned by: the known user, else the anonymous visitor."""
        return self.user_id or self.anonymous_id or ""

    def typed_properties(self, model: builtins.type[PropertiesT]) -> PropertiesT:
        return model.model_validate(self.properties)


class InvalidEvent(ValueError):
    """Raised with a message a producer can act on; the raw bytes go to the dead-letter topic."""


def decode_document(raw: bytes | None, limits: Limits = DEFAULT_LIMITS) -> dict[str, Any]:
    """One JSON object within the limits, or InvalidEvent saying why (invalid UTF-8, NaN and numbers
    beyond a double are refused by the decoder itself)."""
    document = decode_object(raw, limits.event_bytes, InvalidEvent, "event")
    try:
        check_document(document, limits)
    except LimitExceeded as error:
        raise InvalidEvent(f"over a limit: {error}") from None
    return document


def parse_event(raw: bytes | None, limits: Limits = DEFAULT_LIMITS, received_at: datetime | None = None) -> Event:
    """Decode and validate one message of the events topic, or raise InvalidEvent saying why.

    With `received_at` (the reader's clock) a timestamp too far ahead of it is refused as well."""
    document = decode_document(raw, limits)
    try:
        event = Event.model_validate(document)
    except ValidationError as error:
        raise InvalidEvent(f"invalid event: {describe_validation_error(error)}") from None
    try:
        check_timestamp(event.timestamp, received_at or event.timestamp, limits)
    except LimitExceeded as error:
        raise InvalidEvent(f"over a limit: {error}") from None
    return event
