"""The books add up: ``appended = sent + dropped + evicted + pending`` at every step, for both backlogs,
under random operations and under random interleavings of appends, sends, refusals, retries, crashes of
the dispatcher and spool write errors (on a fake clock, so it runs in a moment)."""

from __future__ import annotations

import asyncio
import errno
import random
from pathlib import Path
from typing import Any

import pytest

from kubescrape.errors import RemoteWriteError, SpoolError
from kubescrape.remote_write import Chunk
from kubescrape.remote_write.ledger import Backlog, Fifo, Record, WriterCounters
from kubescrape.remote_write.memory import MemoryBacklog
from kubescrape.remote_write.queue import RemoteWrite, WriterSettings
from kubescrape.remote_write.sender import Sender
from kubescrape.remote_write.spool import Spool
from kubescrape.selfmon import SelfMetrics
from kubescrape.testing import FakeClock
from tests.remote_write.receiver import chunk_bytes


def balanced(c: WriterCounters) -> None:
    assert c.unaccounted() == 0, vars(c)
    assert c.appended == c.sent + c.dropped_total + c.evicted + c.pending


def test_fifo_counts_every_transition() -> None:
    c = WriterCounters("w")
    f: Fifo[Record] = Fifo(c)
    for seq in range(1, 6):
        f.push(Record(seq, 10, float(seq), ()))
    f.reject(7, "spool_full")
    taken = f.peek(25)
    assert [r.seq for r in taken] == [1, 2]
    f.start_flight(taken)
    f.ack(taken[:1], sent=6, dropped={"http_400": 4})
    f.release()
    assert [r.seq for r in f.unread] == [2, 3, 4, 5]
    f.evict_oldest()
    f.drop_oldest("queue_full")
    balanced(c)
    assert (c.appended, c.sent, c.dropped, c.evicted, c.pending) == (
        57, 6, {"spool_full": 7, "http_400": 4, "queue_full": 10}, 10, 20)
    assert f.drop_all("shutdown") == 20
    balanced(c)
    f.push(Record(9, 5, 0.0, ()))
    f.start_flight(f.peek(5))
    with pytest.raises(ValueError, match="!= 5"):
        f.ack(list(f.inflight), sent=1, dropped={"x": 1})  # 2 of 5 samples: the books refuse it
    with pytest.raises(ValueError, match="order"):
        f.ack([Record(8, 5, 0.0, ())])
    balanced(c)
    f.ack(list(f.inflight))
    assert c.sent == 11 and c.pending == 0
    balanced(c)


@pytest.mark.parametrize("kind", ["memory", "spool"])
@pytest.mark.parametrize("seed", range(6))
async def test_random_operations_keep_the_books(tmp_path: Path, kind: str, seed: int) -> None:
    rng = random.Random(seed)
    clock = FakeClock()
    counters = WriterCounters("w")
    backlog: Backlog
    if kind == "memory":
        backlog = MemoryBacklog(60, clock=clock, block_timeout=1.0, counters=counters)
    else:
        backlog = Spool(tmp_path, max_bytes=4_000, segment_bytes=1_000, counters=counters, fsync=False)
    inflight: list[Record] = []
    for _ in range(300):
        op = rng.random()
        if op < 0.45:
            await backlog.put([Chunk(b"x" * rng.randint(1, 300), rng.randint(1, 9))])
        elif op < 0.65 and not inflight:
            inflight = backlog.take(rng.randint(1, 40))
        elif op < 0.85 and inflight:
            n = sum(r.samples for r in inflight)
            dropped = rng.randint(0, n)
            backlog.ack(inflight, sent=n - dropped, dropped={"http_400": dropped} if dropped else {})
            inflight = []
        elif op < 0.95 and inflight:
            backlog.release()
            inflight = []
        balanced(counters)
        assert counters.pending == backlog.pending_samples
    await backlog.close()
    if kind == "spool":
        # a restart replays what was pending, and the new process' books start from it
        again = Spool(tmp_path, max_bytes=4_000, segment_bytes=1_000, fsync=False)
        assert again.counters.appended == again.counters.replayed == again.pending_samples
        balanced(again.counters)
        await again.close()


