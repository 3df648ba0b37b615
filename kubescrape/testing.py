"""Test helpers shipped with the library (like trio.testing): a fake clock that never really sleeps."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math

# Event-loop iterations after which the autojump moves on even though tasks keep running (a test that
# spins on ``asyncio.sleep(0)`` waiting for a sleeper, or a loop whose run queue it cannot see): it
# still jumps only to the earliest deadline, so sleepers keep waking in deadline order.
_BUSY_ROUNDS = 16


class FakeClock:
    """A clock that moves only when told to, or when every task waits (trio's ``MockClock`` model).

    Sleepers wake in deadline order: ``sleep(10)`` and ``sleep(1)`` started together wake at 1 and 10.
    With ``autojump=True`` (the default) the clock jumps to the earliest deadline whenever the event loop
    has nothing else to run (or has kept running for a few loop iterations), so code with timeouts and
    backoff runs in microseconds, and a timeout fires only if the awaited thing did not happen first.
    With ``autojump=False`` sleepers wait until :meth:`advance` moves time past their deadline.
    """

    def __init__(self, start: float = 1_700_000_000.0, *, autojump: bool = True) -> None:
        self._wall0 = start
        self._now = 0.0
        self.autojump = autojump
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._watching = False
        self._idle = 0
        self.slept: list[float] = []

    def time(self) -> float:
        return self._wall0 + self._now

    def monotonic(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if math.isnan(seconds) or seconds <= 0:
            self.slept.append(0.0)
            await asyncio.sleep(0)
            return
        self.slept.append(seconds)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._seq), fut))
        if self.autojump and not self._watching:
            self._watching = True
            self._idle = 0
            loop.call_soon(self._autojump, loop)
        await fut

    def advance(self, seconds: float) -> None:
        """Move time (tests may move it backwards too) and wake every sleeper whose deadline has passed."""
        self._now += seconds
        self._wake()

    def _wake(self) -> None:
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)

    def _autojump(self, loop: asyncio.AbstractEventLoop) -> None:
        """Runs as a loop callback while someone sleeps: jumps to the earliest deadline once idle."""
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)  # cancelled sleepers
        if not self._sleepers or not self.autojump:
            self._watching = False
            return
        ready = getattr(loop, "_ready", None)
        self._idle += 1
        if (ready is not None and len(ready) == 0) or self._idle >= _BUSY_ROUNDS:
            self._idle = 0
            self._now = max(self._now, self._sleepers[0][0])
            self._wake()
        loop.call_soon(self._autojump, loop)
