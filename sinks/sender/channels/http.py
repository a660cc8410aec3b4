"""An HTTP POST whose last body byte waits for the commit (see `sinks/sender/channels/__init__.py`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

import aiohttp

from sinks.sender.channels import Commit, ProviderError, Unconfirmed


@dataclass(frozen=True)
class Answer:
    """A provider's answer to an HTTP request."""

    status: int
    headers: Mapping[str, str]
    body: bytes


async def post_committed(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    commit: Commit,
    timeout: float,  # noqa: ASYNC109  (aiohttp's own timeout, so the commit is not cut short)
    auth: aiohttp.BasicAuth | None = None,
) -> Answer:
    """POST `body`, holding its last byte until `commit()` returns; the answer, or ProviderError (not
    committed, or refused) or Unconfirmed (committed, no answer)."""
    committed = False
    refusal: BaseException | None = None  # what commit() raised: the request is then abandoned unfinished

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal committed, refusal
        yield body[:-1]
        try:
            await commit()
        except BaseException as error:
            refusal = error
            raise
        committed = True
        yield body[-1:]

    # An explicit Content-Length keeps aiohttp from chunking, so the server waits for that last byte.
    sent_headers = {**headers, "Content-Length": str(len(body))}
    try:
        async with session.post(
            url, data=chunks(), headers=sent_headers, auth=auth, timeout=aiohttp.ClientTimeout(total=timeout)
        ) as response:
            return Answer(response.status, dict(response.headers), await response.read())
    except (aiohttp.ClientError, TimeoutError, OSError) as error:
        if refusal is not None:
            raise refusal from None
        if committed:
            raise Unconfirmed(f"no answer after the request was complete: {type(error).__name__}: {error}") from None
        raise ProviderError(f"{type(error).__name__}: {error}"[:500], retryable=True) from None
