"""The books of one writer: records, the FIFO that tracks them, and the counters that must add up.

Both backlogs (the in-memory queue and the disk spool) keep their records in a :class:`Fifo`: *unread*
(waiting to be sent), *in flight* (taken by the dispatcher, not yet acknowledged), then gone (sent,
dropped or evicted). Their policies differ — the memory queue makes ``append`` wait and then drops the
oldest unread records, the spool evicts whole segment files — but the accounting is this one class,
and every change of state goes through one :class:`WriterCounters`, which updates the self-metrics and
the numbers :meth:`~kubescrape.remote_write.queue.RemoteWrite.stats` reports in the same call.

**The identity.** Per writer and per process, at every moment::

    appended = sent + sum(dropped by reason) + evicted + pending

``appended`` counts samples that entered the writer's books in this process: accepted by ``append``,
*replayed* from the spool when it was opened (so a restart starts its books from what is on disk; the
replayed part is also exported on its own), and appends that failed (a spool write error), which are
counted as appended and dropped in the same step. ``pending`` is unread + in flight and is exported as
the ``kubescrape_samples_pending`` gauge. Samples of spool records found damaged at open are not in the
books (their count is unknown; the records are counted in ``kubescrape_spool_corrupt_records_total``).

Imports run one way: this module needs nothing from the rest of ``remote_write`` but :class:`Chunk`;
``memory``, ``spool`` and the dispatcher build on it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Generic, NamedTuple, Protocol, TypeVar

from kubescrape.remote_write import Chunk

if TYPE_CHECKING:
    from kubescrape.selfmon import SelfMetrics

log = logging.getLogger("kubescrape.remote_write")


class Record(NamedTuple):
    """What one ``append`` call handed to one writer: its chunks, in order, with a sequence number."""

    seq: int
    samples: int
    ts: float  # wall-clock seconds when appended (for the oldest-unsent age)
    chunks: tuple[Chunk, ...]


class Entry(Protocol):
    """What a :class:`Fifo` needs of an entry (a :class:`Record`, or the spool's index of one)."""

    @property
    def seq(self) -> int: ...

    @property
    def samples(self) -> int: ...

    @property
    def ts(self) -> float: ...


E = TypeVar("E", bound=Entry)


class WriterCounters:
    """Every number of one writer, kept in step with its self-metrics (``metrics=None``: numbers only).

    ``pending`` is maintained by the writer's :class:`Fifo`. The health fields say whether the writer
    can persist (``persist_error``) and deliver (``failing_since``, ``last_error``).
    """

    def __init__(self, writer: str, metrics: SelfMetrics | None = None) -> None:
        self.writer = writer
        self.metrics = metrics
        self.appended = 0
        self.replayed = 0
        self.sent = 0
        self.evicted = 0
        self.dropped: dict[str, int] = {}
        self.pending = 0
        self.failed = 0
        self.retried = 0
        self.last_error = ""
        self.failing_since: float | None = None
        self.persist_error = ""
        if metrics is not None:
            self._m_appended = metrics.samples_appended.labels(writer)
            self._m_replayed = metrics.samples_replayed.labels(writer)
            self._m_sent = metrics.samples_sent.labels(writer)
            self._m_evicted = metrics.samples_evicted.labels(writer)
            self._m_failed = metrics.samples_failed.labels(writer)
            self._m_retried = metrics.samples_retried.labels(writer)
            metrics.samples_pending.labels(writer).set_function(lambda: float(self.pending))

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    def unaccounted(self) -> int:
        """``appended - (sent + dropped + evicted + pending)``: 0 unless a sample was lost uncounted."""
        return self.appended - (self.sent + self.dropped_total + self.evicted + self.pending)

    # --- the books (called by Fifo) ------------------------------------------------------------

    def add_appended(self, samples: int, *, replayed: bool = False) -> None:
        self.appended += samples
        if replayed:
            self.replayed += samples
        if self.metrics is not None:
            self._m_appended.inc(samples)
            if replayed:
                self._m_replayed.inc(samples)

    def add_sent(self, samples: int) -> None:
        if samples and self.sent == 0:
            log.info("writer %r: first delivery succeeded (%d samples)", self.writer, samples)
        self.sent += samples
        if self.metrics is not None:
            self._m_sent.inc(samples)

    def add_dropped(self, samples: int, reason: str) -> None:
        if not samples:
            return
        self.dropped[reason] = self.dropped.get(reason, 0) + samples
        if self.metrics is not None:
            self.metrics.samples_dropped.labels(self.writer, reason).inc(samples)

    def add_evicted(self, samples: int) -> None:
        self.evicted += samples
        if self.metrics is not None:
            self._m_evicted.inc(samples)

    # --- attempts and health (called by the sender and the backlogs) ----------------------------

    def attempt_failed(self, samples: int, error: str, now: float, *, streak: bool = True) -> None:
        """A send attempt failed: counted in ``failed``; unless ``streak`` is False (the backend works but
        refused this data) it starts a failure streak, which ends with the next success."""
        self.failed += samples
        if self.metrics is not None:
            self._m_failed.inc(samples)
        if streak:
            self.last_error = error
            if self.failing_since is None:
                self.failing_since = now

    def retried_attempt(self, samples: int) -> None:
        self.retried += samples
        if self.metrics is not None:
            self._m_retried.inc(samples)

    def attempt_succeeded(self) -> None:
        if self.failing_since is not None:
            log.info("writer %r: delivering again", self.writer)
        self.failing_since = None
        self.last_error = ""

    def persist_failed(self, error: str) -> None:
        if error != self.persist_error:
            log.error("writer %r: %s", self.writer, error)
        self.persist_error = error

    def persist_succeeded(self) -> None:
        if self.persist_error:
            log.info("writer %r: the spool accepts writes again", self.writer)
        self.persist_error = ""


class Fifo(Generic[E]):
    """Unread and in-flight entries of one backlog, in append order, with their sample counts.

    Every method that adds or removes samples also counts them in ``counters``, so the identity in the
    module docstring holds after each call.
    """

    def __init__(self, counters: WriterCounters) -> None:
        self.counters = counters
        self.unread: deque[E] = deque()
        self.inflight: deque[E] = deque()
        self.unread_samples = 0
        self.inflight_samples = 0

    @property
    def pending_samples(self) -> int:
        return self.unread_samples + self.inflight_samples

    def _pending_changed(self) -> None:
        self.counters.pending = self.unread_samples + self.inflight_samples

    def push(self, entry: E, *, replayed: bool = False) -> None:
        """A new entry (or one replayed from disk) at the tail: appended."""
        self.unread.append(entry)
        self.unread_samples += entry.samples
        self._pending_changed()
        self.counters.add_appended(entry.samples, replayed=replayed)

    def reject(self, samples: int, reason: str) -> None:
        """Samples handed over that could not be accepted (e.g. a spool write error): appended and dropped."""
        self.counters.add_appended(samples)
        self.counters.add_dropped(samples, reason)

    def peek(self, max_samples: int) -> list[E]:
        """The oldest unread entries (at least one if any), up to ``max_samples`` samples; not moved."""
        out: list[E] = []
        total = 0
        for e in self.unread:
            if out and total + e.samples > max_samples:
                break
            out.append(e)
            total += e.samples
        return out

    def start_flight(self, entries: Sequence[E]) -> None:
        """The first ``len(entries)`` unread entries are now in flight (as ``entries``, which may be
        lighter copies of them)."""
        total = 0
        for e in entries:
            head = self.unread.popleft()
            assert head.seq == e.seq, "entries go in flight in order"
            total += e.samples
        self.inflight.extend(entries)
        self.unread_samples -= total
        self.inflight_samples += total

    def ack(self, records: Sequence[Entry], *, sent: int | None = None,
            dropped: Mapping[str, int] | None = None) -> list[E]:
        """The oldest in-flight entries are done: ``sent`` samples delivered (default: all), ``dropped``
        given up by reason. Returns the entries."""
        if len(records) > len(self.inflight):
            raise ValueError(f"{len(records)} records acknowledged, {len(self.inflight)} in flight")
        out = [self.inflight[i] for i in range(len(records))]
        if any(head.seq != rec.seq for head, rec in zip(out, records, strict=True)):
            raise ValueError("records are acknowledged in the order they were taken")
        total = sum(e.samples for e in out)
        dropped = dropped or {}
        if sent is None:
            sent = total - sum(dropped.values())
        if sent < 0 or sent + sum(dropped.values()) != total:
            raise ValueError(f"{sent} sent + {sum(dropped.values())} dropped != {total} samples acknowledged")
        for _ in out:
            self.inflight.popleft()
        self.inflight_samples -= total
        self._pending_changed()
        self.counters.add_sent(sent)
        for reason, n in dropped.items():
            self.counters.add_dropped(n, reason)
        return out

    def release(self, keep: Callable[[E], bool] | None = None) -> list[E]:
        """Put every in-flight entry back at the head of the unread ones (a round did not finish).

        Entries for which ``keep`` is False can no longer be sent (their spool file was evicted while
        they were in flight): they are counted as evicted now and returned.
        """
        lost: list[E] = []
        back: list[E] = []
        for e in self.inflight:
            (back if keep is None or keep(e) else lost).append(e)
        self.inflight.clear()
        self.inflight_samples = 0
        self.unread.extendleft(reversed(back))
        self.unread_samples += sum(e.samples for e in back)
        self._pending_changed()
        for e in lost:
            self.counters.add_evicted(e.samples)
        return lost

    def _pop_unread(self) -> E:
        e = self.unread.popleft()
        self.unread_samples -= e.samples
        self._pending_changed()
        return e

    def drop_oldest(self, reason: str) -> E:
        """Give up the oldest unread entry, counted as dropped."""
        e = self._pop_unread()
        self.counters.add_dropped(e.samples, reason)
        return e

    def evict_oldest(self) -> E:
        """Remove the oldest unread entry, counted as evicted."""
        e = self._pop_unread()
        self.counters.add_evicted(e.samples)
        return e

    def drop_all(self, reason: str) -> int:
        """Give up everything pending (shutdown without a spool); returns the samples dropped."""
        n = self.pending_samples
        self.unread.clear()
        self.inflight.clear()
        self.unread_samples = self.inflight_samples = 0
        self._pending_changed()
        self.counters.add_dropped(n, reason)
        return n

    def oldest_ts(self) -> float | None:
        """Append time of the oldest entry not yet acknowledged."""
        if self.inflight:
            return self.inflight[0].ts
        return self.unread[0].ts if self.unread else None


class Backlog(Protocol):
    """Where a writer's records wait until the backend acknowledged them (memory or spool)."""

    data_ready: asyncio.Event
    counters: WriterCounters

    async def put(self, chunks: Sequence[Chunk]) -> None:
        """Accept the chunks (durably, for the spool); may wait for room. What it cannot accept is
        counted (appended and dropped with a reason) before it raises."""
        ...

    def take(self, max_samples: int) -> list[Record]:
        """The oldest unread records (at least one if any), up to ``max_samples`` samples; in flight now."""
        ...

    def ack(self, records: Sequence[Record], *, sent: int | None = None,
            dropped: Mapping[str, int] | None = None) -> None:
        """The oldest taken records are done (sent or dropped by reason); forget them."""
        ...

    def release(self) -> None:
        """Return every in-flight record to the unread ones (the round that took them failed)."""
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

    @property
    def memory_bytes(self) -> int:
        """Chunk bytes the backlog holds in memory (the status page's "queue bytes")."""
        ...

    def oldest_ts(self) -> float | None:
        """Append time of the oldest unacknowledged record."""
        ...

    async def close(self) -> None: ...
