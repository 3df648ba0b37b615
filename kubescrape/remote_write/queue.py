"""The ``RemoteWrite`` sink: per writer a backlog (memory or spool), a dispatcher, a sender and one set
of books, all started and supervised here.

Data flows scrape → :meth:`RemoteWrite.append` → each writer's backlog → that writer's dispatcher
(:mod:`~kubescrape.remote_write.dispatcher`) → :class:`~kubescrape.remote_write.sender.Sender`. Every
writer has its own backlog, dispatcher and connection pool, so a dead backend never stalls another one.
Imports run one way: ``ledger`` ← ``memory``, ``spool``; ``sender`` ← ``dispatcher`` ← this module.

**Back-pressure without the spool.** The in-memory backlog holds at most ``queue_capacity`` samples
(unsent plus in flight). ``append`` waits for room; if none frees up within the writer's ``timeout``
(the backend is down, not merely slow), the oldest unsent records of that writer are dropped and
counted as ``samples_dropped{reason="queue_full"}``, so a dead writer cannot stall scraping forever.
With the spool on, ``queue_capacity`` is not used: the spool's byte limit bounds the backlog.

**Supervision and health.** A writer's dispatcher and spool flusher run under a
:class:`~kubescrape.supervisor.Supervisor` (the agent's, or one of this sink's own): a task that fails is
counted and restarted with backoff. :meth:`RemoteWrite.problems` lists what keeps a writer from
persisting or delivering right now — a failing task, a spool that cannot be written, a backend that
refused or missed every attempt since the last success — and ``/healthz`` answers 503 with that list.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from kubescrape.clock import SYSTEM_CLOCK, Clock, wait_event
from kubescrape.errors import ConfigError, RemoteWriteError, SpoolError
from kubescrape.remote_write import Chunk
from kubescrape.remote_write.dispatcher import (
    WriterQueue,
    iter_series,
    pack_groups,
    pack_requests,
    split_by_series,
)
from kubescrape.remote_write.ledger import Backlog, Record, WriterCounters
from kubescrape.remote_write.memory import MemoryBacklog
from kubescrape.remote_write.sender import Sender
from kubescrape.remote_write.settings import WriterSettings
from kubescrape.remote_write.spool import Spool
from kubescrape.selfmon import SelfMetrics
from kubescrape.supervisor import Supervisor

__all__ = [
    "Backlog", "MemoryBacklog", "Record", "RemoteWrite", "WriterQueue", "WriterSettings", "WriterStats",
    "iter_series", "pack_groups", "pack_requests", "split_by_series", "wait_event",
]

log = logging.getLogger("kubescrape.remote_write")


@dataclass(frozen=True)
class WriterStats:
    """A writer's state for humans (the demo, ``doctor``, the periodic summary).

    ``appended == sent + dropped + evicted + pending_samples`` (see
    :mod:`kubescrape.remote_write.ledger`); ``dropped_by_reason`` splits ``dropped``.
    """

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
    appended: int = 0
    replayed: int = 0
    dropped_by_reason: dict[str, int] = field(default_factory=dict)
    problems: tuple[str, ...] = ()
    queue_bytes: int = 0
    """Chunk bytes the backlog holds in memory (with the spool: unread records not read back from disk)."""


class _Progressing(Protocol):
    progress: int


def _progress_of(obj: _Progressing) -> Callable[[], int]:
    return lambda: obj.progress


_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]")


class _Writer:
    def __init__(self, settings: WriterSettings, counters: WriterCounters, backlog: Backlog,
                 spool: Spool | None, sender: Sender, queue: WriterQueue) -> None:
        self.settings = settings
        self.counters = counters
        self.backlog = backlog
        self.spool = spool
        self.sender = sender
        self.queue = queue
        self.dispatcher_task = f"dispatcher {settings.name}"
        self.flusher_task = f"spool {settings.name}"


class RemoteWrite:
    """The delivery :class:`~kubescrape.remote_write.Sink`: one backlog, dispatcher and sender per writer.

    ``append`` returns once the chunks are durable in every writer's spool (fsync'd; see
    :mod:`kubescrape.remote_write.spool`) or, with ``spool_dir=None``, queued in memory. What a writer
    cannot accept (a spool write error) is counted there as dropped with a reason and reported by
    :meth:`problems`; ``append`` itself does not raise for it.
    """

    def __init__(self, writers: Sequence[WriterSettings], *, metrics: SelfMetrics, spool_dir: Path | None,
                 spool_max_bytes: int = 1 << 30, clock: Clock = SYSTEM_CLOCK,
                 supervisor: Supervisor | None = None) -> None:
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
        self._own_supervisor = supervisor is None
        self.supervisor = supervisor or Supervisor(metrics=metrics, clock=clock)
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
            if w.spool is not None:
                w.spool.attach()
                self.supervisor.start(w.flusher_task, w.spool.run, progress=_progress_of(w.spool))
            self.supervisor.start(w.dispatcher_task, w.queue.run, progress=_progress_of(w.queue))

    async def _open_writer(self, s: WriterSettings) -> _Writer:
        m = self.metrics
        counters = WriterCounters(s.name, m)
        backlog: Backlog
        spool: Spool | None = None
        if self.spool_dir is None:
            backlog = MemoryBacklog(s.queue_capacity, clock=self.clock, block_timeout=s.timeout,
                                    counters=counters)
        else:
            directory = self.spool_dir / _SAFE_NAME.sub("_", s.name)
            backlog = spool = await Spool.open(
                directory, max_bytes=self.spool_max_bytes, clock=self.clock, counters=counters,
                on_corrupt=lambda n: m.spool_corrupt.labels(s.name).inc(n))
        sender = Sender(s, metrics=m, clock=self.clock, counters=counters)
        queue = WriterQueue(s, backlog, sender, metrics=m, clock=self.clock)
        m.spool_bytes.labels(s.name).set_function(lambda: float(backlog.bytes))
        m.oldest_unsent_age.labels(s.name).set_function(lambda: self._age(backlog))
        return _Writer(s, counters, backlog, spool, sender, queue)

    def _age(self, backlog: Backlog) -> float:
        ts = backlog.oldest_ts()
        return 0.0 if ts is None else max(0.0, self.clock.time() - ts)

    async def append(self, chunks: Sequence[Chunk]) -> None:
        """Hand ``chunks`` to every writer; returns once durable (spool) or queued (memory) — or, for a
        writer that could not take them, once that is counted."""
        if self._closed:
            raise RemoteWriteError("remote write is shut down; samples arrived after close()",
                                   "stop the scrape loops before closing the remote-write sink")
        if not self._started:
            await self.start()
        chunks = [c for c in chunks if c.samples > 0 or c.data]
        if not chunks:
            return
        results = await asyncio.gather(*(w.backlog.put(chunks) for w in self._writers),
                                       return_exceptions=True)
        for w, result in zip(self._writers, results, strict=True):
            if isinstance(result, asyncio.CancelledError):
                raise result
            if isinstance(result, SpoolError):
                continue  # counted by the spool (appended and dropped, with a reason); see problems()
            if isinstance(result, BaseException):
                n = sum(c.samples for c in chunks)
                w.counters.add_appended(n)
                w.counters.add_dropped(n, "append_error")
                log.error("writer %r: could not accept %d samples: %r", w.settings.name, n, result)

    def problems(self) -> list[str]:
        """Why a writer cannot persist or deliver right now (empty: all fine). For ``/healthz``."""
        out: list[str] = []
        failing = self.supervisor.failing()
        now = self.clock.monotonic()
        for w in self._writers:
            name = w.settings.name
            for task in (w.dispatcher_task, w.flusher_task):
                if task in failing:
                    out.append(f"writer {name!r}: task {task!r} failed and is restarting ({failing[task]})")
            c = w.counters
            if c.persist_error:
                out.append(f"writer {name!r}: {c.persist_error}")
            if c.failing_since is not None:
                out.append(f"writer {name!r}: cannot deliver (failing for {now - c.failing_since:.0f}s, "
                           f"{w.backlog.pending_samples} samples pending): {c.last_error}")
        return out

    async def close(self, timeout: float) -> None:
        """Stop accepting, deliver what the backends take within ``timeout`` s, keep the rest in the spool."""
        if self._closed:
            return
        self._closed = True
        for w in self._writers:
            w.queue.begin_close()
        await self.supervisor.wait([w.dispatcher_task for w in self._writers], timeout)
        for w in self._writers:
            w.backlog.release()
            if isinstance(w.backlog, MemoryBacklog):
                left = w.backlog.drop_pending("shutdown")
                if left:
                    log.warning("writer %r: %d samples not delivered before shutdown (no spool): dropped",
                                w.settings.name, left)
            elif w.backlog.pending_samples:
                log.info("writer %r: %d samples kept in the spool for the next start",
                         w.settings.name, w.backlog.pending_samples)
            await w.backlog.close()
            await self.supervisor.stop([w.flusher_task])
            await w.sender.close()
        if self._own_supervisor:
            await self.supervisor.stop()

    def stats(self) -> list[WriterStats]:
        """Per-writer numbers for the demo, ``doctor`` and the agent's summary."""
        problems = self.problems() if self._started else []
        out: list[WriterStats] = []
        for w in self._writers:
            c = w.counters
            out.append(WriterStats(
                name=w.settings.name, url=w.settings.url, pending_samples=c.pending,
                sent=c.sent, failed=c.failed, dropped=c.dropped_total,
                evicted=c.evicted, shards=w.queue.shards, spool_bytes=w.backlog.bytes,
                oldest_age=self._age(w.backlog), last_error=c.last_error,
                appended=c.appended, replayed=c.replayed, dropped_by_reason=dict(c.dropped),
                problems=tuple(p for p in problems if p.startswith(f"writer {w.settings.name!r}")),
                queue_bytes=w.backlog.memory_bytes,
            ))
        return out

