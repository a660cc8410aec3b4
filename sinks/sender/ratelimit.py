"""A per-provider token bucket: at most `per_second` sends a second, with bursts of up to one second's worth."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class RateLimiter:
    """A token bucket: at most `per_second` acquisitions a second, waiters served in turn."""

    def __init__(self, per_second: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_second = per_second
        self.capacity = max(1.0, per_second)
        self.tokens = self.capacity
        self.clock = clock
        self.updated = clock()
        self.lock = asyncio.Lock()  # waiters are served in arrival order

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.per_second)
        self.updated = now

    async def acquire(self) -> None:
        async with self.lock:
            self._refill()
            while self.tokens < 1.0:
                await asyncio.sleep((1.0 - self.tokens) / self.per_second)
                self._refill()
            self.tokens -= 1.0