class Chaos:
    """Random answers from the backend, random dispatcher crashes and random spool write errors."""

    def __init__(self, rng: random.Random, clock: FakeClock) -> None:
        self.rng = rng
        self.clock = clock
        self.on = True
        self.crashes = 0
        self.calls = 0

    async def send_once(self, sender: Sender, body: bytes, samples: int) -> None:
        await self.clock.sleep(self.rng.random() * 0.2)
        if not self.on:
            return
        self.calls += 1
        roll = 0.27 if self.calls == 3 else self.rng.random()  # at least one crash, whatever the timing
        if roll < 0.15:
            raise RemoteWriteError("injected 500", writer="w", status=500, retryable=True)
        if roll < 0.25:
            raise RemoteWriteError("injected 400", writer="w", status=400, retryable=False)
        if roll < 0.3:
            self.crashes += 1
            raise RuntimeError("injected crash")

    def write(self) -> None:
        if self.on and self.rng.random() < 0.1:
            raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("kind", ["memory", "spool"])
@pytest.mark.parametrize("seed", range(4))
async def test_books_balance_under_random_interleavings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, seed: int,
) -> None:
    rng = random.Random(seed)
    clock = FakeClock()
    chaos = Chaos(rng, clock)

    async def send_once(self: Sender, body: bytes, samples: int) -> None:
        await chaos.send_once(self, body, samples)

    original_write = Spool._write

    def write(self: Spool, *args: Any) -> Any:
        chaos.write()
        return original_write(self, *args)

    monkeypatch.setattr(Sender, "send_once", send_once)
    monkeypatch.setattr(Spool, "_write", write)
    settings = [WriterSettings(url="http://a.invalid/w", name=f"w{i}", batch=7, max_shards=3,
                               queue_capacity=40, timeout=0.5, flush_deadline=0.05, min_backoff=0.01,
                               max_backoff=0.1,
                               max_retries=rng.choice([-1, 0, 2])) for i in range(2)]
    rw = RemoteWrite(settings, metrics=SelfMetrics(), spool_dir=tmp_path if kind == "spool" else None,
                     spool_max_bytes=6_000, clock=clock)
    rw.supervisor.min_backoff, rw.supervisor.max_backoff = 0.01, 0.05
    await rw.start()
    handed = 0
    checks = 0
    done = asyncio.Event()

    async def appender(target: str) -> None:
        nonlocal handed
        for ts in range(40):
            chunks = [Chunk(chunk_bytes("m", [(1.0, ts)], t=target, i=str(i)), 1, key=rng.choice([0, 7]))
                      for i in range(rng.randint(1, 6))]
            await rw.append(chunks)
            handed += len(chunks)
            await clock.sleep(rng.random() * 0.1)

    async def checker() -> None:
        nonlocal checks
        while not done.is_set():
            for w in rw._writers:
                balanced(w.counters)
            checks += 1
            await asyncio.sleep(0)

    check = asyncio.create_task(checker())
    await asyncio.gather(*(appender(t) for t in "abc"))
    chaos.on = False
    await asyncio.wait_for(rw.close(30.0), 60)
    done.set()
    await check
    assert checks > 100
    # the chaos did happen: crashes restarted dispatchers, samples were dropped for several reasons
    assert chaos.crashes > 0
    assert sum(rw.supervisor.failures(w.dispatcher_task) for w in rw._writers) == chaos.crashes, \
        [t.error for t in rw.supervisor._tasks.values()]
    reasons = {r for w in rw._writers for r in w.counters.dropped}
    assert reasons <= {"http_400", "retries_exhausted", "spool_full", "queue_full", "shutdown"}
    for w in rw._writers:
        c = w.counters
        balanced(c)
        assert c.appended - c.replayed == handed
        if kind == "memory":
            assert c.pending == 0
    stats = rw.stats()
    assert all(s.appended == s.sent + s.dropped + s.evicted + s.pending_samples for s in stats)
    # stats() and /metrics are the same numbers
    reg = rw.metrics.registry
    for s in stats:
        def metric(name: str, **labels: str) -> float:
            return reg.get_sample_value(name, {"writer": s.name, **labels}) or 0.0  # noqa: B023

        assert metric("kubescrape_samples_appended_total") == s.appended
        assert metric("kubescrape_samples_sent_total") == s.sent
        assert metric("kubescrape_spool_samples_evicted_total") == s.evicted
        assert metric("kubescrape_samples_pending") == s.pending_samples
        assert metric("kubescrape_samples_failed_total") == s.failed
        for reason, n in s.dropped_by_reason.items():
            assert metric("kubescrape_samples_dropped_total", reason=reason) == n
    assert sum(s.sent for s in stats) > 0


async def test_put_after_close_is_counted(tmp_path: Path) -> None:
    sp = Spool(tmp_path)
    await sp.close()
    with pytest.raises(SpoolError):
        await sp.put([Chunk(b"x", 3)])
    assert sp.counters.dropped == {"shutdown": 3}
    balanced(sp.counters)
