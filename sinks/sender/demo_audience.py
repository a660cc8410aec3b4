"""The demo's audience, `nudgeflow demo-audience`: a local SMTP server and a stand-in for Twilio's Messages
API that receive what the sender delivers, and recipients who act on it through the real collector.

For each email: SendGrid-style `delivered`, then sometimes `open` and `click` events on the collector's
`/webhooks/sendgrid` (with the custom args the message carries), sometimes an order on `/v1/track`, and now
and then the RFC 8058 one-click unsubscribe the message's `List-Unsubscribe` names. For each SMS: the
`delivered` status callback the message asked for, sometimes a click and an order, and now and then a
STOP reply on `/webhooks/twilio/inbound`, signed with the auth token as Twilio signs. It also plays two
named people (the README's example links) through `/v1/identify` and `/v1/track` so their nudges show the
English and the Chinese templates. Local demo only: it listens on 127.0.0.1 and speaks to the collector.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import random
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
import orjson
from aiohttp import web

log = logging.getLogger(__name__)

# The people of the README's links, created first so the links work from the start.
NAMED_PEOPLE: tuple[dict[str, Any], ...] = (
    {"userId": "shopper-000042", "name": "Ada Lovelace", "locale": "en-US", "sku": "sku-0003", "price": 189.0},
    {"userId": "shopper-000088", "name": "李华", "locale": "zh-CN", "sku": "sku-0008", "price": 79.0},
)


@dataclass
class Behaviour:
    """How often recipients do each thing; the demo's rates come out near these."""

    open: float = 0.6
    click: float = 0.5  # of those who opened
    buy: float = 0.35  # of those who clicked
    unsubscribe: float = 0.05
    sms_click: float = 0.3
    sms_stop: float = 0.08


@dataclass
class Tally:
    """The emails and SMS the demo audience has received, and what it has posted back, by kind."""

    emails: int = 0
    sms: int = 0
    posted: dict[str, int] = field(default_factory=dict)

    def count(self, what: str) -> None:
        self.posted[what] = self.posted.get(what, 0) + 1


def twilio_signature(auth_token: str, url: str, form: dict[str, str]) -> str:
    """The signature Twilio puts on a webhook it posts (X-Twilio-Signature)."""
    material = url + "".join(key + value for key, value in sorted(form.items()))
    return base64.b64encode(hmac.new(auth_token.encode(), material.encode(), hashlib.sha1).digest()).decode()


