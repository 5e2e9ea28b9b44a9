"""MediaClock and Pacer on a fake time source."""

from __future__ import annotations

import asyncio

import pytest

from agent.clock import MediaClock, Pacer


class FakeTime:
    def __init__(self) -> None:
        self.ns = 1_000_000_000
        self.slept: list[float] = []

    def now(self) -> int:
        return self.ns

    def advance(self, seconds: float) -> None:
        self.ns += round(seconds * 1e9)

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.advance(seconds)


def test_clock_counts_samples_from_start() -> None:
    t = FakeTime()
    clock = MediaClock(16000, now_ns=t.now)
    with pytest.raises(RuntimeError, match="not started"):
        clock.pts()
    clock.start()
    t.advance(0.5)
    assert clock.pts() == 8000 and clock.seconds() == pytest.approx(0.5)
    assert clock.to_rtp(16000) == 90_000 and clock.seconds_to_pts(0.02) == 320
    with pytest.raises(RuntimeError, match="already"):
        clock.start()


def test_pacer_keeps_an_absolute_schedule_and_counts_skips() -> None:
    t = FakeTime()
    clock = MediaClock(16000, now_ns=t.now)
    clock.start()
    pacer = Pacer(clock, 0.04, sleep=t.sleep)

    async def run() -> list[float]:
        ticks = [await pacer.wait()]
        t.advance(0.01)  # work took 10 ms: sleep the remaining 30
        ticks.append(await pacer.wait())
        t.advance(0.05)  # 10 ms late: within tolerance, no sleep, no skip
        ticks.append(await pacer.wait())
        t.advance(0.2)  # far behind: re-anchor, count the skipped ticks
        ticks.append(await pacer.wait())
        return ticks

    ticks = asyncio.run(run())
    assert ticks[:3] == pytest.approx([0.0, 0.04, 0.08])
    assert t.slept[0] == pytest.approx(0.03)
    assert pacer.skipped == 4 and ticks[3] == pytest.approx(0.28)
