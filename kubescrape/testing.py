"""Test helpers shipped with the library (like trio.testing): a fake clock that never really sleeps."""

from __future__ import annotations

import asyncio
import heapq
import itertools


class FakeClock:
    """A clock that moves only when told to.

    With ``autojump=True`` (the default) every ``sleep`` advances time by its duration at once and
    yields to the event loop, so code with timeouts and backoff runs in microseconds. With
    ``autojump=False`` sleepers wait until :meth:`advance` moves time past their deadline.
    """

    def __init__(self, start: float = 1_700_000_000.0, *, autojump: bool = True) -> None:
        self._wall0 = start
        self._now = 0.0
        self.autojump = autojump
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self.slept: list[float] = []

    def time(self) -> float:
        return self._wall0 + self._now

    def monotonic(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        self.slept.append(seconds)
        if self.autojump:
            self._now += seconds
            self._wake()
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._seq), fut))
        await fut

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every sleeper whose deadline has passed."""
        self._now += seconds
        self._wake()

    def _wake(self) -> None:
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)