class Audience:
    """The demo's recipients: they read the nudges sent to them and act on some, through the collector."""

    def __init__(
        self,
        collector_url: str,
        write_key: str,
        twilio_auth_token: str | None,
        behaviour: Behaviour | None = None,
        seed: int | None = None,
        pause: tuple[float, float] = (0.5, 3.0),
    ) -> None:
        self.collector = collector_url.rstrip("/")
        self.write_key = write_key
        self.auth_token = twilio_auth_token
        self.behaviour = behaviour or Behaviour()
        self.rng = random.Random(seed)
        self.pause = pause
        self.tally = Tally()
        self.session: aiohttp.ClientSession | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    # --- posting to the collector ----------------------------------------------------------------------

    async def _post(self, what: str, url: str, patience: float = 0.0, **kwargs: Any) -> None:
        """POST once, or for up to `patience` seconds while nothing listens yet (the collector starting)."""
        assert self.session is not None
        deadline = asyncio.get_running_loop().time() + patience
        while True:
            try:
                async with self.session.post(url, timeout=aiohttp.ClientTimeout(total=10), **kwargs) as response:
                    if response.status >= 300:
                        text = (await response.text())[:200]
                        log.warning("audience: %s answered %d: %s", what, response.status, text)
                        return
                break
            except (aiohttp.ClientError, TimeoutError, OSError) as error:
                if asyncio.get_running_loop().time() >= deadline:
                    log.warning("audience: %s failed: %s", what, error)
                    return
                await asyncio.sleep(0.5)
        self.tally.count(what)

    async def track(self, document: dict[str, Any], patience: float = 0.0) -> None:
        what = str(document.get("event", document["type"]))
        url = f"{self.collector}/v1/{document['type']}"
        await self._post(what, url, patience, json=document, auth=aiohttp.BasicAuth(self.write_key, ""))

    async def sendgrid(self, kind: str, email: str, args: dict[str, str], **extra: Any) -> None:
        entry = {
            "event": kind,
            "email": email,
            "timestamp": int(datetime.now(UTC).timestamp()),
            "sg_event_id": uuid.UUID(int=self.rng.getrandbits(128)).hex,
            "sg_message_id": args.get("trigger_id", ""),
            **args,
            **extra,
        }
        await self._post(f"sendgrid {kind}", f"{self.collector}/webhooks/sendgrid", json=[entry])

    async def twilio(self, what: str, url: str, form: dict[str, str]) -> None:
        headers = {}
        if self.auth_token:
            headers["X-Twilio-Signature"] = twilio_signature(self.auth_token, url, form)
        await self._post(what, url, data=form, headers=headers)

    async def order(self, person_id: str, channel: str) -> None:
        order_id = f"order-{uuid.UUID(int=self.rng.getrandbits(128)).hex[:12]}"
        revenue = round(self.rng.uniform(20, 200), 2)
        await self.track(
            {
                "type": "track",
                "event": "Order Completed",
                "userId": person_id,
                "properties": {"order_id": order_id, "revenue": revenue, "channel": channel},
            }
        )

    async def wait(self) -> None:
        await asyncio.sleep(self.rng.uniform(*self.pause))

    def spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # --- what a recipient does -------------------------------------------------------------------------

    async def read_email(self, message: EmailMessage) -> None:
        self.tally.emails += 1
        try:
            args = orjson.loads(str(message.get("X-SMTPAPI", "{}"))).get("unique_args", {})
        except orjson.JSONDecodeError:
            args = {}
        email = str(message.get("To", ""))
        person = args.get("person_id")
        if not person:
            return
        await self.sendgrid("delivered", email, args)
        behaviour = self.behaviour
        if self.rng.random() < behaviour.unsubscribe:
            await self.wait()
            link = re.search(r"<(https?://[^>]+)>", str(message.get("List-Unsubscribe", "")))
            if link:
                form = {"Content-Type": "application/x-www-form-urlencoded"}
                await self._post("unsubscribe", link.group(1), data=b"List-Unsubscribe=One-Click", headers=form)
            return
        if self.rng.random() >= behaviour.open:
            return
        await self.wait()
        await self.sendgrid("open", email, args)
        if self.rng.random() >= behaviour.click:
            return
        await self.wait()
        body = message.get_body(("plain",))
        links = re.findall(r"https?://\S+", body.get_content() if body is not None else "")
        shop_links = [link for link in links if "/unsubscribe/" not in link] or ["https://shop.example/"]
        await self.sendgrid("click", email, args, url=shop_links[0])
        if self.rng.random() < behaviour.buy:
            await self.wait()
            await self.order(person, "email")

    async def read_sms(self, form: dict[str, str], sid: str) -> None:
        self.tally.sms += 1
        callback = form.get("StatusCallback")
        if not callback:
            return
        params = dict(parse_qsl(callback.partition("?")[2]))
        person = params.get("person_id")
        status = {
            "MessageSid": sid,
            "MessageStatus": "delivered",
            "To": form.get("To", ""),
            "From": form.get("From", ""),
        }
        await self.twilio("twilio delivered", callback, status)
        if not person:
            return
        behaviour = self.behaviour
        await self.wait()
        if self.rng.random() < behaviour.sms_stop:
            inbound = f"{self.collector}/webhooks/twilio/inbound"
            reply = {"MessageSid": f"SM{uuid.uuid4().hex}", "From": form.get("To", ""), "To": form.get("From", "")}
            reply["Body"] = "STOP"
            await self.twilio("twilio STOP", inbound, reply)
            return
        if self.rng.random() < behaviour.sms_click:
            properties = {k: v for k, v in params.items() if k in ("trigger_id", "rule", "variant")}
            await self.track({"type": "track", "event": "SMS Clicked", "userId": person, "properties": properties})
            if self.rng.random() < behaviour.buy:
                await self.wait()
                await self.order(person, "sms")

    async def named_people(self) -> None:
        """The README's people: a name, a locale, contacts, and a cart they leave."""
        for person in NAMED_PEOPLE:
            number = 5550100 + int(person["userId"][-3:])
            await self.track(
                {
                    "type": "identify",
                    "userId": person["userId"],
                    "traits": {
                        "name": person["name"],
                        "email": f"{person['userId']}@shop.example",
                        "phone": f"+1415{number:07d}",
                    },
                    "context": {"locale": person["locale"]},
                },
                patience=120.0,
            )
            await self.track(
                {
                    "type": "track",
                    "event": "Product Added",
                    "userId": person["userId"],
                    "properties": {
                        "product_id": person["sku"],
                        "name": "Rain shell jacket" if person["sku"] == "sku-0003" else "Wireless earbuds",
                        "price": person["price"],
                        "cart_id": f"cart-{person['userId']}",
                        "url": f"https://shop.example/p/{person['sku']}",
                        "image_url": f"https://shop.example/i/{person['sku']}.jpg",
                    },
                    "context": {"locale": person["locale"]},
                }
            )


