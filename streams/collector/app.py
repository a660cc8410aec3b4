"""The collector's aiohttp application: Segment-compatible /v1/* calls and sender webhooks onto Kafka.

Handlers read and bound the body, authenticate, hand the decoded payload to the pure modules and move the
outcome to Kafka. A 200 is sent only after the broker acknowledged every record (events and dead letters).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from cryptography.hazmat.primitives.asymmetric import ec

from schemas.events import Event
from schemas.settings import Settings
from streams.collector import sendgrid, twilio
from streams.collector.dead_letters import collector_dead_letter
from streams.collector.dedupe import DedupeWindow
from streams.collector.metrics import CollectorMetrics
from streams.collector.openapi import openapi_document
from streams.collector.producer import BrokerUnavailable, EventProducer, Record
from streams.collector.segment_api import (
    MAX_BATCH_BYTES,
    InvalidCall,
    PayloadTooLarge,
    Rejection,
    prepare_batch,
    prepare_event,
    source_for,
    write_key_from_authorization,
)
from streams.rules.timers import utc_now

log = logging.getLogger(__name__)

MAX_WEBHOOK_BYTES = 4 * 1024 * 1024  # SendGrid posts up to thousands of events at once
MAX_FORM_BYTES = 64 * 1024
DEDUPE_SECONDS = 600.0
DEDUPE_ENTRIES = 200_000
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'


class RequestFailed(Exception):
    """Ends a request with a JSON error; raised by the steps of a handler."""

    def __init__(self, status: int, error: str, **details: Any) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.details = details


def json_response(status: int, document: dict[str, Any]) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(document), content_type="application/json")


@dataclass
class Delivery:
    """What one request puts on Kafka, and how it went."""

    events: list[Event] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    duplicates: int = 0


@dataclass
class Collector:
    settings: Settings
    producer: EventProducer
    clock: Callable[[], datetime] = utc_now
    dedupe: DedupeWindow = field(
        default_factory=lambda: DedupeWindow(DEDUPE_SECONDS, DEDUPE_ENTRIES, clock=time.monotonic)
    )
    new_message_id: Callable[[], str] = field(default=lambda: str(uuid.uuid4()))
    sendgrid_key: ec.EllipticCurvePublicKey | None = None
    metrics: CollectorMetrics = field(default_factory=CollectorMetrics)

    def __post_init__(self) -> None:
        if self.settings.sendgrid_public_key and self.sendgrid_key is None:
            self.sendgrid_key = sendgrid.load_public_key(self.settings.sendgrid_public_key)

    # --- the steps every handler shares -------------------------------------------------------------------

    async def read_body(self, request: web.Request, limit: int, what: str) -> bytes:
        """The (gunzipped: aiohttp inflates Content-Encoding: gzip) body, at most `limit` bytes."""
        too_large = RequestFailed(413, f"{what} is more than {limit} bytes; at most {limit} bytes are accepted")
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
                400, f"cannot read the body (Content-Encoding: {encoding}): {_first_line(error)}"
            ) from None
        return b"".join(chunks)

    @staticmethod
    def decode_json(body: bytes) -> Any:
        if not body.strip():
            raise RequestFailed(400, "empty body; expected JSON")
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as error:
            raise RequestFailed(400, f"malformed JSON: {error}") from None

    def authenticate(self, request: web.Request, document: Any) -> str:
        key = write_key_from_authorization(request.headers.get("Authorization"))
        if key is None and isinstance(document, dict) and isinstance(document.get("writeKey"), str):
            key = document["writeKey"]
        try:
            return source_for(key, self.settings.collector_write_keys)
        except InvalidCall as error:
            raise RequestFailed(401, str(error)) from None

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
            letter = collector_dead_letter(rejection.raw, rejection.reason, received_at, source)
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
            document = self.decode_json(await self.read_body(request, MAX_BATCH_BYTES, "request body"))
            source = self.authenticate(request, document)
            delivery = Delivery()
            try:
                delivery.events.append(
                    prepare_event(
                        document,
                        call_type=call_type,
                        received_at=received_at,
                        default_region=self.settings.default_phone_region,
                        new_message_id=self.new_message_id,
                        source=source,
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
        document = self.decode_json(await self.read_body(request, MAX_BATCH_BYTES, "batch request body"))
        source = self.authenticate(request, document)
        try:
            outcome = prepare_batch(
                document,
                received_at=received_at,
                default_region=self.settings.default_phone_region,
                new_message_id=self.new_message_id,
                source=source,
            )
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
                    prepare_event(
                        document,
                        received_at=received_at,
                        default_region=self.settings.default_phone_region,
                        new_message_id=self.new_message_id,
                        source=source,
                    )
                )
            except InvalidCall as error:
                delivery.rejected.append(Rejection(index, str(error), document))
        return delivery

    async def sendgrid_events(self, request: web.Request) -> web.Response:
        received_at = self.clock()
        body = await self.read_body(request, MAX_WEBHOOK_BYTES, "webhook body")
        if self.sendgrid_key is not None and not sendgrid.signature_valid(
            self.sendgrid_key,
            request.headers.get(sendgrid.SIGNATURE_HEADER),
            request.headers.get(sendgrid.TIMESTAMP_HEADER),
            body,
        ):
            raise RequestFailed(401, "missing or invalid SendGrid event webhook signature")
        try:
            documents, skipped = sendgrid.map_events(self.decode_json(body))
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
        body = await self.read_body(request, MAX_FORM_BYTES, "form body")
        try:
            pairs = parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError:
            raise RequestFailed(400, "form body is not UTF-8") from None
        token = self.settings.twilio_auth_token
        # Twilio signs the URL it called; behind a proxy the public URL must reach us unchanged (Host, scheme).
        if token is not None and not twilio.signature_valid(
            token.get_secret_value(), request.headers.get(twilio.SIGNATURE_HEADER), str(request.url), pairs
        ):
            raise RequestFailed(401, "missing or invalid X-Twilio-Signature")
        return dict(pairs), dict(request.query)

    async def twilio_documents(
        self, request: web.Request, mapping: Callable[[dict[str, str], dict[str, str], datetime], list[dict[str, Any]]]
    ) -> Delivery:
        """Verify a Twilio callback, map it to event documents and deliver them."""
        received_at = self.clock()
        form, params = await self.twilio_form(request)
        try:
            documents = mapping(form, params, received_at)
        except ValueError as error:
            raise RequestFailed(400, str(error)) from None
        delivery = self.prepare_documents(list(enumerate(documents)), "twilio", received_at)
        await self.deliver(delivery, "twilio", received_at)
        return delivery

    async def twilio_status(self, request: web.Request) -> web.Response:
        delivery = await self.twilio_documents(request, twilio.map_status)
        return json_response(200, {"success": True, "accepted": len(delivery.events)})

    async def twilio_inbound(self, request: web.Request) -> web.Response:
        await self.twilio_documents(request, twilio.map_inbound)
        # An empty TwiML answer: acknowledge without sending an automatic reply.
        return web.Response(status=200, text=EMPTY_TWIML, content_type="text/xml")

    async def openapi(self, request: web.Request) -> web.Response:
        return json_response(200, openapi_document())

    async def metrics_page(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.exposition(), content_type="text/plain", charset="utf-8")


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
        return json_response(failure.status, {"success": False, "error": failure.error, **failure.details})
    except web.HTTPException as error:
        if error.status < 400:
            raise
        return json_response(error.status, {"success": False, "error": error.reason})


def build_app(collector: Collector) -> web.Application:
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

    app = web.Application(middlewares=[measured, json_errors])
    app[COLLECTOR_KEY] = collector
    for call_type in ("track", "identify", "page", "screen", "alias", "group"):
        app.router.add_post(f"/v1/{call_type}", collector.single_call(call_type))
    app.router.add_post("/v1/batch", collector.batch)
    app.router.add_post("/v1/import", collector.batch)
    app.router.add_post("/webhooks/sendgrid", collector.sendgrid_events)
    app.router.add_post("/webhooks/twilio/status", collector.twilio_status)
    app.router.add_post("/webhooks/twilio/inbound", collector.twilio_inbound)
    app.router.add_get("/openapi.json", collector.openapi)
    app.router.add_get("/metrics", collector.metrics_page)

    async def close_producer(app: web.Application) -> None:
        await app[COLLECTOR_KEY].producer.close()

    app.on_cleanup.append(close_producer)
    return app
