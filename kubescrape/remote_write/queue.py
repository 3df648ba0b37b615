"""Per-writer queues: a backlog (memory or spool), batching, dynamic shards, and the ``RemoteWrite`` sink.

Data flows scrape → :meth:`RemoteWrite.append` → each writer's backlog → that writer's dispatcher →
:class:`~kubescrape.remote_write.sender.Sender`. Every writer has its own backlog, dispatcher and
connection pool, so a dead backend never stalls another one.

**Rounds, shards and ordering.** A dispatcher works in *rounds*: it takes the oldest unsent records
(up to ``batch × shards`` samples, or what arrived within ``flush_deadline``), sends them as up to
``shards`` concurrent streams of requests of at most ``batch`` samples, waits for all of them, then
acknowledges the records. Rounds are sequential, so records are acknowledged strictly in append order:
the spool's ack cursor is a single number and replay after a restart resumes exactly where delivery
stopped. Within a round, series are split across shards by a hash of their labels (as Prometheus does),
so one series never travels in two concurrent requests: a receiver such as Prometheus rejects a whole
request if one of its samples is older than what it already has, so per-series order is essential.
With one shard (or a round of at most ``batch`` samples) nothing is parsed: chunks are sent as they are.
The cost of rounds is head-of-line blocking inside one writer (a slow request delays the next round);
that is the price of an ordered, single-cursor spool.

**Shard count.** After a round without retries, if at least another full round is already waiting the
backend is slower than arrivals: one more shard (up to ``max_shards``). After three consecutive rounds
that were less than half full, one shard fewer (down to ``min_shards``). Rounds with retries do not
grow the count: more parallel requests do not help a failing backend.

**Back-pressure without the spool.** The in-memory backlog holds at most ``queue_capacity`` samples
(unsent plus in flight). ``append`` waits for room; if none frees up within the writer's ``timeout``
(the backend is down, not merely slow), the oldest unsent records of that writer are dropped and
counted as ``samples_dropped{reason="queue_full"}``, so a dead writer cannot stall scraping forever.
With the spool on, ``queue_capacity`` is not used: the spool's byte limit bounds the backlog.
"""

from __future__ import annotations

import asyncio
import logging
import re
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Protocol

from kubescrape.clock import SYSTEM_CLOCK, Clock
from kubescrape.errors import ConfigError, RemoteWriteError
from kubescrape.remote_write import Chunk
from kubescrape.remote_write.sender import Sender
from kubescrape.selfmon import SelfMetrics

log = logging.getLogger("kubescrape.remote_write")


@dataclass(frozen=True)
class WriterSettings:
    """One remote-write backend and how to deliver to it.

    ``batch`` is the maximum number of samples per request; ``queue_capacity`` is the in-memory
    backlog limit in *samples* (unsent + in flight), used only without the spool.
    """

    url: str
    name: str
    headers: tuple[tuple[str, str], ...] = ()
    basic_auth: tuple[str, str] | None = None
    timeout: float = 5.0
    dial_timeout: float = 2.5
    batch: int = 2000
    queue_capacity: int = 10000
    min_shards: int = 1
    max_shards: int = 4
    max_backoff: float = 30.0
    min_backoff: float = 0.1
    flush_deadline: float = 1.0
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure_skip_verify: bool = False


class Record(NamedTuple):
    """What one ``append`` call handed to one writer: its chunks, in order, with a sequence number."""

    seq: int
    samples: int
    ts: float  # wall-clock seconds when appended (for the oldest-unsent age)
    chunks: tuple[Chunk, ...]


class Backlog(Protocol):
    """Where a writer's records wait until the backend acknowledged them (memory or spool)."""

    data_ready: asyncio.Event

    async def put(self, chunks: Sequence[Chunk]) -> None:
        """Accept the chunks (durably, for the spool); may wait for room."""
        ...

    def take(self, max_samples: int) -> list[Record]:
        """The oldest unread records (at least one if any), up to ``max_samples`` samples."""
        ...

    def ack(self, records: Sequence[Record]) -> None:
        """The backend has these records (the oldest taken ones, in order); forget them."""
        ...

    @property
    def unread_samples(self) -> int: ...

    @property
    def blocked(self) -> bool:
        """An ``append`` is waiting for room: send now rather than wait for more data."""
        ...

    @property
    def pending_samples(self) -> int:
        """Samples not yet acknowledged (unread + in flight)."""
        ...

    @property
    def bytes(self) -> int: ...

    def oldest_ts(self) -> float | None:
        """Append time of the oldest unacknowledged record."""
        ...

    async def close(self) -> None: ...


