"""Double opt-in's confirmation link: `POST /confirm/{person_id}/{token}` from the page a recipient opens from
the confirmation email, with a token the sender signed (`schemas.consent.make_confirmation_token`).

A POST puts the confirmation on the events topic: an identify opting the person's email in, with the source
`confirmation_link`, the confirmation it answers and the request's address and user agent, which the core
accepts only for the confirmation it is waiting for (streams/rules/consent.py). A GET only shows the page with
the button: link scanners and previews fetch every link of a message, so a GET must never confirm anything.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from schemas.consent import read_confirmation_token
from schemas.profile import ConsentSource, ConsentState
from schemas.signed_links import InvalidToken


class AnotherPerson(InvalidToken):
    """A valid token on the link of someone else than the person it was signed for."""


def confirmation_documents(
    person_id: str, token: str, hash_key: bytes, received_at: datetime, evidence: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """The event one confirmation puts on the topic; InvalidToken (ForgedToken, ExpiredToken, AnotherPerson)
    for a link that does not confirm this person."""
    confirmation = read_confirmation_token(token, hash_key, received_at)
    if confirmation.person_id != person_id or confirmation.channel != "email":
        raise AnotherPerson("the link confirms someone else's subscription")
    # One id per token: a second press is a duplicate, not a new confirmation.
    message_id = "confirm:" + hashlib.sha256(token.encode()).hexdigest()[:32]
    return [
        {
            "type": "identify",
            "userId": confirmation.person_id,
            "timestamp": received_at.isoformat(),
            "messageId": message_id,
            "traits": {"email_consent": ConsentState.OPTED_IN.value},
            "properties": {"trigger_id": confirmation.confirmation_id},
            "context": {"channel": "email", "consentSource": ConsentSource.CONFIRMATION_LINK.value, **(evidence or {})},
        }
    ]
