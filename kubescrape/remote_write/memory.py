"""The in-memory backlog of one writer (spool off): bounded, with back-pressure, then counted drops.

``put`` waits while the backlog holds ``capacity`` samples (unsent plus in flight); if no room frees
up within ``block_timeout`` (the backend is down, not merely slow), the oldest unsent records are
dropped and counted as ``samples_dropped{reason="queue_full"}``, so a dead writer cannot stall scraping
forever. The accounting is the shared :class:`~kubescrape.remote_write.ledger.Fifo`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from kubescrape.clock import Clock, wait_event
from kubescrape.remote_write import Chunk
from kubescrape.remote_write.ledger import Fifo, Record, WriterCounters


def _size(chunks: Sequence[Chunk]) -> int:
    return sum(len(c.data) for c in chunks)


class MemoryBacklog:
    """A bounded in-memory backlog (implements :class:`~kubescrape.remote_write.ledger.Backlog`)."""

    def __init__(self, capacity: int, *, clock: Clock, block_timeout: float,
                 counters: WriterCounters | None = None) -> None:
        self.capacity = max(1, capacity)
        self.clock = clock
        self.block_timeout = block_timeout
        self.counters = counters or WriterCounters("memory")
        self.fifo: Fifo[Record] = Fifo(self.counters)
        self.data_ready = asyncio.Event()
        self._room = asyncio.Event()
        self._bytes = 0
        self._seq = 0
        self._waiting = 0

    @property
    def blocked(self) -> bool:
        return self._waiting > 0

    async def put(self, chunks: Sequence[Chunk]) -> None:
        n = sum(c.samples for c in chunks)
        deadline = self.clock.monotonic() + self.block_timeout
        while self.pending_samples > 0 and self.pending_samples + n > self.capacity:
            remaining = deadline - self.clock.monotonic()
            if remaining > 0:
                self._room.clear()
                self._waiting += 1
                self.data_ready.set()  # the dispatcher must not wait for a flush deadline now
                try:
                    await wait_event(self._room, remaining, self.clock)
                finally:
                    self._waiting -= 1
                continue
            if not self.fifo.unread:
                break  # only in-flight data is left: it frees itself, overshoot is bounded by one round
            self._bytes -= _size(self.fifo.drop_oldest("queue_full").chunks)
        self._seq += 1
        self.fifo.push(Record(self._seq, n, self.clock.time(), tuple(chunks)))
        self._bytes += _size(chunks)
        self.data_ready.set()

    def take(self, max_samples: int) -> list[Record]:
        out = self.fifo.peek(max_samples)
        self.fifo.start_flight(out)
        return out

    def ack(self, records: Sequence[Record], *, sent: int | None = None,
            dropped: Mapping[str, int] | None = None) -> None:
        for rec in self.fifo.ack(records, sent=sent, dropped=dropped):
            self._bytes -= _size(rec.chunks)
        self._room.set()

    def release(self) -> None:
        self.fifo.release()

    def drop_pending(self, reason: str) -> int:
        """Give up everything still here (shutdown without a spool); counted. Returns the samples."""
        self._bytes = 0
        n = self.fifo.drop_all(reason)
        self._room.set()
        return n

    @property
    def unread_samples(self) -> int:
        return self.fifo.unread_samples

    @property
    def pending_samples(self) -> int:
        return self.fifo.pending_samples

    @property
    def bytes(self) -> int:
        return self._bytes

    @property
    def memory_bytes(self) -> int:
        """All of :attr:`bytes`: every record waits in memory."""
        return self._bytes

    def oldest_ts(self) -> float | None:
        return self.fifo.oldest_ts()

    async def close(self) -> None:
        return None