class MemoryBacklog:
    """A bounded in-memory backlog (spool off). See the module docstring for the back-pressure rule."""

    def __init__(self, capacity: int, *, clock: Clock, block_timeout: float,
                 on_drop: Callable[[int, str], None]) -> None:
        self.capacity = max(1, capacity)
        self.clock = clock
        self.block_timeout = block_timeout
        self.on_drop = on_drop
        self.data_ready = asyncio.Event()
        self._room = asyncio.Event()
        self._unread: deque[Record] = deque()
        self._inflight: deque[Record] = deque()
        self._unread_samples = 0
        self._inflight_samples = 0
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
            if not self._unread:
                break  # only in-flight data is left: it frees itself, overshoot is bounded by one round
            old = self._unread.popleft()
            self._unread_samples -= old.samples
            self._bytes -= sum(len(c.data) for c in old.chunks)
            self.on_drop(old.samples, "queue_full")
        self._seq += 1
        rec = Record(self._seq, n, self.clock.time(), tuple(chunks))
        self._unread.append(rec)
        self._unread_samples += n
        self._bytes += sum(len(c.data) for c in chunks)
        self.data_ready.set()

    def take(self, max_samples: int) -> list[Record]:
        out: list[Record] = []
        total = 0
        while self._unread and (not out or total + self._unread[0].samples <= max_samples):
            rec = self._unread.popleft()
            total += rec.samples
            out.append(rec)
        self._unread_samples -= total
        self._inflight_samples += total
        self._inflight.extend(out)
        return out

    def ack(self, records: Sequence[Record]) -> None:
        for rec in records:
            head = self._inflight.popleft()
            assert head.seq == rec.seq, "records are acknowledged in the order they were taken"
            self._inflight_samples -= rec.samples
            self._bytes -= sum(len(c.data) for c in rec.chunks)
        self._room.set()

    @property
    def unread_samples(self) -> int:
        return self._unread_samples

    @property
    def pending_samples(self) -> int:
        return self._unread_samples + self._inflight_samples

    @property
    def bytes(self) -> int:
        return self._bytes

    def oldest_ts(self) -> float | None:
        if self._inflight:
            return self._inflight[0].ts
        return self._unread[0].ts if self._unread else None

    async def close(self) -> None:
        return None


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


# --- splitting a round across shards by series ----------------------------------------------------


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


def iter_series(data: bytes) -> Iterator[tuple[int, int, int, int]]:
    """For each ``TimeSeries`` field of a chunk: (start, end, labels_end, samples).

    ``data[start:end]`` is the whole field (tag, length, body), ``data[start:labels_end]`` ends where
    the first non-label field begins, so it identifies the series. Raises ValueError on malformed input.
    """
    pos = 0
    n = len(data)
    while pos < n:
        start = pos
        if data[pos] != 0x0A:
            raise ValueError(f"unexpected field tag {data[pos]:#x} at byte {pos}")
        length, pos = _varint(data, pos + 1)
        end = pos + length
        if end > n:
            raise ValueError(f"TimeSeries at byte {start} runs past the end of the chunk")
        labels_end = end
        samples = 0
        p = pos
        while p < end:
            tag_pos = p
            tag = data[p]
            b = data[p + 1]
            if b < 0x80:
                p += 2 + b
            else:
                ln, p = _varint(data, p + 1)
                p += ln
            if tag != 0x0A and labels_end == end:
                labels_end = tag_pos
            if tag == 0x12:
                samples += 1
        pos = end
        yield start, end, labels_end, samples


def split_by_series(chunks: Sequence[Chunk], shards: int) -> list[list[Chunk]]:
    """Distribute ``chunks`` over ``shards`` lists so that each series stays in one list, in order.

    A chunk with a routing key goes whole to shard ``key % shards`` (cheap: its series always come with
    that key). A chunk without one is split into one-series chunks placed by a stable hash of the series'
    labels. A chunk that does not parse goes whole to shard 0 (the receiver will judge it) rather than
    being lost here.
    """
    out: list[list[Chunk]] = [[] for _ in range(shards)]
    for chunk in chunks:
        if chunk.key:
            out[chunk.key % shards].append(chunk)
            continue
        data = chunk.data
        try:
            pieces = [
                (zlib.crc32(data[s:le]) % shards, Chunk(data[s:e], k)) for s, e, le, k in iter_series(data)
            ]
        except (ValueError, IndexError):
            out[0].append(chunk)
            continue
        for shard, piece in pieces:
            out[shard].append(piece)
    return out


def pack_requests(chunks: Sequence[Chunk], batch: int) -> list[Chunk]:
    """Concatenate chunks into request bodies of at most ``batch`` samples (a bigger chunk goes alone)."""
    out: list[Chunk] = []
    parts: list[bytes] = []
    n = 0
    for c in chunks:
        if parts and n + c.samples > batch:
            out.append(Chunk(b"".join(parts), n))
            parts, n = [], 0
        parts.append(c.data)
        n += c.samples
    if parts:
        out.append(Chunk(b"".join(parts), n))
    return out


