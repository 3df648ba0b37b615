"""Time, injectable: production code never calls ``time.time``/``asyncio.sleep`` directly on paths that
tests need to control (scrape intervals, backoff, token expiry), it asks a :class:`Clock`."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


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
        await asyncio.sleep(max(0.0, seconds))


SYSTEM_CLOCK = SystemClock()
