"""Bounded real-time queues: the producer never waits, the oldest item gives way.

``DropOldestQueue`` carries audio blocks and features (a slow consumer loses the oldest, counted
and warned about at most once a second); ``LatestSlot`` hands each sink only the newest frame,
like aiortc's ``MediaRelay(buffered=False)``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import Generic, TypeVar

__all__ = ["Broadcast", "DropOldestQueue", "LatestSlot"]

T = TypeVar("T")
log = logging.getLogger(__name__)


class DropOldestQueue(Generic[T]):
    """An asyncio queue of at most ``maxsize`` items; putting into a full queue drops the oldest.

    Call ``put_nowait`` from the event loop's thread (from another thread, go through
    ``loop.call_soon_threadsafe``).
    """

    def __init__(self, maxsize: int, name: str = "queue") -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        self.maxsize = maxsize
        self.name = name
        self.dropped = 0
        self._items: collections.deque[T] = collections.deque()
        self._ready = asyncio.Event()
        self._last_warning = -1e9

    def __len__(self) -> int:
        return len(self._items)

    def put_nowait(self, item: T) -> None:
        if len(self._items) >= self.maxsize:
            self._items.popleft()
            self.dropped += 1
            now = time.monotonic()
            if now - self._last_warning >= 1.0:
                self._last_warning = now
                log.warning("%s: consumer too slow, %d items dropped so far", self.name, self.dropped)
        self._items.append(item)
        self._ready.set()

    async def get(self) -> T:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()


class LatestSlot(Generic[T]):
    """Holds only the newest item; a reader waits for one newer than the last it took."""

    def __init__(self) -> None:
        self._item: T | None = None
        self._version = 0
        self._changed = asyncio.Condition()
        self.overwritten = 0
        self._taken = 0

    async def put(self, item: T) -> None:
        async with self._changed:
            if self._version > self._taken:
                self.overwritten += 1  # the reader never saw the previous one
            self._item = item
            self._version += 1
            self._changed.notify_all()

    async def get(self) -> T:
        async with self._changed:
            await self._changed.wait_for(lambda: self._version > self._taken)
            self._taken = self._version
            assert self._item is not None
            return self._item


class Broadcast(Generic[T]):
    """Fan-out: every subscriber gets every item through its own ``DropOldestQueue``, so a slow
    subscriber loses its own oldest items and never holds up the publisher or the others."""

    def __init__(self, name: str = "broadcast") -> None:
        self.name = name
        self._subscribers: list[DropOldestQueue[T]] = []
        self.dropped_gone = 0  # drops of subscribers that have left

    def subscribe(self, maxsize: int = 2, name: str | None = None) -> DropOldestQueue[T]:
        queue: DropOldestQueue[T] = DropOldestQueue(maxsize, name or f"{self.name} subscriber")
        self._subscribers.append(queue)
        return queue

    def unsubscribe(self, queue: DropOldestQueue[T]) -> None:
        if queue in self._subscribers:
            self._subscribers.remove(queue)
            self.dropped_gone += queue.dropped

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    @property
    def dropped(self) -> int:
        """Items dropped by slow subscribers, present and past."""
        return self.dropped_gone + sum(q.dropped for q in self._subscribers)

    def publish(self, item: T) -> None:
        for queue in self._subscribers:
            queue.put_nowait(item)
