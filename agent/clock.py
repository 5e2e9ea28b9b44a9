"""The one clock of the live agent, and a pacer that keeps an absolute schedule.

Every audio block and video frame carries ``pts``: an int count of audio samples since the
clock started (a frame's pts is the audio time it depicts), so lip sync holds by
construction. Wall time comes from ``time.monotonic_ns`` only; conversions to other time bases
(the 90 kHz RTP clock) happen at the edges.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

__all__ = ["MediaClock", "Pacer"]


class MediaClock:
    """Monotonic media time since ``start()``, in seconds and in audio samples.

    Args:
        sample_rate: the pts unit, samples per second.
        now_ns: the time source (injectable for tests).
    """

    def __init__(self, sample_rate: int = 16000, now_ns: Callable[[], int] = time.monotonic_ns) -> None:
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        self.sample_rate = sample_rate
        self._now_ns = now_ns
        self._start_ns: int | None = None

    def start(self) -> None:
        """Start the clock (once; starting again is an error, there is one timeline)."""
        if self._start_ns is not None:
            raise RuntimeError("MediaClock already started")
        self._start_ns = self._now_ns()

    @property
    def started(self) -> bool:
        return self._start_ns is not None

    def seconds(self) -> float:
        """Seconds since start."""
        if self._start_ns is None:
            raise RuntimeError("MediaClock not started")
        return (self._now_ns() - self._start_ns) * 1e-9

    def pts(self) -> int:
        """Audio samples since start."""
        return int(self.seconds() * self.sample_rate)

    def pts_to_seconds(self, pts: int) -> float:
        return pts / self.sample_rate

    def seconds_to_pts(self, seconds: float) -> int:
        return round(seconds * self.sample_rate)

    def to_rtp(self, pts: int, rate: int = 90_000) -> int:
        """A pts in another clock rate (RTP video is 90 kHz), for the edge of the pipeline."""
        return pts * rate // self.sample_rate


class Pacer:
    """Waits for the next tick of an absolute schedule ``t0 + k * period``.

    When more than ``tolerance_s`` late it re-anchors at now and counts the ticks it skipped,
    instead of bursting to catch up.
    """

    def __init__(
        self,
        clock: MediaClock,
        period_s: float,
        *,
        tolerance_s: float | None = None,
        sleep: Callable[[float], object] = asyncio.sleep,
    ) -> None:
        if period_s <= 0:
            raise ValueError(f"period_s must be positive, got {period_s}")
        self.clock = clock
        self.period_s = period_s
        self.tolerance_s = period_s if tolerance_s is None else tolerance_s
        self._sleep = sleep
        self._next: float | None = None
        self.skipped = 0

    async def wait(self) -> float:
        """Sleep until the next tick; returns the tick's scheduled time (clock seconds)."""
        now = self.clock.seconds()
        if self._next is None:
            self._next = now
        late = now - self._next
        if late > self.tolerance_s:
            missed = int(late // self.period_s)
            self.skipped += missed
            self._next += missed * self.period_s
        elif late < 0:
            await self._sleep(-late)  # type: ignore[misc]
        tick = self._next
        self._next += self.period_s
        return tick
