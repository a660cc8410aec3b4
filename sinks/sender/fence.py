"""The fence a sender passes just before the last byte of a send: proof it still holds its partitions.

A sender that stalled (a long pause, a frozen VM, a lost network) can be dropped from its consumer group
and its partitions given to another sender without it noticing until its next heartbeat. Such a zombie
still has sends that reach their commit. An offset commit carries the member id and the generation of
the group, and the broker refuses it from a member the group has moved on from, so a commit accepted
after the `committed` record was acknowledged proves that the next owner, which reads the ledger only
once the group moved on, will see that record and not send the nudge again.

One commit answers every send waiting at the time it is made (sends that arrive while it is under way
wait for the next one), so the fence costs one round trip per batch of commits, not per message.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable


class Fenced(Exception):
    """This sender is no longer the owner the group knows: it must not send."""


class Fence:
    def __init__(self, check: Callable[[], Awaitable[None]]) -> None:
        self.check = check  # raises Fenced (moved on from) or any other error (could not tell)
        self.waiting: asyncio.Future[None] | None = None
        self.runner: asyncio.Task[None] | None = None

    async def confirm(self) -> None:
        """Return once a check that began after this call passed; raise what it raised."""
        if self.waiting is None:
            self.waiting = asyncio.get_running_loop().create_future()
            self.waiting.add_done_callback(_retrieved)
            if self.runner is None or self.runner.done():
                self.runner = asyncio.create_task(self._run())
        await asyncio.shield(self.waiting)

    async def _run(self) -> None:
        while self.waiting is not None:
            answered, self.waiting = self.waiting, None
            try:
                await self.check()
            except asyncio.CancelledError:
                answered.cancel()
                raise
            except Exception as error:
                answered.set_exception(error)
            else:
                answered.set_result(None)

    async def close(self) -> None:
        if self.runner is not None and not self.runner.done():
            self.runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.runner


def _retrieved(future: asyncio.Future[None]) -> None:
    # Every waiter may have been cancelled; the error is theirs to see, not the event loop's to report.
    if not future.cancelled():
        future.exception()
