"""Running the real sink inside a test until the tables show what the test waits for."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from sinks.clickhouse.writer import ClickHouseSink


async def sink_while(sink: ClickHouseSink, done: Callable[[], bool], within: float = 60) -> None:
    """Run the sink until `done()` holds (checked in a thread: it may query chDB)."""
    task = asyncio.create_task(sink.run())
    deadline = time.monotonic() + within
    try:
        while time.monotonic() < deadline and not task.done():
            await asyncio.sleep(0.3)
            if await asyncio.to_thread(done):
                return
        raise AssertionError(f"sink did not finish in {within}s; stats {sink.stats}")
    finally:
        sink.stop()
        await task
