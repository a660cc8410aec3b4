"""From a trigger to the message a channel sends: the template context, the rendered parts, the headers.

The context holds only what the trigger carries, cleaned: a producer may write the triggers topic
directly, so every value is checked for its type and bounded here, and only http(s) links survive (a
`javascript:` URL in a product would otherwise become a link in an email).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from typing import Any
from urllib.parse import quote

import orjson

from schemas.consent import CONFIRMATION_TEMPLATE, Confirmation, make_confirmation_token
from schemas.settings import Settings
from schemas.triggers import Channel, Trigger
from schemas.unsubscribe import Unsubscribe, make_token
from sinks.sender.templates import RenderedEmail, Templates, locale_chain

MAX_TEXT = 512
MAX_ITEMS = 50
# Twilio takes at most 1600 characters; the opt-out instruction must fit after the body.
SMS_MAX_CHARACTERS = 1600
SMS_OPT_OUT = {"en": "Reply STOP to opt out", "zh": "回复TD退订"}
EMAIL_PATTERN = re.compile(
    r"^[^\s@<>()\[\],;:\"\\]{1,64}@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
)
PHONE_PATTERN = re.compile(r"^\+[1-9][0-9]{6,14}$")


class Undeliverable(Exception):
    """A nudge that cannot be sent as it stands (no valid address, no sender address); permanent."""


@dataclass(frozen=True)
class OutgoingEmail:
    """One email ready to send: its addresses, rendered parts and unsubscribe link."""

    trigger_id: str
    person_id: str
    rule: str
    variant: str | None
    to: str
    from_email: str
    from_name: str | None
    subject: str
    html: str
    text: str
    unsubscribe_url: str
    sent_at: datetime
    locale: str

    @property
    def message_id(self) -> str:
        # Deterministic, so every copy of one nudge carries one Message-ID (RFC 5322) for the receiver.
        return f"<{self.trigger_id}@{self.from_email.rpartition('@')[2]}>"

    @property
    def custom_args(self) -> dict[str, str]:
        """What SendGrid's event webhook echoes back, so the collector can tell whose nudge it was."""
        carried = {"trigger_id": self.trigger_id, "person_id": self.person_id, "rule": self.rule}
        if self.variant:
            carried["variant"] = self.variant
        return carried

    def mime(self) -> bytes:
        """The message as an SMTP server receives it (CRLF line ends), text and HTML alternatives."""
        message = EmailMessage(policy=SMTP)
        message["From"] = Address(self.from_name or "", addr_spec=self.from_email)
        message["To"] = self.to
        message["Subject"] = self.subject
        message["Date"] = format_datetime(self.sent_at)
        message["Message-ID"] = self.message_id
        # RFC 8058: mailbox providers POST to the URL when the recipient presses their unsubscribe button.
        message["List-Unsubscribe"] = f"<{self.unsubscribe_url}>"
        message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        # SendGrid's SMTP relay reads its custom args from here and strips the header.
        message["X-SMTPAPI"] = orjson.dumps({"unique_args": self.custom_args}).decode()
        if self.locale:
            message["Content-Language"] = self.locale
        message.set_content(self.text)
        message.add_alternative(self.html, subtype="html")
        return message.as_bytes()


@dataclass(frozen=True)
class OutgoingSms:
    """One SMS ready to send: its number, text and status callback."""

    trigger_id: str
    person_id: str
    rule: str
    variant: str | None
    to: str
    body: str
    status_callback: str


def _text(value: Any, limit: int = MAX_TEXT) -> str | None:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    text = str(value).strip()[:limit]
    return text or None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        return None
    return float(value)


def _link(value: Any) -> str | None:
    text = _text(value, 2048)
    return text if text and re.match(r"^https?://[^\s\"'<>]+$", text, re.IGNORECASE) else None


def _product(value: Any) -> dict[str, Any] | None:
    if not isinstance(value, dict):
        return None
    product_id = _text(value.get("product_id"))
    if product_id is None:
        return None
    quantity = value.get("quantity")
    return {
        "product_id": product_id,
        "name": _text(value.get("name")),
        "price": _number(value.get("price")),
        "quantity": quantity if isinstance(quantity, int) and not isinstance(quantity, bool) and quantity > 0 else 1,
        "url": _link(value.get("url")),
        "image_url": _link(value.get("image_url")),
        "category": _text(value.get("category")),
    }


