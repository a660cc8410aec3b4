"""The collector's aiohttp application: Segment-compatible /v1/* calls and sender webhooks onto Kafka.

Handlers read and bound the body, authenticate, hand the decoded payload to the pure modules and move the
outcome to Kafka. A 200 is sent only after the broker acknowledged every record (events and dead letters).
Closed by default: only configured write keys, and a webhook whose provider has no verification key is
refused unless unsigned webhooks are allowed (demo mode). No input makes it answer 5xx; only a broker
that does not acknowledge does (503).
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any
from urllib.parse import parse_qsl

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from cryptography.hazmat.primitives.asymmetric import ec

from schemas.access import METRICS_PATH, token_guard
from schemas.events import Event
from schemas.metrics import metrics_response
from schemas.settings import Settings
from schemas.signed_links import ExpiredToken, ForgedToken, InvalidToken
from streams.collector import sendgrid, twilio
from streams.collector.confirm import AnotherPerson, confirmation_documents
from streams.collector.dead_letters import collector_dead_letter
from streams.collector.dedupe import DedupeWindow
from streams.collector.metrics import CollectorMetrics
from streams.collector.openapi import openapi_document
from streams.collector.producer import BrokerUnavailable, EventProducer, Record
from streams.collector.segment_api import (
    CALL_TYPES,
    InvalidCall,
    PayloadTooLarge,
    Reception,
    Rejection,
    prepare_batch,
    prepare_event,
    source_for,
    write_key_from_authorization,
)
from streams.collector.unsubscribe import ONE_CLICK_BODY, page, unsubscribe_documents
from streams.timers import utc_now

log = logging.getLogger(__name__)

# Webhook bodies hold many events (SendGrid posts thousands at once) or a form, not one tracker call;
# each event mapped from them is held to settings.limits like any other.
MAX_WEBHOOK_BYTES = 4 * 1024 * 1024
MAX_FORM_BYTES = 64 * 1024
DEDUPE_SECONDS = 600.0
DEDUPE_ENTRIES = 200_000
OPENAPI_PATH = "/openapi.json"
UNSUBSCRIBE_PREFIX = "/unsubscribe/"
CONFIRM_PREFIX = "/confirm/"
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'


class RequestFailed(Exception):
    """Ends a request with a JSON error; raised by the steps of a handler."""

    def __init__(self, status: int, error: str, close: bool = False, **details: Any) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        # The rest of a body that was not (or could not be) read would be taken for the next request on a
        # kept-alive connection: such an answer closes it.
        self.close = close
        self.details = details


def json_response(status: int, document: dict[str, Any]) -> web.Response:
    """`document` as a JSON response with `status`."""
    return web.Response(status=status, body=orjson.dumps(document), content_type="application/json")


def _html(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text, content_type="text/html")


@dataclass
class Delivery:
    """What one request puts on Kafka, and how it went."""

    events: list[Event] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    duplicates: int = 0


@dataclass
class Collector:
    """The collector: checks what the HTTP calls and webhooks bring, and answers once Kafka holds what it accepted."""

    settings: Settings
    producer: EventProducer
    clock: Callable[[], datetime] = utc_now
    dedupe: DedupeWindow = field(
        default_factory=lambda: DedupeWindow(DEDUPE_SECONDS, DEDUPE_ENTRIES, clock=time.monotonic)
    )
    new_message_id: Callable[[], str] = field(default=lambda: str(uuid.uuid4()))
    sendgrid_key: ec.EllipticCurvePublicKey | None = None
    metrics: CollectorMetrics = field(default_factory=CollectorMetrics)
    hash_key: bytes = b""

    def __post_init__(self) -> None:
        if self.settings.sendgrid_public_key and self.sendgrid_key is None:
            self.sendgrid_key = sendgrid.load_public_key(self.settings.sendgrid_public_key)
        # Contacts without a person become keyed digests; without a key (outside demo mode) do not start.
        self.hash_key = self.hash_key or self.settings.hash_key

    @property
    def unsigned_webhooks(self) -> bool:
        return self.settings.allow_unsigned_webhooks or self.settings.demo

    # --- the steps every handler shares -------------------------------------------------------------------

    async def read_body(self, request: web.Request, limit: int, what: str) -> bytes:
        """The (gunzipped: aiohttp inflates Content-Encoding: gzip) body, at most `limit` bytes."""
        too_large = RequestFailed(
            413, f"{what} is more than {limit} bytes; at most {limit} bytes are accepted", close=True
        )
        if request.content_length is not None and request.content_length > limit:
            raise too_large
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in request.content.iter_any():
                size += len(chunk)
                if size > limit:
                    raise too_large
                chunks.append(chunk)
        except (HttpProcessingError, web.RequestPayloadError) as error:
            encoding = request.headers.get("Content-Encoding", "identity")
            raise RequestFailed(
                400, f"cannot read the body (Content-Encoding: {encoding}): {_first_line(error)}", close=True
            ) from None
        return b"".join(chunks)

    @staticmethod
    def decode_json(body: bytes) -> Any:
        """The decoded body; orjson itself refuses invalid UTF-8, NaN and Infinity, numbers beyond a double
        and nesting past 1024 levels, each a 400."""
        if not body.strip():
            raise RequestFailed(400, "empty body; expected JSON")
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as error:
            raise RequestFailed(400, f"malformed JSON: {error}{_hint(body, error.pos)}") from None

    def authenticate(self, request: web.Request, document: Any) -> str:
        key = write_key_from_authorization(request.headers.get("Authorization"))
        if key is None and isinstance(document, dict) and isinstance(document.get("writeKey"), str):
            key = document["writeKey"]
        try:
            return source_for(key, self.settings.write_keys)
        except InvalidCall as error:
            raise RequestFailed(401, str(error)) from None

    def evidence(self, request: web.Request) -> dict[str, str]:
        """Who made the request, kept with what it changes (a consent's proof): its address and user agent,
        cut to the longest string the limits allow."""
        found = {"ip": request.remote or "", "userAgent": request.headers.get("User-Agent", "")}
        longest = self.settings.limits.string_length
        return {name: value[:longest] for name, value in found.items() if value}

    def reception(
        self,
        received_at: datetime,
        source: str,
        request_context: Mapping[str, str] | None = None,
        contact_ids: bool = False,
    ) -> Reception:
        """What every call of a request is prepared with."""
        return Reception(
            limits=self.settings.limits,
            received_at=received_at,
            default_region=self.settings.default_phone_region,
            new_message_id=self.new_message_id,
            source=source,
            request_context=request_context,
            contact_ids=contact_ids,
        )

    async def deliver(self, delivery: Delivery, source: str, received_at: datetime) -> None:
        """Drop duplicates, then produce events and dead letters and wait for the broker's acknowledgement."""
        fresh: list[Event] = []
        in_request: set[str] = set()
        for event in delivery.events:
            message_id = event.message_id or ""
            if message_id in self.dedupe or message_id in in_request:
                delivery.duplicates += 1
                continue
            in_request.add(message_id)
            fresh.append(event)
        delivery.events = fresh
        records = [Record(self.settings.events_topic, event.person_id.encode(), event.to_json()) for event in fresh]
        for rejection in delivery.rejected:
            letter = collector_dead_letter(rejection.raw, rejection.reason, received_at, source, self.settings.limits)
            records.append(
                Record(
                    self.settings.dead_letter_topic,
                    letter.key.encode() if letter.key else None,
                    letter.model_dump_json().encode(),
                )
            )
        try:
            await self.producer.send_all(records)
        except BrokerUnavailable as error:
            raise RequestFailed(503, f"{error}; nothing was accepted, retry later") from None
        # Remembered only now: an id whose send failed must be accepted when the client retries it.
        for event in fresh:
            self.dedupe.add(event.message_id or "")
        self.metrics.events.labels(source=source, outcome="accepted").inc(len(fresh))
        self.metrics.events.labels(source=source, outcome="duplicate").inc(delivery.duplicates)
        self.metrics.events.labels(source=source, outcome="rejected").inc(len(delivery.rejected))

    # --- Segment / RudderStack tracking API ---------------------------------------------------------------

    def single_call(self, call_type: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            received_at = self.clock()
            body = await self.read_body(request, self.settings.limits.batch_bytes, "request body")
            document = self.decode_json(body)
            source = self.authenticate(request, document)
            delivery = Delivery()
            try:
                delivery.events.append(
                    prepare_event(
                        document, self.reception(received_at, source, self.evidence(request)), call_type=call_type
                    )
                )
            except PayloadTooLarge as error:
                raise RequestFailed(413, str(error)) from None
            except InvalidCall as error:
                delivery.rejected.append(Rejection(0, str(error), document))
            await self.deliver(delivery, source, received_at)
            if delivery.rejected:
                return json_response(400, {"success": False, "error": delivery.rejected[0].reason})
            answer: dict[str, Any] = {"success": True}
            if delivery.duplicates:
                answer["duplicates"] = delivery.duplicates
            return json_response(200, answer)

        return handle

    async def batch(self, request: web.Request) -> web.Response:
        received_at = self.clock()
        body = await self.read_body(request, self.settings.limits.batch_bytes, "batch request body")
        document = self.decode_json(body)
        source = self.authenticate(request, document)
        try:
            outcome = prepare_batch(document, self.reception(received_at, source, self.evidence(request)))
        except InvalidCall as error:
            raise RequestFailed(400, str(error)) from None
        delivery = Delivery(events=outcome.accepted, rejected=outcome.rejected)
        await self.deliver(delivery, source, received_at)
        rejected = [{"index": rejection.index, "reason": rejection.reason} for rejection in delivery.rejected]
        if not outcome.accepted:
            return json_response(
                400, {"success": False, "error": "no valid event in the batch", "accepted": 0, "rejected": rejected}
            )
        return json_response(
            200,
            {
                "success": True,
                "accepted": len(delivery.events),
                "duplicates": delivery.duplicates,
                "rejected": rejected,
            },
        )

    # --- sender webhooks ----------------------------------------------------------------------------------

    def prepare_documents(
        self, documents: Sequence[tuple[int, dict[str, Any]]], source: str, received_at: datetime
    ) -> Delivery:
        delivery = Delivery()
        for index, document in documents:
            try:
                delivery.events.append(
                    # The collector's own events: their contact ids come from the mappings.
                    prepare_event(document, self.reception(received_at, source, contact_ids=True))
                )
            except InvalidCall as error:
                delivery.rejected.append(Rejection(index, str(error), document))
        return delivery

    def unconfigured(self, provider: str, setting: str) -> RequestFailed:
        return RequestFailed(
            401,
            f"{provider} webhook verification is not configured: set {setting} "
            "(NUDGEFLOW_ALLOW_UNSIGNED_WEBHOOKS=true accepts unsigned posts, for the local demo only)",
        )

    async def sendgrid_events(self, request: web.Request) -> web.Response:
        received_at = self.clock()
        if self.sendgrid_key is None and not self.unsigned_webhooks:
            raise self.unconfigured("SendGrid", "NUDGEFLOW_SENDGRID_PUBLIC_KEY")
        body = await self.read_body(request, MAX_WEBHOOK_BYTES, "webhook body")
        if self.sendgrid_key is not None:
            stamp = request.headers.get(sendgrid.TIMESTAMP_HEADER)
            if not sendgrid.signature_valid(
                self.sendgrid_key, request.headers.get(sendgrid.SIGNATURE_HEADER), stamp, body
            ):
                raise RequestFailed(401, "missing or invalid SendGrid event webhook signature")
            stale = sendgrid.stale_timestamp(stamp, received_at, self.settings.sendgrid_max_age_seconds)
            if stale is not None:
                raise RequestFailed(401, f"refused as a possible replay: {stale}")
        try:
            documents, skipped = sendgrid.map_events(self.decode_json(body), self.hash_key)
        except ValueError as error:
            raise RequestFailed(400, str(error)) from None
        delivery = self.prepare_documents(documents, "sendgrid", received_at)
        delivery.rejected.extend(Rejection(entry.index, entry.reason, entry.raw) for entry in skipped)
        await self.deliver(delivery, "sendgrid", received_at)
        # Always 2xx once durable: SendGrid would otherwise retry the whole batch, good entries included.
        return json_response(
            200,
            {
                "success": True,
                "accepted": len(delivery.events),
                "duplicates": delivery.duplicates,
                "rejected": [{"index": entry.index, "reason": entry.reason} for entry in delivery.rejected],
            },
        )

    async def twilio_form(self, request: web.Request) -> tuple[dict[str, str], dict[str, str]]:
        """The verified form fields and the callback URL's query parameters."""
        token = self.settings.twilio_auth_token
        if token is None and not self.unsigned_webhooks:
            raise self.unconfigured("Twilio", "NUDGEFLOW_TWILIO_AUTH_TOKEN")
        body = await self.read_body(request, MAX_FORM_BYTES, "form body")
        try:
            pairs = parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError:
            raise RequestFailed(400, "form body is not UTF-8") from None
        if token is not None and not twilio.signature_valid(
            token.get_secret_value(), request.headers.get(twilio.SIGNATURE_HEADER), self.twilio_url(request), pairs
        ):
            raise RequestFailed(401, "missing or invalid X-Twilio-Signature")
        return dict(pairs), dict(request.query)

    def twilio_url(self, request: web.Request) -> str:
        """The URL Twilio called, which it signs: behind a proxy the configured public URL, not ours."""
        public = self.settings.webhook_public_url
        return public.rstrip("/") + request.raw_path if public else str(request.url)

    async def twilio_documents(
        self,
        request: web.Request,
        mapping: Callable[[dict[str, str], dict[str, str], datetime, bytes], list[dict[str, Any]]],
    ) -> Delivery:
        """Verify a Twilio callback, map it to event documents and deliver them."""
        received_at = self.clock()
        form, params = await self.twilio_form(request)
        try:
            documents = mapping(form, params, received_at, self.hash_key)
        except ValueError as error:
            raise RequestFailed(400, str(error)) from None
        delivery = self.prepare_documents(list(enumerate(documents)), "twilio", received_at)
        await self.deliver(delivery, "twilio", received_at)
        return delivery

    async def twilio_status(self, request: web.Request) -> web.Response:
        delivery = await self.twilio_documents(request, twilio.map_status)
        return json_response(200, {"success": True, "accepted": len(delivery.events)})

    async def twilio_inbound(self, request: web.Request) -> web.Response:
        reply_text_length = self.settings.limits.reply_text_length
        await self.twilio_documents(request, partial(twilio.map_inbound, reply_text_length=reply_text_length))
        # An empty TwiML answer: acknowledge without sending an automatic reply.
        return web.Response(status=200, text=EMPTY_TWIML, content_type="text/xml")

    # --- one-click unsubscribe (RFC 8058) -----------------------------------------------------------------

    async def unsubscribe(self, request: web.Request) -> web.Response:
        received_at = self.clock()
        body = await self.read_body(request, MAX_FORM_BYTES, "form body")
        try:
            documents = unsubscribe_documents(
                request.match_info["token"], self.hash_key, received_at, self.evidence(request)
            )
        except InvalidToken as error:
            raise RequestFailed(400, f"unsubscribe link refused: {error}") from None
        delivery = self.prepare_documents(list(enumerate(documents)), "unsubscribe", received_at)
        await self.deliver(delivery, "unsubscribe", received_at)
        if delivery.rejected:
            raise RequestFailed(400, delivery.rejected[0].reason)
        one_click = ONE_CLICK_BODY.encode() in body.replace(b"%3D", b"=")
        if one_click and "text/html" not in request.headers.get("Accept", ""):
            return json_response(200, {"success": True})  # a mailbox provider's button
        return _html(200, page("Unsubscribed", "You will get no more of these emails.", False))

    async def unsubscribe_page(self, request: web.Request) -> web.Response:
        """What a recipient sees on opening the link: a button that POSTs; a GET changes nothing."""
        try:
            unsubscribe_documents(request.match_info["token"], self.hash_key, self.clock())
        except InvalidToken as error:
            return _html(400, page("Unsubscribe", f"This link does not work: {error}.", False))
        return _html(200, page("Unsubscribe", "Stop these emails? Press the button to unsubscribe.", True))

    # --- double opt-in's confirmation link ------------------------------------------------------------------

    def confirmation(self, request: web.Request, received_at: datetime, evidence: bool) -> list[dict[str, Any]]:
        """The confirmation's event, or RequestFailed: 400 malformed, 403 forged or for another person, 410
        expired."""
        info = request.match_info
        proof = self.evidence(request) if evidence else None
        try:
            return confirmation_documents(info["person_id"], info["token"], self.hash_key, received_at, proof)
        except ExpiredToken as error:
            raise RequestFailed(410, f"confirmation link refused: {error}") from None
        except (ForgedToken, AnotherPerson) as error:
            raise RequestFailed(403, f"confirmation link refused: {error}") from None
        except InvalidToken as error:
            raise RequestFailed(400, f"confirmation link refused: {error}") from None

    async def confirm(self, request: web.Request) -> web.Response:
        received_at = self.clock()
        await self.read_body(request, MAX_FORM_BYTES, "form body")
        documents = self.confirmation(request, received_at, evidence=True)
        delivery = self.prepare_documents(list(enumerate(documents)), "confirmation", received_at)
        await self.deliver(delivery, "confirmation", received_at)
        if delivery.rejected:
            raise RequestFailed(400, delivery.rejected[0].reason)
        return _html(200, page("Subscribed", "Thank you: your subscription is confirmed.", False))

    async def confirm_page(self, request: web.Request) -> web.Response:
        """What a recipient sees on opening the link: a button that POSTs; a GET changes nothing."""
        try:
            self.confirmation(request, self.clock(), evidence=False)
        except RequestFailed as failure:
            return _html(failure.status, page("Confirm", f"This link does not work: {failure.error}.", False))
        return _html(200, page("Confirm my subscription", "Press the button to confirm your subscription.", True))

    async def openapi(self, request: web.Request) -> web.Response:
        return json_response(200, openapi_document(self.settings.limits))

    async def metrics_page(self, request: web.Request) -> web.Response:
        return metrics_response(self.metrics)


# orjson's message for NaN or Infinity says only "unexpected character"; say what it was.
_NON_JSON_NUMBER = re.compile(rb"-?(?:NaN|Infinity)")


def _hint(body: bytes, position: int) -> str:
    if _NON_JSON_NUMBER.match(body, max(position, 0)):
        return " (NaN and Infinity are not JSON numbers)"
    return ""


def _first_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return " ".join(lines) or type(error).__name__


COLLECTOR_KEY = web.AppKey("collector", Collector)


@web.middleware
async def json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every failure as {"success": false, "error": ...}, including aiohttp's own 404 and 405."""
    try:
        return await handler(request)
    except RequestFailed as failure:
        if failure.status >= 500:
            log.warning("%s %s: %s", request.method, request.path, failure.error)
        response = json_response(failure.status, {"success": False, "error": failure.error, **failure.details})
        if failure.close:
            response.force_close()
        return response
    except web.HTTPException as error:
        if error.status < 400:
            raise
        return json_response(error.status, {"success": False, "error": error.reason})


def build_app(collector: Collector, listen_host: str | None = None) -> web.Application:
    """The collector's app. Every path but /metrics is public (write keys and signatures guard them);
    /metrics needs an API token unless the collector listens on loopback only: `listen_host`, by default
    the collector_host setting."""

    @web.middleware
    async def measured(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        started = time.perf_counter()
        route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
        response = await handler(request)
        collector.metrics.requests.labels(route=route, status=str(response.status)).inc()
        collector.metrics.latency.labels(route=route).observe(time.perf_counter() - started)
        return response

    posts: dict[str, Callable[[web.Request], Awaitable[web.Response]]] = {
        f"/v1/{call_type}": collector.single_call(call_type) for call_type in CALL_TYPES
    }
    posts |= {
        "/v1/batch": collector.batch,
        "/v1/import": collector.batch,
        "/webhooks/sendgrid": collector.sendgrid_events,
        "/webhooks/twilio/status": collector.twilio_status,
        "/webhooks/twilio/inbound": collector.twilio_inbound,
    }
    guard = token_guard(
        collector.settings.api_tokens,
        public={*posts, OPENAPI_PATH},
        listen_host=listen_host or collector.settings.collector_host,
        public_prefixes=[UNSUBSCRIBE_PREFIX, CONFIRM_PREFIX],  # the signed token is the credential
    )
    app = web.Application(middlewares=[measured, json_errors, guard])
    app[COLLECTOR_KEY] = collector
    for path, handler in posts.items():
        app.router.add_post(path, handler)
    app.router.add_get(OPENAPI_PATH, collector.openapi)
    app.router.add_post(UNSUBSCRIBE_PREFIX + "{token}", collector.unsubscribe)
    app.router.add_get(UNSUBSCRIBE_PREFIX + "{token}", collector.unsubscribe_page)
    app.router.add_post(CONFIRM_PREFIX + "{person_id}/{token}", collector.confirm)
    app.router.add_get(CONFIRM_PREFIX + "{person_id}/{token}", collector.confirm_page)
    app.router.add_get(METRICS_PATH, collector.metrics_page)

    async def close_producer(app: web.Application) -> None:
        await app[COLLECTOR_KEY].producer.close()

    app.on_cleanup.append(close_producer)
    return app
