"""One writer's dispatcher: rounds of batched, sharded sends from its backlog, and the books of each round.

A dispatcher works in *rounds*: it takes the oldest unsent records (up to ``batch × shards`` samples, or
what arrived within ``flush_deadline``), sends them as up to ``shards`` concurrent streams of requests of
at most ``batch`` samples, waits for all of them, then acknowledges the records with what became of
their samples (sent, or dropped with a reason). Rounds are sequential, so records are acknowledged
strictly in append order: the spool's ack cursor is a single number and replay after a restart resumes
exactly where delivery stopped. Within a round, series are split across shards by a hash of their
labels (as Prometheus does), so one series never travels in two concurrent requests: a receiver such as
Prometheus rejects a whole request if one of its samples is older than what it already has, so
per-series order is essential. With one shard (or a round of at most ``batch`` samples) nothing is
parsed: chunks are sent as they are. The cost of rounds is head-of-line blocking inside one writer (a
slow request delays the next round); that is the price of an ordered, single-cursor spool.

**One bad sample does not cost the others.** Prometheus refuses a whole request (``400``, nothing of it
stored) when one of its samples is out of bounds or out of order, and a request mixes the chunks of
many targets. So a ``400``, ``413`` or ``422`` answer to a request of several chunks splits it in two and
sends each half again, down to a single chunk and then to single series: only the part the backend
refuses is dropped (and counted, ``reason="http_<status>"``); ``log2`` of the request's size extra
requests find it.

**Failures.** If a round raises (a bug, a spool read error), its records go back to the unread ones and
the exception ends :meth:`WriterQueue.run`; the writer's supervisor counts it and starts the dispatcher
again, which sends those records again (receivers ignore identical samples they already have).
Nothing is counted as sent before the round is acknowledged, so the books stay exact.

**Shard count.** After a round without retries, if at least another full round is already waiting the
backend is slower than arrivals: one more shard (up to ``max_shards``). After three consecutive rounds
that were less than half full, one shard fewer (down to ``min_shards``). Rounds with retries do not
grow the count: more parallel requests do not help a failing backend.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Iterator, Sequence

import cramjam

from kubescrape.clock import SYSTEM_CLOCK, Clock, wait_event
from kubescrape.remote_write import Chunk
from kubescrape.remote_write.encode import compress, snappy_concat
from kubescrape.remote_write.ledger import Backlog, Record
from kubescrape.remote_write.sender import Sender
from kubescrape.remote_write.settings import WriterSettings
from kubescrape.selfmon import SelfMetrics

log = logging.getLogger("kubescrape.remote_write")

# Answers that may be about some of the request's samples only: split the request and try the parts.
SPLITTABLE = frozenset({400, 413, 422})



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


def plain(chunk: Chunk) -> Chunk:
    """``chunk`` with uncompressed data (the rare paths that look into a chunk: no key, a refused one)."""
    return Chunk(chunk.plain(), chunk.samples, chunk.key) if chunk.snappy else chunk


def request_body(parts: Sequence[Chunk]) -> bytes:
    """The snappy-compressed ``WriteRequest`` of ``parts``, in order.

    Plain chunks are joined and compressed; chunks that arrive compressed (a scrape loop compresses its
    own, the spool stores them so) are only concatenated
    (:func:`~kubescrape.remote_write.encode.snappy_concat`).
    """
    if not any(p.snappy for p in parts):
        return compress(b"".join(p.data for p in parts))
    return snappy_concat([p.data if p.snappy else compress(p.data) for p in parts])


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
        try:
            data = plain(chunk).data
            pieces = [
                (zlib.crc32(data[s:le]) % shards, Chunk(data[s:e], k)) for s, e, le, k in iter_series(data)
            ]
        except (ValueError, IndexError, cramjam.DecompressionError):
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
        parts.append(plain(c).data)
        n += c.samples
    if parts:
        out.append(Chunk(b"".join(parts), n))
    return out


def pack_groups(chunks: Sequence[Chunk], batch: int) -> list[list[Chunk]]:
    """The chunks of each request body of at most ``batch`` samples (a bigger chunk goes alone)."""
    out: list[list[Chunk]] = []
    cur: list[Chunk] = []
    n = 0
    for c in chunks:
        if cur and n + c.samples > batch:
            out.append(cur)
            cur, n = [], 0
        cur.append(c)
        n += c.samples
    if cur:
        out.append(cur)
    return out


def halves(parts: Sequence[Chunk]) -> tuple[list[Chunk], list[Chunk]] | None:
    """Two halves of a refused request: by chunk, or for a single chunk by series; None if it is one
    series (or does not parse)."""
    if len(parts) == 1:
        try:
            data = plain(parts[0]).data
            parts = [Chunk(data[s:e], k, parts[0].key) for s, e, _, k in iter_series(data)]
        except (ValueError, IndexError, cramjam.DecompressionError):
            return None
    if len(parts) < 2:
        return None
    mid = len(parts) // 2
    return list(parts[:mid]), list(parts[mid:])


# Drops are counted always; they are logged once per reason, then summed up at most this often.
DROP_LOG_INTERVAL = 300.0


class _Tally:
    """What became of a round's samples."""

    def __init__(self) -> None:
        self.dropped: dict[str, int] = {}
        self.errors: dict[str, str] = {}

    def drop(self, samples: int, reason: str, error: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + samples
        self.errors.setdefault(reason, error)


class WriterQueue:
    """One writer's dispatcher: rounds of batched, sharded sends from its backlog. See module docstring."""

    def __init__(self, settings: WriterSettings, backlog: Backlog, sender: Sender, *, metrics: SelfMetrics,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self.settings = settings
        self.backlog = backlog
        self.sender = sender
        self.clock = clock
        self.shards = max(1, settings.min_shards)
        self._shards_gauge = metrics.shards.labels(settings.name)
        self._shards_gauge.set(self.shards)
        self._closing = False
        self._idle_rounds = 0
        self.rounds = 0
        self.progress = 0  # rounds done and idle moments reached: for the supervisor
        # reason -> (monotonic time of the last log line, samples dropped since then)
        self._drop_log: dict[str, tuple[float, int]] = {}

    def begin_close(self) -> None:
        """Send what is waiting at once (no flush deadline) and stop when the backlog is empty."""
        self._closing = True
        self.backlog.data_ready.set()

    async def run(self) -> None:
        """Deliver until closed and drained (or cancelled: unacknowledged records stay in the backlog)."""
        s = self.settings
        self.backlog.release()  # a previous run that failed may have left records in flight
        while True:
            if self.backlog.unread_samples == 0:
                if self._closing:
                    return
                self.progress += 1
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
        """Send ``records`` (in ``shards`` parallel streams, series kept together), then acknowledge them
        with what became of their samples. If sending raises, the records go back to unread."""
        s = self.settings
        if not records:
            return
        chunks = [c for r in records for c in r.chunks]
        samples = sum(r.samples for r in records)
        single = self.shards == 1 or samples <= s.batch
        groups = [chunks] if single else split_by_series(chunks, self.shards)
        failed_before = self.sender.failed
        tally = _Tally()
        try:
            async with asyncio.TaskGroup() as tg:
                for g in groups:
                    if g:
                        tg.create_task(self._stream(g, tally))
        except BaseException as e:
            self.backlog.release()
            if isinstance(e, BaseExceptionGroup) and len(e.exceptions) == 1:
                raise e.exceptions[0] from None
            raise
        # Chunks state their own sample counts; count drops as sent ones' complement so that what the
        # records hold is exactly what is acknowledged, even for a chunk whose count is off.
        dropped = {k: min(v, samples) for k, v in tally.dropped.items()}
        while sum(dropped.values()) > samples:
            dropped.popitem()
        self.backlog.ack(records, sent=samples - sum(dropped.values()), dropped=dropped)
        self._log_drops(dropped, tally.errors)
        self.rounds += 1
        self.progress += 1
        self._rescale(samples, retried=self.sender.failed != failed_before)

    async def _stream(self, group: list[Chunk], tally: _Tally) -> None:
        for parts in pack_groups(group, self.settings.batch):
            await self._deliver(parts, tally)

    async def _deliver(self, parts: list[Chunk], tally: _Tally) -> None:
        n = sum(p.samples for p in parts)
        outcome = await self.sender.deliver_body(request_body(parts), n)
        if outcome.accepted:
            return
        if outcome.status in SPLITTABLE:
            split = halves(parts)
            if split is not None:
                for half in split:
                    await self._deliver(half, tally)
                return
        tally.drop(n, outcome.reason, outcome.error or outcome.reason)

    def _log_drops(self, dropped: dict[str, int], errors: dict[str, str]) -> None:
        """The first drop for a reason is logged with its error; later ones are summed up every
        ``DROP_LOG_INTERVAL`` seconds (every one is in ``kubescrape_samples_dropped_total``)."""
        now = self.clock.monotonic()
        for reason, n in dropped.items():
            last = self._drop_log.get(reason)
            if last is None:
                log.error("writer %r: dropped %d samples (%s): %s", self.settings.name, n, reason,
                          errors.get(reason, ""))
                self._drop_log[reason] = (now, 0)
            elif now - last[0] >= DROP_LOG_INTERVAL:
                log.error("writer %r: dropped %d more samples (%s) in the last %.0fs; last error: %s",
                          self.settings.name, last[1] + n, reason, now - last[0], errors.get(reason, ""))
                self._drop_log[reason] = (now, 0)
            else:
                self._drop_log[reason] = (last[0], last[1] + n)

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
