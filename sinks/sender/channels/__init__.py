"""The providers a nudge goes out through, behind one contract: `send(message, commit)`.

A channel prepares the whole request first and awaits `commit()` just before the one write that makes it
irrevocable: the final `.` line of an SMTP DATA, or the last byte of an HTTP body. The ledger records
"committed" inside `commit()` and waits for the broker. Until then the provider holds an incomplete request,
which it discards if the sender dies, so a nudge without a committed record can be sent again safely; once
committed it never is (docs/architecture.md, "Delivery").
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from sinks.sender.messages import OutgoingEmail, OutgoingSms

Commit = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class Accepted:
    """The provider took the message; its id for it, when it gives one."""

    provider_message_id: str | None = None


class ProviderError(Exception):
    """The provider refused (or could not be reached): `retryable` says whether another attempt may help.

    Raised before the commit, or after it when the provider answered with a refusal: either way the
    provider did not take the message, so a retry sends it at most once."""

    def __init__(self, reason: str, *, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.retry_after = retry_after


class Unconfirmed(Exception):
    """Committed, then no answer: the provider may have the message, so it is never sent again."""


class EmailChannel(Protocol):
    """A way of sending email; `send` calls `commit` just before the request is complete."""

    provider: str

    async def send(self, message: OutgoingEmail, commit: Commit) -> Accepted: ...

    async def close(self) -> None: ...


class SmsChannel(Protocol):
    """A way of sending SMS; `send` calls `commit` just before the request is complete."""

    provider: str

    async def send(self, message: OutgoingSms, commit: Commit) -> Accepted: ...

    async def close(self) -> None: ...


def classify_http(status: int, reason: str, retry_after: str | None = None) -> ProviderError:
    """An HTTP provider's refusal: 408, 429 and 5xx are worth another try, any other 4xx is not."""
    seconds: float | None = None
    if retry_after:
        try:
            seconds = max(0.0, min(float(retry_after), 300.0))
        except ValueError:
            seconds = None
    retryable = status in (408, 429) or status >= 500
    return ProviderError(f"HTTP {status}: {reason}"[:500], retryable=retryable, retry_after=seconds)