def _products(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        return []
    return [product for product in (_product(entry) for entry in value[:MAX_ITEMS]) if product is not None]


def _texts(value: Any) -> list[str]:
    if not isinstance(value, list):
        return []
    return [text for text in map(_text, value[:MAX_ITEMS]) if text]


def template_context(
    trigger: Trigger, locale: str, unsubscribe_url: str | None, confirm_url: str | None = None
) -> dict[str, Any]:
    """Exactly the variables of templates.KNOWN_VARIABLES, each present (None or empty when unknown)."""
    context = trigger.context
    name = _text(context.get("name"))
    items = _products(context.get("items"))
    cart_id = _text(context.get("cart_id"))
    order: dict[str, Any] | None = None
    if isinstance(context.get("order"), dict):
        raw = context["order"]
        order = {
            "order_id": _text(raw.get("order_id")),
            "revenue": _number(raw.get("revenue")),
            "total": _number(raw.get("total")),
            "currency": _text(raw.get("currency"), 8),
            "products": _products(raw.get("products")),
        }
    cross_sell = context.get("cross_sell")
    recommended = context.get("recommended")
    return {
        "person": {"id": trigger.person_id, "name": name, "first_name": name.split()[0] if name else None},
        "items": items,
        "cart": {"id": cart_id, "value": _number(context.get("value")), "items": items} if cart_id else None,
        "product": _product(context.get("product")),
        "order": order,
        "cross_sell": _texts(cross_sell),
        # Product ids often bought with or after what the nudge is about (the worker's recommendations).
        "recommended": _texts(recommended),
        "segment": _text(context.get("segment")),
        "trigger": {
            "id": trigger.trigger_id,
            "rule": trigger.rule,
            "variant": trigger.variant,
            "template_id": trigger.template_id,
            "channel": trigger.channel.value,
        },
        "locale": locale or "en",
        "unsubscribe_url": unsubscribe_url,
        "confirm_url": confirm_url,
    }


def opt_out_instruction(locale: str | None) -> str:
    """The line telling how to opt out of SMS, in the language of `locale` when there is one, else English."""
    for candidate in locale_chain(locale):
        language = candidate.split("-")[0]
        if language in SMS_OPT_OUT:
            return SMS_OPT_OUT[language]
    return SMS_OPT_OUT["en"]


def with_opt_out(body: str, locale: str | None) -> str:
    """The SMS text ending with the opt-out instruction of its language (carriers require one)."""
    instruction = opt_out_instruction(locale)
    separator = "" if instruction == SMS_OPT_OUT["zh"] else " "
    room = SMS_MAX_CHARACTERS - len(instruction) - len(separator)
    text = body.strip()
    if text.endswith(instruction):
        text = text[: -len(instruction)].rstrip()
    if len(text) > room:
        text = text[: room - 1].rstrip() + "…"
    return f"{text}{separator}{instruction}" if text else instruction


def unsubscribe_url(settings: Settings, trigger: Trigger, now: datetime) -> str:
    """The unsubscribe link of a nudge, signed and valid for the configured number of days."""
    expires = int((now + timedelta(days=settings.sender.unsubscribe_days)).timestamp())
    token = make_token(
        Unsubscribe(trigger.person_id, trigger.channel.value, expires, trigger.trigger_id), settings.hash_key
    )
    return f"{settings.sender_public_url}/unsubscribe/{token}"


def confirm_url(settings: Settings, trigger: Trigger, now: datetime) -> str | None:
    """The double opt-in's link, for a confirmation message only: signed until the deadline the core gave it
    (`confirm_by`), for the person and the confirmation the message is (its trigger id)."""
    if trigger.rule != CONFIRMATION_TEMPLATE or trigger.channel is not Channel.EMAIL:
        return None
    deadline = trigger.expires_at or now
    try:
        stated = datetime.fromisoformat(str(trigger.context.get("confirm_by")))
        deadline = stated if stated.tzinfo else stated.replace(tzinfo=UTC)
    except ValueError:
        pass
    expires = int(deadline.timestamp())
    confirmation = Confirmation(trigger.person_id, "email", expires, trigger.trigger_id)
    token = make_confirmation_token(confirmation, settings.hash_key)
    return f"{settings.sender_public_url}/confirm/{quote(trigger.person_id, safe='')}/{token}"


def status_callback(settings: Settings, trigger: Trigger) -> str:
    """The URL Twilio posts an SMS's status to, naming its trigger."""
    from urllib.parse import urlencode

    query = {"trigger_id": trigger.trigger_id, "person_id": trigger.person_id, "rule": trigger.rule}
    if trigger.variant:
        query["variant"] = trigger.variant
    return f"{settings.sender_public_url}/webhooks/twilio/status?{urlencode(query)}"


def compose(settings: Settings, templates: Templates, trigger: Trigger, now: datetime) -> OutgoingEmail | OutgoingSms:
    """The message for a trigger; Undeliverable or templates.TemplateFailure when there is none."""
    address = (trigger.address or "").strip()
    if trigger.channel is Channel.EMAIL:
        if len(address) > 254 or not EMAIL_PATTERN.match(address):
            raise Undeliverable(f"not an email address: {address[:80]!r}")
        sender = settings.sender.from_email
        if not sender or not EMAIL_PATTERN.match(sender):
            raise Undeliverable("no valid From address: set NUDGEFLOW_SENDER__FROM_EMAIL")
        link = unsubscribe_url(settings, trigger, now)
        _, locale = templates.choose(trigger.template_id, "txt", trigger.locale)
        rendered: RenderedEmail = templates.render_email(
            trigger.template_id,
            trigger.locale,
            template_context(trigger, locale or "en", link, confirm_url(settings, trigger, now)),
        )
        return OutgoingEmail(
            trigger_id=trigger.trigger_id,
            person_id=trigger.person_id,
            rule=trigger.rule,
            variant=trigger.variant,
            to=address,
            from_email=sender,
            from_name=settings.sender.from_name,
            subject=rendered.subject,
            html=rendered.html,
            text=rendered.text,
            unsubscribe_url=link,
            sent_at=now,
            locale=rendered.locale,
        )
    if not PHONE_PATTERN.match(address):
        raise Undeliverable(f"not a phone number in E.164: {address[:40]!r}")
    _, locale = templates.choose(trigger.template_id, "sms", trigger.locale)
    sms = templates.render_sms(trigger.template_id, trigger.locale, template_context(trigger, locale or "en", None))
    return OutgoingSms(
        trigger_id=trigger.trigger_id,
        person_id=trigger.person_id,
        rule=trigger.rule,
        variant=trigger.variant,
        to=address,
        body=with_opt_out(sms.body, sms.locale or "en"),
        status_callback=status_callback(settings, trigger),
    )
