"""The providers' documented requests, checked by local servers on 127.0.0.1, and the commit before the
last byte: a request whose commit fails never reaches the provider's handler."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest
from aiohttp import web
from pydantic import SecretStr

from schemas.settings import SenderSettings
from sinks.sender.channels import ProviderError
from sinks.sender.channels.sendgrid import SendGridChannel
from sinks.sender.channels.smtp import SmtpChannel, data_payload
from sinks.sender.channels.twilio import TwilioChannel
from sinks.sender.messages import OutgoingEmail, OutgoingSms
from tests.integration.conftest import free_port
from tests.integration.sender.servers import SmtpServer

EMAIL = OutgoingEmail(
    trigger_id="a" * 32,
    person_id="shopper-000042",
    rule="cart_abandonment",
    variant="reminder",
    to="ada@shop.example",
    from_email="nudges@shop.example",
    from_name="Demo shop",
    subject="You left something in your cart",
    html="<p>Hi</p>",
    text="Hi\n.starts with a dot\n",
    unsubscribe_url="https://collector.example/unsubscribe/tok",
    sent_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    locale="en",
)
SMS = OutgoingSms(
    trigger_id="b" * 32,
    person_id="shopper-000042",
    rule="browse_abandonment",
    variant=None,
    to="+14155550142",
    body="Yoga mat is on sale this week Reply STOP to opt out",
    status_callback="https://collector.example/webhooks/twilio/status?trigger_id="
    + "b" * 32
    + "&person_id=shopper-000042",
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def provider() -> AsyncIterator[Callable[[str, Handler], Awaitable[str]]]:
    runners: list[web.AppRunner] = []

    async def serve(path: str, handler: Handler) -> str:
        app = web.Application()
        app.router.add_post(path, handler)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runners.append(runner)
        return f"http://127.0.0.1:{port}"

    yield serve
    for runner in runners:
        await runner.cleanup()


class Commits:
    def __init__(self, fail: bool = False) -> None:
        self.calls = 0
        self.fail = fail

    async def __call__(self) -> None:
        await asyncio.sleep(0.05)  # as long as a broker's acknowledgement: time for a server that jumped the gun
        self.calls += 1
        if self.fail:
            raise RuntimeError("partition given away")


async def test_sendgrid_gets_the_documented_mail_send_request(provider: Any) -> None:
    seen: list[dict[str, Any]] = []
    commits = Commits()

    async def mail_send(request: web.Request) -> web.Response:
        seen.append(
            {"headers": dict(request.headers), "body": orjson.loads(await request.read()), "commits": commits.calls}
        )
        return web.Response(status=202, headers={"X-Message-Id": "sg-1"})

    base = await provider("/v3/mail/send", mail_send)
    channel = SendGridChannel(SenderSettings(sendgrid_api_key=SecretStr("SG.key"), sendgrid_base_url=base))
    accepted = await channel.send(EMAIL, commits)
    await channel.close()
    assert accepted.provider_message_id == "sg-1"
    [request] = seen
    assert request["headers"]["Authorization"] == "Bearer SG.key"
    assert request["headers"]["Content-Type"] == "application/json"
    assert request["commits"] == 1  # the handler ran only once the commit was recorded
    assert request["body"] == {
        "personalizations": [
            {
                "to": [{"email": "ada@shop.example"}],
                "custom_args": {
                    "trigger_id": "a" * 32,
                    "person_id": "shopper-000042",
                    "rule": "cart_abandonment",
                    "variant": "reminder",
                },
            }
        ],
        "from": {"email": "nudges@shop.example", "name": "Demo shop"},
        "subject": "You left something in your cart",
        "content": [{"type": "text/plain", "value": EMAIL.text}, {"type": "text/html", "value": "<p>Hi</p>"}],
        "headers": {
            "List-Unsubscribe": "<https://collector.example/unsubscribe/tok>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
    }


@pytest.mark.parametrize(("status", "retryable"), [(429, True), (500, True), (503, True), (400, False), (401, False)])
async def test_sendgrid_refusals_are_retried_only_when_worth_it(provider: Any, status: int, retryable: bool) -> None:
    async def mail_send(request: web.Request) -> web.Response:
        await request.read()
        body = orjson.dumps({"errors": [{"message": "no", "field": None}]})
        return web.Response(status=status, body=body, headers={"Retry-After": "7"})

    channel = SendGridChannel(
        SenderSettings(sendgrid_api_key=SecretStr("k"), sendgrid_base_url=await provider("/v3/mail/send", mail_send))
    )
    with pytest.raises(ProviderError) as refused:
        await channel.send(EMAIL, Commits())
    await channel.close()
    assert refused.value.retryable is retryable and f"HTTP {status}: no" in refused.value.reason
    assert refused.value.retry_after == 7.0


async def test_a_request_whose_commit_fails_never_reaches_the_provider(provider: Any) -> None:
    handled: list[bytes] = []

    async def mail_send(request: web.Request) -> web.Response:
        handled.append(await request.read())
        return web.Response(status=202)

    channel = SendGridChannel(
        SenderSettings(sendgrid_api_key=SecretStr("k"), sendgrid_base_url=await provider("/v3/mail/send", mail_send))
    )
    with pytest.raises(RuntimeError, match="partition given away"):
        await channel.send(EMAIL, Commits(fail=True))
    await channel.close()
    await asyncio.sleep(0.2)
    assert handled == []


async def test_twilio_gets_the_documented_messages_request(provider: Any) -> None:
    seen: list[dict[str, Any]] = []

    async def create(request: web.Request) -> web.Response:
        form = dict(await request.post())
        seen.append({"path": request.path, "auth": request.headers.get("Authorization"), "form": form})
        seen[-1]["type"] = request.headers.get("Content-Type")
        return web.json_response({"sid": "SM123", "status": "queued"}, status=201)

    sid = "AC" + "1" * 32
    base = await provider("/2010-04-01/Accounts/{sid}/Messages.json", create)
    settings = SenderSettings(twilio_account_sid=sid, twilio_from_number="+14155550100", twilio_base_url=base)
    channel = TwilioChannel(settings, SecretStr("auth-token"))
    accepted = await channel.send(SMS, Commits())
    await channel.close()
    assert accepted.provider_message_id == "SM123"
    [request] = seen
    assert request["path"] == f"/2010-04-01/Accounts/{sid}/Messages.json"
    assert request["auth"] == "Basic " + base64.b64encode(f"{sid}:auth-token".encode()).decode()
    assert request["type"] == "application/x-www-form-urlencoded"
    assert request["form"] == {
        "To": "+14155550142",
        "From": "+14155550100",
        "Body": SMS.body,
        "StatusCallback": SMS.status_callback,
    }
    callback = parse_qs(urlsplit(request["form"]["StatusCallback"]).query)
    assert callback == {"trigger_id": ["b" * 32], "person_id": ["shopper-000042"]}


async def test_twilio_refusals(provider: Any) -> None:
    async def create(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"code": 21211, "message": "Invalid 'To' Phone Number", "status": 400}, status=400)

    base = await provider("/2010-04-01/Accounts/{sid}/Messages.json", create)
    settings = SenderSettings(twilio_account_sid="AC1", twilio_from_number="+14155550100", twilio_base_url=base)
    channel = TwilioChannel(settings, SecretStr("t"))
    with pytest.raises(ProviderError) as refused:
        await channel.send(SMS, Commits())
    await channel.close()
    assert not refused.value.retryable and "21211: Invalid 'To' Phone Number" in refused.value.reason


def test_data_lines_are_dot_stuffed_and_end_in_crlf() -> None:
    assert data_payload(b"a\n.b\r\n..c\rd") == b"a\r\n..b\r\n...c\r\nd\r\n"


async def test_smtp_delivers_with_the_unsubscribe_headers_and_drops_an_uncommitted_message() -> None:
    with SmtpServer(free_port()) as server:
        settings = SenderSettings(smtp_port=server.port, smtp_security="none", from_email="nudges@shop.example")
        channel = SmtpChannel(settings)
        with pytest.raises(RuntimeError):
            await channel.send(EMAIL, Commits(fail=True))  # DATA left unfinished: the server keeps nothing
        accepted = await channel.send(EMAIL, Commits())
        server.mailbox.answer = lambda recipient: "550 5.1.1 no such user"
        with pytest.raises(ProviderError) as refused:
            await channel.send(EMAIL, Commits())
        await channel.close()
    assert accepted.provider_message_id is not None and accepted.provider_message_id.startswith("250")
    assert not refused.value.retryable and "550" in refused.value.reason
    [message] = server.mailbox.messages
    assert message["Message-ID"] == f"<{'a' * 32}@shop.example>"
    assert message["List-Unsubscribe"] == "<https://collector.example/unsubscribe/tok>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert orjson.loads(str(message["X-SMTPAPI"]))["unique_args"]["person_id"] == "shopper-000042"
    body = message.get_body(("plain",))
    assert body is not None and ".starts with a dot" in body.get_content()  # the stuffed dot came off again