class WriterQueue:
    """One writer's dispatcher: rounds of batched, sharded sends from its backlog. See module docstring."""

    def __init__(self, settings: WriterSettings, backlog: Backlog, sender: Sender, *, metrics: SelfMetrics,
                 clock: Clock = SYSTEM_CLOCK, on_drop: Callable[[int, str], None] | None = None) -> None:
        self.settings = settings
        self.on_drop = on_drop or (
            lambda n, reason: metrics.samples_dropped.labels(settings.name, reason).inc(n))
        self.backlog = backlog
        self.sender = sender
        self.clock = clock
        self.shards = max(1, settings.min_shards)
        self._shards_gauge = metrics.shards.labels(settings.name)
        self._shards_gauge.set(self.shards)
        self._closing = False
        self._idle_rounds = 0
        self.rounds = 0

    def begin_close(self) -> None:
        """Send what is waiting at once (no flush deadline) and stop when the backlog is empty."""
        self._closing = True
        self.backlog.data_ready.set()

    async def run(self) -> None:
        """Deliver until closed and drained (or cancelled: unacknowledged records stay in the backlog)."""
        s = self.settings
        while True:
            if self.backlog.unread_samples == 0:
                if self._closing:
                    return
                self.backlog.data_ready.clear()
                if self.backlog.unread_samples == 0:
                    await self.backlog.data_ready.wait()
                continue
            target = s.batch * self.shards
            deadline = self.clock.monotonic() + s.flush_deadline
            while not self._closing and self.backlog.unread_samples < target and not self.backlog.blocked:
                remaining = deadline - self.clock.monotonic()
                if remaining <= 0:
                    break
                self.backlog.data_ready.clear()
                await wait_event(self.backlog.data_ready, remaining, self.clock)
            await self.round(self.backlog.take(target))

    async def round(self, records: Sequence[Record]) -> None:
        """Send ``records`` (in ``shards`` parallel streams, series kept together), then acknowledge them."""
        s = self.settings
        if not records:
            return
        chunks = [c for r in records for c in r.chunks]
        samples = sum(r.samples for r in records)
        single = self.shards == 1 or samples <= s.batch
        groups = [chunks] if single else split_by_series(chunks, self.shards)
        failed_before = self.sender.failed

        async def stream(group: list[Chunk]) -> None:
            for req in pack_requests(group, s.batch):
                try:
                    await self.sender.deliver(req.data, req.samples)
                except Exception:
                    # A bug here must not wedge the writer: count the batch and go on.
                    log.exception("writer %r: unexpected error sending %d samples", s.name, req.samples)
                    self.on_drop(req.samples, "internal")

        await asyncio.gather(*(stream(g) for g in groups if g))
        self.backlog.ack(records)
        self.rounds += 1
        self._rescale(samples, retried=self.sender.failed != failed_before)

    def _rescale(self, samples: int, *, retried: bool) -> None:
        s = self.settings
        target = s.batch * self.shards
        new = self.shards
        if not retried and self.backlog.unread_samples >= target:
            new = min(s.max_shards, self.shards + 1)
            self._idle_rounds = 0
        elif samples * 2 < target:
            self._idle_rounds += 1
            if self._idle_rounds >= 3:
                new = max(s.min_shards, self.shards - 1)
                self._idle_rounds = 0
        else:
            self._idle_rounds = 0
        if new != self.shards:
            log.info("writer %r: %d -> %d shards", s.name, self.shards, new)
            self.shards = new
            self._shards_gauge.set(new)


@dataclass(frozen=True)
class WriterStats:
    """A writer's state for humans (the demo, ``doctor``)."""

    name: str
    url: str
    pending_samples: int
    sent: int
    failed: int
    dropped: int
    evicted: int
    shards: int
    spool_bytes: int
    oldest_age: float
    last_error: str


_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]")


class _Writer:
    def __init__(self, settings: WriterSettings, backlog: Backlog, sender: Sender,
                 queue: WriterQueue) -> None:
        self.settings = settings
        self.backlog = backlog
        self.sender = sender
        self.queue = queue
        self.task: asyncio.Task[None] | None = None
        self.evicted = 0
        self.dropped = 0


