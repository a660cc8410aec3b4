"""Email through an SMTP server: the standard library's smtplib, each connection used by one thread at a time.

smtplib rather than an asyncio client because it lets the DATA be split where the commit must go, with
its public calls only: `docmd("DATA")`, `send(body)`, then - once the ledger has the commit - `send(".")`
and `getreply()`. A server delivers nothing whose DATA did not end with that line, so a sender that dies
before it leaves nothing behind. Connections stay open between messages (`smtp_connections` of them).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import smtplib
import ssl
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from schemas.settings import SenderSettings
from sinks.sender.channels import Accepted, Commit, ProviderError, Unconfirmed
from sinks.sender.messages import OutgoingEmail

T = TypeVar("T")
_LEADING_DOT = re.compile(rb"(?m)^\.")
_LINE_ENDS = re.compile(rb"\r\n|\r|\n")


def data_payload(message: bytes) -> bytes:
    """The message as the DATA lines go on the wire, without the final "." line: CRLF line ends, a line
    that starts with "." doubled (RFC 5321 4.5.2), ending with CRLF."""
    lines = _LINE_ENDS.sub(b"\r\n", message)
    if not lines.endswith(b"\r\n"):
        lines += b"\r\n"
    return _LEADING_DOT.sub(b"..", lines)


def _reply(code: int, text: bytes | str) -> str:
    words = text.decode(errors="replace") if isinstance(text, bytes) else text
    return f"{code} {' '.join(words.split())}"[:300]


def _refused(step: str, code: int, text: bytes | str) -> ProviderError:
    # 4xx is transient by definition (RFC 5321 4.2.1); 5xx will fail the same way again.
    return ProviderError(f"SMTP {step}: {_reply(code, text)}", retryable=400 <= code < 500)


class SmtpChannel:
    """Email through an SMTP server, over a pool of connections kept open in threads."""

    provider = "smtp"

    def __init__(self, settings: SenderSettings) -> None:
        if not settings.from_email:
            raise ValueError("set NUDGEFLOW_SENDER__FROM_EMAIL to send email")
        self.settings = settings
        self.from_email = settings.from_email
        self.executor = ThreadPoolExecutor(settings.smtp_connections, thread_name_prefix="smtp")
        self.idle: asyncio.LifoQueue[smtplib.SMTP | None] = asyncio.LifoQueue()
        for _ in range(settings.smtp_connections):
            self.idle.put_nowait(None)  # a free slot, connected on first use

    async def _in_thread(self, function: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, function, *args)

    def _connect(self) -> smtplib.SMTP:
        settings = self.settings
        timeout = settings.request_timeout_seconds
        context = ssl.create_default_context()
        connection: smtplib.SMTP
        if settings.smtp_security == "tls":
            connection = smtplib.SMTP_SSL(settings.smtp_host, settings.smtp_port, timeout=timeout, context=context)
        else:
            connection = smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=timeout)
        connection.ehlo()
        if settings.smtp_security == "starttls":
            connection.starttls(context=context)
            connection.ehlo()
        if settings.smtp_user:
            password = settings.smtp_password.get_secret_value() if settings.smtp_password else ""
            connection.login(settings.smtp_user, password)
        return connection

    def _prepare(
        self, connection: smtplib.SMTP | None, message: OutgoingEmail, payload: bytes
    ) -> tuple[smtplib.SMTP | None, ProviderError | None]:
        """Connect if needed, then MAIL, RCPT, DATA and every line but the final ".": (the connection, None),
        or (the connection if still usable, why it was refused)."""
        for fresh in (False, True):
            try:
                if connection is None:
                    connection, fresh = self._connect(), True
                code, text = connection.mail(self.from_email)
                break
            except (smtplib.SMTPServerDisconnected, ConnectionError) as error:
                _close(connection)
                connection = None
                if fresh:  # a new connection failing is the server's answer, not an idle one timed out
                    return None, ProviderError(f"SMTP connection lost: {error}", retryable=True)
            except smtplib.SMTPAuthenticationError as error:
                _close(connection)
                reply = _reply(error.smtp_code, error.smtp_error)
                return None, ProviderError(f"SMTP login refused: {reply}", retryable=False)
            except (smtplib.SMTPException, OSError) as error:
                _close(connection)
                return None, ProviderError(f"SMTP connection failed: {type(error).__name__}: {error}", retryable=True)
        assert connection is not None
        try:
            if code != 250:
                connection.rset()
                return connection, _refused("MAIL FROM", code, text)
            code, text = connection.rcpt(message.to)
            if code not in (250, 251):
                connection.rset()
                return connection, _refused("RCPT TO", code, text)
            code, text = connection.docmd("DATA")
            if code != 354:
                connection.rset()
                return connection, _refused("DATA", code, text)
            connection.send(payload)
        except (smtplib.SMTPException, OSError) as error:
            _close(connection)
            return None, ProviderError(
                f"SMTP failed before the commit: {type(error).__name__}: {error}", retryable=True
            )
        return connection, None

    @staticmethod
    def _finish(connection: smtplib.SMTP) -> tuple[int, bytes]:
        connection.send(b".\r\n")
        return connection.getreply()

    async def send(self, message: OutgoingEmail, commit: Commit) -> Accepted:
        payload = data_payload(message.mime())
        connection = await self.idle.get()
        reusable: smtplib.SMTP | None = None
        try:
            connection, refusal = await self._in_thread(self._prepare, connection, message, payload)
            if refusal is not None:
                reusable, connection = connection, None
                raise refusal
            assert connection is not None
            await commit()  # on failure or cancellation the DATA stays unfinished and the connection is closed
            try:
                code, text = await self._in_thread(self._finish, connection)
            except (smtplib.SMTPException, OSError) as error:
                raise Unconfirmed(f"no SMTP answer after the final line: {type(error).__name__}: {error}") from None
            if code != 250:
                reusable = connection
                raise _refused("end of DATA", code, text)
            reusable = connection
            return Accepted(_reply(code, text))
        finally:
            if reusable is None and connection is not None:
                self.executor.submit(_close, connection)
            self.idle.put_nowait(reusable)

    async def close(self) -> None:
        while not self.idle.empty():
            connection = self.idle.get_nowait()
            if connection is not None:
                await self._in_thread(_quit, connection)
        self.executor.shutdown(wait=False)


def _close(connection: smtplib.SMTP | None) -> None:
    if connection is not None:
        with contextlib.suppress(OSError):
            connection.close()


def _quit(connection: smtplib.SMTP) -> None:
    try:
        connection.quit()
    except (smtplib.SMTPException, OSError):
        connection.close()
