from __future__ import annotations

import asyncio

from kubescrape.clock import SYSTEM_CLOCK
from kubescrape.testing import FakeClock


async def test_autojump_sleeps_advance_time_at_once() -> None:
    clock = FakeClock(start=1000.0)
    await clock.sleep(30)
    await clock.sleep(-1)  # negative sleeps are zero
    assert clock.monotonic() == 30
    assert clock.time() == 1030.0
    assert clock.slept == [30, 0.0]


async def test_manual_clock_wakes_sleepers_in_deadline_order() -> None:
    clock = FakeClock(autojump=False)
    woke: list[str] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append(name)

    tasks = [asyncio.create_task(sleeper("late", 5)), asyncio.create_task(sleeper("early", 1))]
    await asyncio.sleep(0)
    clock.advance(2)
    await asyncio.sleep(0)
    assert woke == ["early"]
    clock.advance(3)
    await asyncio.gather(*tasks)
    assert woke == ["early", "late"]


async def test_system_clock_is_real_time() -> None:
    t0 = SYSTEM_CLOCK.monotonic()
    await SYSTEM_CLOCK.sleep(0.01)
    assert SYSTEM_CLOCK.monotonic() - t0 >= 0.009
    assert SYSTEM_CLOCK.time() > 1.7e9
