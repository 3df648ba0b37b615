"""Time, injectable: production code never calls ``time.time``/``asyncio.sleep`` directly on paths that
tests need to control (scrape intervals, backoff, token expiry), it asks a :class:`Clock`."""

from __future__ import annotations

import asyncio
import math
import random
import time
from typing import Protocol

# The shortest delay a backoff ever waits: a configured 0 (or a negative value that slipped past
# validation) must not turn retries into a busy loop.
MIN_BACKOFF = 0.01


class Clock(Protocol):
    """Where time comes from."""

    def time(self) -> float:
        """Wall-clock seconds since the epoch (sample timestamps)."""
        ...

    def monotonic(self) -> float:
        """Monotonic seconds (durations, deadlines)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Sleep for ``seconds`` (returns at once for ``seconds <= 0``)."""
        ...


class SystemClock:
    """The real clock."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        if math.isnan(seconds) or seconds <= 0:
            await asyncio.sleep(0)
        elif math.isinf(seconds):
            # asyncio's timer heap cannot hold an infinite deadline: wait until cancelled.
            await asyncio.get_running_loop().create_future()
        else:
            await asyncio.sleep(seconds)


SYSTEM_CLOCK = SystemClock()


class Backoff:
    """Exponential backoff with jitter: attempt n waits ``min(max, min * 2**n)`` scaled by [0.5, 1.0).

    Never returns less than :data:`MIN_BACKOFF` seconds, whatever ``minimum`` and ``maximum`` say.
    """

    def __init__(self, minimum: float, maximum: float, rng: random.Random | None = None) -> None:
        self.minimum = _finite_at_least(minimum, MIN_BACKOFF)
        self.maximum = max(self.minimum, _finite_at_least(maximum, self.minimum))
        self.attempt = 0
        self._rng = rng or random.Random()

    def next(self) -> float:
        """The next delay; grows until it reaches the cap."""
        delay = min(self.maximum, self.minimum * (2.0 ** min(self.attempt, 62)))
        self.attempt += 1
        # Jitter spreads the retries of many agents after a shared backend outage.
        return max(MIN_BACKOFF, delay * (0.5 + 0.5 * self._rng.random()))

    def reset(self) -> None:
        self.attempt = 0


def _finite_at_least(value: float, floor: float) -> float:
    if math.isnan(value) or value < floor:
        return floor
    return value if math.isfinite(value) else 3600.0


async def wait_event(event: asyncio.Event, seconds: float | None, clock: Clock) -> bool:
    """Wait until ``event`` is set or ``seconds`` passed on ``clock``; True if the event was set."""
    if event.is_set():
        return True
    if seconds is None:
        await event.wait()
        return True
    waiter = asyncio.ensure_future(event.wait())
    sleeper = asyncio.ensure_future(clock.sleep(seconds))
    try:
        await asyncio.wait({waiter, sleeper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        sleeper.cancel()
    return event.is_set()
