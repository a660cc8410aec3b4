"""Email through SendGrid's v3 Mail Send API: `POST /v3/mail/send` with a Bearer key, 202 when accepted.

`custom_args` carry the trigger and the person, which SendGrid's event webhook echoes on every delivered,
open, click, bounce and unsubscribe, so the collector maps each back to its nudge. SendGrid documents no
idempotency key for Mail Send; the commit before the last byte is what keeps a nudge from going twice.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson

from schemas.settings import SenderSettings
from sinks.sender.channels import Accepted, Commit, ProviderError, classify_http
from sinks.sender.channels.http import post_committed
from sinks.sender.messages import OutgoingEmail

MAIL_SEND_PATH = "/v3/mail/send"


def mail_send_body(message: OutgoingEmail) -> dict[str, Any]:
    """The body of a SendGrid mail send request for one email, with its one-click unsubscribe headers."""
    sender: dict[str, str] = {"email": message.from_email}
    if message.from_name:
        sender["name"] = message.from_name
    return {
        "personalizations": [{"to": [{"email": message.to}], "custom_args": message.custom_args}],
        "from": sender,
        "subject": message.subject,
        # SendGrid wants text/plain before text/html.
        "content": [{"type": "text/plain", "value": message.text}, {"type": "text/html", "value": message.html}],
        "headers": {
            "List-Unsubscribe": f"<{message.unsubscribe_url}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
    }


def _errors(body: bytes) -> str:
    try:
        document = orjson.loads(body)
        return "; ".join(str(entry.get("message")) for entry in document.get("errors", []))[:300] or body[:300].decode(
            errors="replace"
        )
    except (orjson.JSONDecodeError, AttributeError, TypeError):
        return body[:300].decode(errors="replace")


class SendGridChannel:
    """Email through the SendGrid mail send API."""

    provider = "sendgrid"

    def __init__(self, settings: SenderSettings) -> None:
        if settings.sendgrid_api_key is None:
            raise ValueError("set NUDGEFLOW_SENDER__SENDGRID_API_KEY to send email through SendGrid")
        self.url = settings.sendgrid_base_url.rstrip("/") + MAIL_SEND_PATH
        self.key = settings.sendgrid_api_key.get_secret_value()
        self.timeout = settings.request_timeout_seconds
        self.session: aiohttp.ClientSession | None = None
        self.connections = settings.concurrency

    async def send(self, message: OutgoingEmail, commit: Commit) -> Accepted:
        if self.session is None:
            self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=self.connections))
        answer = await post_committed(
            self.session,
            self.url,
            orjson.dumps(mail_send_body(message)),
            {"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"},
            commit,
            self.timeout,
        )
        if answer.status == 202:
            return Accepted(answer.headers.get("X-Message-Id"))
        error: ProviderError = classify_http(answer.status, _errors(answer.body), answer.headers.get("Retry-After"))
        raise error

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
