"""The fence answers every send waiting with one check, never with a check that began before it asked."""

from __future__ import annotations

import asyncio

import pytest

from sinks.sender.fence import Fence, Fenced


async def test_sends_waiting_together_share_one_check_and_a_later_one_waits_for_the_next() -> None:
    started: list[int] = []
    release = asyncio.Event()

    async def check() -> None:
        started.append(len(started))
        await release.wait()

    fence = Fence(check)
    first = [asyncio.create_task(fence.confirm()) for _ in range(5)]
    await asyncio.sleep(0.01)
    assert started == [0]  # one check for the five
    late = asyncio.create_task(fence.confirm())  # asked while that check was under way
    await asyncio.sleep(0.01)
    release.set()
    await asyncio.gather(*first)
    assert not late.done() or len(started) == 2
    await late
    assert started == [0, 1]
    await fence.close()


async def test_a_refusal_reaches_every_send_waiting_on_that_check() -> None:
    async def check() -> None:
        raise Fenced("the group moved on")

    fence = Fence(check)
    results = await asyncio.gather(*(fence.confirm() for _ in range(3)), return_exceptions=True)
    assert [type(result) for result in results] == [Fenced] * 3
    with pytest.raises(Fenced):
        await fence.confirm()  # and the next send asks again
