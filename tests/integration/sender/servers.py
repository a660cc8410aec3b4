"""Local stand-ins the sender delivers to in tests: an aiosmtpd server counting what it received."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import orjson
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP


@dataclass
class Mailbox:
    """Every message the server accepted; `answer` may refuse a recipient (return an SMTP reply)."""

    messages: list[EmailMessage] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    answer: Callable[[str], str | None] = lambda recipient: None
    data_answer: Callable[[EmailMessage], str | None] = lambda message: None

    async def handle_RCPT(self, server: SMTP, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        refusal = self.answer(address)
        if refusal:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.original_content or envelope.content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        refusal = self.data_answer(message)
        if refusal:
            return refusal
        with self.lock:
            self.messages.append(message)
        return "250 OK: queued"

    def trigger_ids(self) -> Counter[str]:
        with self.lock:
            return Counter(orjson.loads(str(m["X-SMTPAPI"]))["unique_args"]["trigger_id"] for m in self.messages)

    def count(self) -> int:
        with self.lock:
            return len(self.messages)


class SmtpServer:
    def __init__(self, port: int) -> None:
        self.mailbox = Mailbox()
        # No command limit: the sender sends many messages on one connection.
        self.controller = Controller(self.mailbox, hostname="127.0.0.1", port=port, command_call_limit=None)
        self.port = port

    def __enter__(self) -> SmtpServer:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()