class _SmtpHandler:
    """aiosmtpd's handler: every message accepted, then read by the audience."""

    def __init__(self, audience: Audience) -> None:
        self.audience = audience

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.original_content or envelope.content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        self.audience.spawn(self.audience.read_email(message))
        return "250 OK: queued as " + uuid.uuid4().hex[:12]


def twilio_app(audience: Audience, account_sid: str | None, auth_token: str | None) -> web.Application:
    """Twilio's Messages resource as the sender calls it: basic auth, the form fields, 201 with a sid."""

    async def create(request: web.Request) -> web.Response:
        expected = aiohttp.BasicAuth(request.match_info["sid"], auth_token or "").encode()
        if account_sid and (
            request.match_info["sid"] != account_sid or request.headers.get("Authorization") != expected
        ):
            return web.json_response({"code": 20003, "message": "Authenticate", "status": 401}, status=401)
        form = {key: str(value) for key, value in (await request.post()).items()}
        missing = [name for name in ("To", "From", "Body") if not form.get(name)]
        if missing:
            return web.json_response({"code": 21604, "message": f"missing {missing}", "status": 400}, status=400)
        sid = f"SM{uuid.uuid4().hex}"
        audience.spawn(audience.read_sms(form, sid))
        return web.json_response(
            {"sid": sid, "status": "queued", "to": form["To"], "from": form["From"], "body": form["Body"]}, status=201
        )

    app = web.Application()
    app.router.add_post("/2010-04-01/Accounts/{sid}/Messages.json", create)
    return app


async def serve(
    audience: Audience,
    smtp_port: int,
    twilio_port: int,
    account_sid: str | None,
    stop: asyncio.Event,
    report_every: float = 10.0,
) -> None:
    """Run the demo audience's SMTP server and Twilio stand-in until `stop` is set, reporting now and then."""
    from aiosmtpd.smtp import SMTP

    loop = asyncio.get_running_loop()
    audience.session = aiohttp.ClientSession()
    handler = _SmtpHandler(audience)
    # No command limit: the sender keeps its connections open for many messages.
    smtp = await loop.create_server(lambda: SMTP(handler, command_call_limit=None), "127.0.0.1", smtp_port)
    runner = web.AppRunner(twilio_app(audience, account_sid, audience.auth_token), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", twilio_port).start()
    print(f"demo-audience: SMTP on 127.0.0.1:{smtp_port}, Twilio Messages on 127.0.0.1:{twilio_port}", flush=True)
    try:
        await audience.named_people()
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=report_every)
            except TimeoutError:
                counts = " ".join(f"{name}={count}" for name, count in sorted(audience.tally.posted.items()))
                print(
                    f"demo-audience: {audience.tally.emails} emails, {audience.tally.sms} SMS received; {counts}",
                    flush=True,
                )
    finally:
        smtp.close()
        await runner.cleanup()
        for task in list(audience.tasks):
            task.cancel()
        await audience.session.close()
