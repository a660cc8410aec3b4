"""One-click unsubscribe (RFC 8058): `POST /unsubscribe/{token}` from a mailbox provider's button or the
page a recipient opens from the email, with a token the sender signed (`schemas.unsubscribe`).

A POST puts the opt-out on the events topic: `Email Unsubscribed` for the person (the worker sets their
email consent to opted out), with the nudge it came from. A GET only shows a page with the button, since
link scanners and previews fetch every link of a message: a GET must never unsubscribe anyone.
"""

from __future__ import annotations

import hashlib
import html
from datetime import datetime
from typing import Any

from schemas.events import EventName
from schemas.profile import ConsentSource
from schemas.unsubscribe import read_token

ONE_CLICK_BODY = "List-Unsubscribe=One-Click"


def unsubscribe_documents(
    token: str, hash_key: bytes, received_at: datetime, evidence: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """The events one unsubscribe puts on the topic; `schemas.unsubscribe.InvalidToken` for a bad token.
    `evidence`: the request's `ip` and `userAgent`, kept with the consent change."""
    evidence = evidence or {}
    request = read_token(token, hash_key, received_at)
    # One id per token: a second press (or the provider retrying its POST) is a duplicate, not a new event.
    message_id = "unsubscribe:" + hashlib.sha256(token.encode()).hexdigest()[:32]
    properties: dict[str, Any] = {"source": "list-unsubscribe"}
    if request.trigger_id:
        properties["trigger_id"] = request.trigger_id
    if request.channel == "sms":
        return [
            {
                "type": "identify",
                "userId": request.person_id,
                "timestamp": received_at.isoformat(),
                "messageId": message_id,
                "traits": {"sms_consent": "opted_out"},
                "context": {"channel": "sms", "consentSource": ConsentSource.UNSUBSCRIBE_LINK, **evidence},
            }
        ]
    return [
        {
            "type": "track",
            "event": EventName.EMAIL_UNSUBSCRIBED.value,
            "userId": request.person_id,
            "timestamp": received_at.isoformat(),
            "messageId": message_id,
            "properties": properties,
            "context": {"channel": "email", "consentSource": ConsentSource.UNSUBSCRIBE_LINK, **evidence},
        }
    ]


def page(title: str, text: str, button: bool) -> str:
    """The unsubscribe page: a short text and, when `button`, the one-click form that confirms."""
    form = (
        f'<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click">'
        f'<button type="submit">{html.escape(title)}</button></form>'
        if button
        else ""
    )
    return (
        '<!doctype html><html><head><meta charset="utf-8"><meta name="robots" content="noindex">'
        f"<title>{html.escape(title)}</title></head>"
        f'<body style="font-family: sans-serif; max-width: 480px; margin: 4em auto;"><p>{html.escape(text)}</p>'
        f"{form}</body></html>"
    )
