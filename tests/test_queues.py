"""Real-time queues: bounded, drop-oldest, newest-only."""

from __future__ import annotations

import asyncio

import pytest

from agent.queues import DropOldestQueue, LatestSlot


def test_drop_oldest_keeps_the_newest_and_counts() -> None:
    async def run() -> tuple[list[int], int]:
        q: DropOldestQueue[int] = DropOldestQueue(3, name="audio")
        for i in range(5):
            q.put_nowait(i)
        return [await q.get() for _ in range(3)], q.dropped

    items, dropped = asyncio.run(run())
    assert items == [2, 3, 4] and dropped == 2


def test_get_waits_for_a_put() -> None:
    async def run() -> int:
        q: DropOldestQueue[int] = DropOldestQueue(2)
        asyncio.get_running_loop().call_later(0.01, q.put_nowait, 7)
        return await asyncio.wait_for(q.get(), 1.0)

    assert asyncio.run(run()) == 7
    with pytest.raises(ValueError, match="maxsize"):
        DropOldestQueue(0)


def test_latest_slot_hands_over_only_the_newest() -> None:
    async def run() -> tuple[int, int, int]:
        slot: LatestSlot[int] = LatestSlot()
        await slot.put(1)
        await slot.put(2)  # the reader never saw 1
        first = await slot.get()
        reader = asyncio.create_task(slot.get())
        await asyncio.sleep(0.01)
        assert not reader.done()  # nothing newer yet
        await slot.put(3)
        return first, await asyncio.wait_for(reader, 1.0), slot.overwritten

    assert asyncio.run(run()) == (2, 3, 1)
