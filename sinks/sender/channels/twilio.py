"""SMS through Twilio's Messages API: `POST /2010-04-01/Accounts/{AccountSid}/Messages.json`, basic auth
with the account SID and auth token, form fields To, From, Body and StatusCallback; 201 when queued.

The StatusCallback URL carries trigger_id and person_id as query parameters, which the collector's
`/webhooks/twilio/status` reads (Twilio signs the URL with them). Twilio documents no idempotency key for
creating a message; the commit before the last byte keeps a nudge from going twice.
"""

from __future__ import annotations

from urllib.parse import quote, urlencode

import aiohttp
import orjson
from pydantic import SecretStr

from schemas.settings import SenderSettings
from sinks.sender.channels import Accepted, Commit, ProviderError, classify_http
from sinks.sender.channels.http import post_committed
from sinks.sender.messages import OutgoingSms


def messages_path(account_sid: str) -> str:
    """The path of Twilio's Messages resource for an account."""
    return f"/2010-04-01/Accounts/{quote(account_sid, safe='')}/Messages.json"


def message_form(message: OutgoingSms, from_number: str) -> dict[str, str]:
    """The form Twilio is posted to send one SMS, with the callback for its status."""
    return {"To": message.to, "From": from_number, "Body": message.body, "StatusCallback": message.status_callback}


def _error(body: bytes) -> str:
    try:
        document = orjson.loads(body)
        return f"{document.get('code')}: {document.get('message')}"[:300]
    except (orjson.JSONDecodeError, AttributeError, TypeError):
        return body[:300].decode(errors="replace")


class TwilioChannel:
    """SMS through the Twilio Messages API."""

    provider = "twilio"

    def __init__(self, settings: SenderSettings, auth_token: SecretStr | None) -> None:
        if not (settings.twilio_account_sid and settings.twilio_from_number and auth_token):
            raise ValueError(
                "set NUDGEFLOW_SENDER__TWILIO_ACCOUNT_SID, NUDGEFLOW_SENDER__TWILIO_FROM_NUMBER and "
                "NUDGEFLOW_TWILIO_AUTH_TOKEN to send SMS through Twilio"
            )
        self.url = settings.twilio_base_url.rstrip("/") + messages_path(settings.twilio_account_sid)
        self.auth = aiohttp.BasicAuth(settings.twilio_account_sid, auth_token.get_secret_value())
        self.from_number = settings.twilio_from_number
        self.timeout = settings.request_timeout_seconds
        self.connections = settings.concurrency
        self.session: aiohttp.ClientSession | None = None

    async def send(self, message: OutgoingSms, commit: Commit) -> Accepted:
        if self.session is None:
            self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=self.connections))
        answer = await post_committed(
            self.session,
            self.url,
            urlencode(message_form(message, self.from_number)).encode(),
            {"Content-Type": "application/x-www-form-urlencoded"},
            commit,
            self.timeout,
            auth=self.auth,
        )
        if answer.status in (200, 201):
            try:
                sid = orjson.loads(answer.body).get("sid")
            except (orjson.JSONDecodeError, AttributeError):
                sid = None
            return Accepted(str(sid) if sid else None)
        error: ProviderError = classify_http(answer.status, _error(answer.body), answer.headers.get("Retry-After"))
        raise error

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
