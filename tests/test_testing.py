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


async def test_autojump_wakes_concurrent_sleepers_at_their_own_deadlines() -> None:
    clock = FakeClock()
    woke: dict[str, float] = {}

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke[name] = clock.monotonic()

    await asyncio.gather(sleeper("ten", 10), sleeper("one", 1), sleeper("five", 5))
    assert woke == {"one": 1, "five": 5, "ten": 10}
    assert list(woke) == ["one", "five", "ten"]


async def test_autojump_waits_while_other_tasks_can_run() -> None:
    clock = FakeClock()
    steps = 0

    async def busy() -> None:
        nonlocal steps
        for _ in range(10):
            steps += 1
            await asyncio.sleep(0)

    async def timeout() -> float:
        await clock.sleep(3)
        return clock.monotonic()

    worker = asyncio.create_task(busy())
    assert await timeout() == 3
    assert steps == 10, "time jumped only once the busy task had nothing left to do"
    await worker


async def test_cancelled_sleeper_does_not_move_time() -> None:
    clock = FakeClock()
    sleeper = asyncio.create_task(clock.sleep(100))
    await asyncio.sleep(0)
    sleeper.cancel()
    await asyncio.sleep(0)
    await clock.sleep(2)
    assert clock.monotonic() == 2