class RemoteWrite:
    """The delivery :class:`~kubescrape.remote_write.Sink`: one backlog, dispatcher and sender per writer.

    ``append`` returns once the chunks are durable in every writer's spool (fsync'd; see
    :mod:`kubescrape.remote_write.spool`) or, with ``spool_dir=None``, queued in memory.
    """

    def __init__(self, writers: Sequence[WriterSettings], *, metrics: SelfMetrics, spool_dir: Path | None,
                 spool_max_bytes: int = 1 << 30, clock: Clock = SYSTEM_CLOCK) -> None:
        names = [w.name for w in writers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"writer names must be unique, repeated: {', '.join(dupes)}",
                              "give every [[writers]] entry a distinct name (or URL)")
        self.settings = tuple(writers)
        self.metrics = metrics
        self.spool_dir = spool_dir
        self.spool_max_bytes = spool_max_bytes
        self.clock = clock
        self._writers: list[_Writer] = []
        self._started = False
        self._closed = False

    async def start(self) -> None:
        """Open spools (replaying what a previous run left), connection pools, and start the dispatchers."""
        if self._started:
            return
        self._started = True
        for s in self.settings:
            self._writers.append(await self._open_writer(s))
        for w in self._writers:
            await w.sender.start()
            w.task = asyncio.create_task(w.queue.run(), name=f"remote-write-{w.settings.name}")

    async def _open_writer(self, s: WriterSettings) -> _Writer:
        m = self.metrics
        holder: list[_Writer] = []

        def on_drop(samples: int, reason: str) -> None:
            m.samples_dropped.labels(s.name, reason).inc(samples)
            if holder:
                holder[0].dropped += samples

        def on_evict(samples: int) -> None:
            m.samples_evicted.labels(s.name).inc(samples)
            if holder:
                holder[0].evicted += samples

        backlog: Backlog
        if self.spool_dir is None:
            backlog = MemoryBacklog(s.queue_capacity, clock=self.clock, block_timeout=s.timeout,
                                    on_drop=on_drop)
        else:
            from kubescrape.remote_write.spool import Spool

            directory = self.spool_dir / _SAFE_NAME.sub("_", s.name)
            backlog = await Spool.open(directory, max_bytes=self.spool_max_bytes, clock=self.clock,
                                       on_evict=on_evict,
                                       on_corrupt=lambda n: m.spool_corrupt.labels(s.name).inc(n))
        sender = Sender(s, metrics=m, clock=self.clock)
        queue = WriterQueue(s, backlog, sender, metrics=m, clock=self.clock, on_drop=on_drop)
        w = _Writer(s, backlog, sender, queue)
        holder.append(w)
        m.spool_bytes.labels(s.name).set_function(lambda: float(backlog.bytes))
        m.oldest_unsent_age.labels(s.name).set_function(lambda: self._age(backlog))
        return w

    def _age(self, backlog: Backlog) -> float:
        ts = backlog.oldest_ts()
        return 0.0 if ts is None else max(0.0, self.clock.time() - ts)

    async def append(self, chunks: Sequence[Chunk]) -> None:
        """Accept ``chunks`` for every writer; returns once durable (spool) or queued (memory)."""
        if self._closed:
            raise RemoteWriteError("remote write is shut down; samples arrived after close()",
                                   "stop the scrape loops before closing the remote-write sink")
        if not self._started:
            await self.start()
        chunks = [c for c in chunks if c.samples > 0 or c.data]
        if not chunks:
            return
        n = sum(c.samples for c in chunks)
        await asyncio.gather(*(w.backlog.put(chunks) for w in self._writers))
        for w in self._writers:
            self.metrics.samples_appended.labels(w.settings.name).inc(n)

    async def close(self, timeout: float) -> None:
        """Stop accepting, deliver what the backends take within ``timeout`` s, keep the rest in the spool."""
        if self._closed:
            return
        self._closed = True
        for w in self._writers:
            w.queue.begin_close()
        tasks = [w.task for w in self._writers if w.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=max(0.0, timeout))
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for w in self._writers:
            left = w.backlog.pending_samples
            if left:
                if self.spool_dir is None:
                    self.metrics.samples_dropped.labels(w.settings.name, "shutdown").inc(left)
                    w.dropped += left
                    log.warning("writer %r: %d samples not delivered before shutdown (no spool): dropped",
                                w.settings.name, left)
                else:
                    log.info("writer %r: %d samples kept in the spool for the next start",
                             w.settings.name, left)
            await w.backlog.close()
            await w.sender.close()

    def stats(self) -> list[WriterStats]:
        """Per-writer numbers for the demo and ``doctor``."""
        return [
            WriterStats(
                name=w.settings.name, url=w.settings.url, pending_samples=w.backlog.pending_samples,
                sent=w.sender.sent, failed=w.sender.failed, dropped=w.dropped + w.sender.dropped,
                evicted=w.evicted, shards=w.queue.shards, spool_bytes=w.backlog.bytes,
                oldest_age=self._age(w.backlog), last_error=w.sender.last_error,
            )
            for w in self._writers
        ]
