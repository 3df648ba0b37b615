from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from aiohttp import web

from kubescrape.errors import ConfigError, RemoteWriteError
from kubescrape.remote_write import Chunk
from kubescrape.remote_write.dispatcher import halves, plain, request_body
from kubescrape.remote_write.encode import compress, decode_write_request, decompress
from kubescrape.remote_write.ledger import WriterCounters
from kubescrape.remote_write.queue import (
    MemoryBacklog,
    RemoteWrite,
    WriterQueue,
    WriterSettings,
    iter_series,
    pack_requests,
    split_by_series,
)
from kubescrape.remote_write.sender import ACCEPTED, Outcome, Sender
from kubescrape.selfmon import SelfMetrics
from kubescrape.testing import FakeClock
from tests.e2e.prom import free_port
from tests.remote_write.receiver import Receiver, chunk_bytes, running_receiver


def value(m: SelfMetrics, name: str, **labels: str) -> float:
    return m.registry.get_sample_value(name, labels) or 0.0


def scrape(target: str, ts: int, n: int = 5) -> Chunk:
    """One 'scrape' of ``target``: n series, one sample each at ``ts``."""
    data = b"".join(chunk_bytes("m", [(float(ts), ts)], target=target, i=str(i)) for i in range(n))
    return Chunk(data, n)


def test_iter_series_finds_boundaries_labels_and_sample_counts() -> None:
    a = chunk_bytes("a", [(1.0, 1)], x="1")
    b = chunk_bytes("b", [(1.0, 1)])
    got = list(iter_series(a + b))
    assert [(s, e) for s, e, _, _ in got] == [(0, len(a)), (len(a), len(a) + len(b))]
    assert all(k == 1 for *_, k in got)
    # the labels part is identical for two samples of the same series
    a2 = chunk_bytes("a", [(2.0, 2)], x="1")
    (s1, _, l1, _), = iter_series(a)
    (s2, _, l2, _), = iter_series(a2)
    assert a[s1:l1] == a2[s2:l2]
    with pytest.raises(ValueError):
        list(iter_series(b"\x12\x00"))


def test_split_by_series_keeps_each_series_in_one_shard_in_order() -> None:
    chunks = [scrape(t, ts) for ts in (1, 2, 3) for t in ("a", "b", "c")]
    shards = split_by_series(chunks, 3)
    assert sum(c.samples for s in shards for c in s) == 45
    seen: dict[str, int] = {}
    for idx, shard in enumerate(shards):
        stamps: dict[str, list[int]] = {}
        for labels, samples in decode_write_request(b"".join(p.data for p in shard)):
            key = repr(sorted(labels.items()))
            assert seen.setdefault(key, idx) == idx, "a series travelled in two shards"
            stamps.setdefault(key, []).extend(ts for _, ts in samples)
        assert all(v == [1, 2, 3] for v in stamps.values())
    assert len(seen) == 15
    assert len([s for s in shards if s]) >= 2
    # a chunk that does not parse is kept whole, not lost
    assert split_by_series([Chunk(b"\xff\xff", 3)], 2)[0] == [Chunk(b"\xff\xff", 3)]


def test_keyed_chunks_go_whole_to_their_shard_in_order_without_being_split() -> None:
    # a scrape loop keys every chunk of one target alike: the queue routes whole chunks, no parsing
    chunks = [scrape(t, ts)._replace(key=key) for ts in (1, 2, 3) for t, key in (("a", 7), ("b", 8))]
    shards = split_by_series(chunks, 3)
    assert shards[7 % 3] == [c for c in chunks if c.key == 7]
    assert shards[8 % 3] == [c for c in chunks if c.key == 8]
    assert shards[0] == []
    # unkeyed chunks next to keyed ones are still split by series, deterministically
    mixed = [*chunks, scrape("c", 1)]
    assert split_by_series(mixed, 3) == split_by_series(mixed, 3)
    assert sum(c.samples for s in split_by_series(mixed, 3) for c in s) == 35


def test_pack_requests_respects_batch() -> None:
    chunks = [Chunk(b"a", 3), Chunk(b"b", 3), Chunk(b"c", 3), Chunk(b"dddd", 10), Chunk(b"e", 1)]
    reqs = pack_requests(chunks, 6)
    assert reqs == [Chunk(b"ab", 6), Chunk(b"c", 3), Chunk(b"dddd", 10), Chunk(b"e", 1)]


async def test_memory_remote_write_delivers_everything_in_order() -> None:
    m = SelfMetrics()
    async with running_receiver() as rec:
        rw = RemoteWrite([WriterSettings(url=rec.url, name="w", batch=20, flush_deadline=0.01)], metrics=m,
                         spool_dir=None)
        await rw.start()
        for ts in range(1, 41):
            await rw.append([scrape("a", ts), scrape("b", ts)])
        await rw.close(5.0)
    got = rec.samples()
    assert len(got) == 400
    for series in {k for k, _, _ in got}:
        stamps = [ts for k, _, ts in got if k == series]
        assert stamps == list(range(1, 41)), series
    assert value(m, "kubescrape_samples_appended_total", writer="w") == 400
    assert value(m, "kubescrape_samples_sent_total", writer="w") == 400
    st = rw.stats()[0]
    assert st.sent == 400 and st.pending_samples == 0
    with pytest.raises(RemoteWriteError):
        await rw.append([scrape("a", 99)])


async def test_one_dead_writer_does_not_stall_another() -> None:
    m = SelfMetrics()
    dead = f"http://127.0.0.1:{free_port()}/api/v1/write"
    async with running_receiver() as rec:
        rw = RemoteWrite([WriterSettings(url=dead, name="dead", flush_deadline=0.01, dial_timeout=0.5),
                          WriterSettings(url=rec.url, name="live", flush_deadline=0.01)],
                         metrics=m, spool_dir=None)
        await rw.start()
        for ts in range(1, 6):
            await rw.append([scrape("a", ts)])
        for _ in range(500):
            if len(rec.samples()) == 25 and rw.stats()[1].pending_samples == 0:
                break
            await asyncio.sleep(0.01)
        stats = {s.name: s for s in rw.stats()}
        # The dead writer's five records wait in memory; the live one's are gone.
        assert stats["dead"].queue_bytes == sum(len(scrape("a", ts).data) for ts in range(1, 6))
        assert stats["live"].queue_bytes == 0
        await rw.close(0.2)
    assert len(rec.samples()) == 25
    assert value(m, "kubescrape_samples_dropped_total", writer="dead", reason="shutdown") == 25
    assert value(m, "kubescrape_samples_failed_total", writer="dead") >= 25


async def test_memory_backlog_back_pressure_then_drops_oldest_counted() -> None:
    clock = FakeClock(autojump=False)
    counters = WriterCounters("w")
    bl = MemoryBacklog(10, clock=clock, block_timeout=5.0, counters=counters)
    await bl.put([Chunk(b"a", 6)])
    put = asyncio.create_task(bl.put([Chunk(b"b", 6)]))
    await asyncio.sleep(0)
    assert not put.done(), "a full queue makes append wait"
    # room frees up: the waiter proceeds, nothing dropped
    bl.ack(bl.take(100))
    await asyncio.wait_for(put, 1)
    assert counters.dropped == {} and bl.pending_samples == 6
    # now nothing frees up: after block_timeout the oldest unsent record is dropped and counted
    put = asyncio.create_task(bl.put([Chunk(b"c", 6)]))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not put.done()
    clock.advance(5.0)
    await asyncio.wait_for(put, 1)
    assert counters.dropped == {"queue_full": 6}
    assert [r.chunks[0].data for r in bl.take(100)] == [b"c"]
    assert counters.appended == 18 and counters.sent == 6 and counters.pending == 6
    assert counters.unaccounted() == 0


class _SlowSender(Sender):
    """Counts deliveries; each takes ``delay`` on the fake clock."""

    def __init__(self, s: WriterSettings, clock: FakeClock, delay: float) -> None:
        super().__init__(s, metrics=SelfMetrics(), clock=clock)
        self.delay = delay
        self.bodies: list[int] = []
        self.concurrent = 0
        self.max_concurrent = 0

    async def deliver_body(self, body: bytes, samples: int) -> Outcome:
        self.concurrent += 1
        self.max_concurrent = max(self.max_concurrent, self.concurrent)
        await asyncio.sleep(0)
        await self.clock.sleep(self.delay)
        self.concurrent -= 1
        self.bodies.append(samples)
        return ACCEPTED


async def test_shards_grow_when_behind_and_shrink_when_idle() -> None:
    clock = FakeClock()
    s = WriterSettings(url="http://unused", name="w", batch=10, min_shards=1, max_shards=3,
                       flush_deadline=0.5)
    m = SelfMetrics()
    bl = MemoryBacklog(10_000, clock=clock, block_timeout=1.0)
    sender = _SlowSender(s, clock, delay=0.1)
    q = WriterQueue(s, bl, sender, metrics=m, clock=clock)
    for ts in range(40):  # a large backlog: 40 scrapes x 5 series
        await bl.put([scrape(t, ts) for t in ("a", "b")])
    await q.round(bl.take(10))
    assert q.shards == 2
    await q.round(bl.take(20))
    assert q.shards == 3 and value(m, "kubescrape_remote_write_shards", writer="w") == 3
    await q.round(bl.take(30))
    assert sender.max_concurrent == 3
    assert q.shards == 3, "never above max_shards"
    bl.ack(bl.take(10_000))  # backlog gone: small rounds from now on
    for ts in range(100, 106):
        await bl.put([scrape("a", ts, n=1)])
        await q.round(bl.take(q.shards * s.batch))
    assert q.shards == 1


async def test_rounds_wait_for_the_flush_deadline_and_close_drains() -> None:
    clock = FakeClock()
    s = WriterSettings(url="http://unused", name="w", batch=100, flush_deadline=2.0)
    bl = MemoryBacklog(10_000, clock=clock, block_timeout=1.0)
    sender = _SlowSender(s, clock, delay=0.0)
    q = WriterQueue(s, bl, sender, metrics=SelfMetrics(), clock=clock)
    task = asyncio.create_task(q.run())
    await bl.put([scrape("a", 1)])
    await bl.put([scrape("a", 2)])
    for _ in range(500):
        if sender.bodies:
            break
        await asyncio.sleep(0)
    # the two small appends went out together once the flush deadline passed
    assert sender.bodies == [10]
    assert 2.0 in clock.slept
    await bl.put([scrape("a", 3)])
    q.begin_close()
    await asyncio.wait_for(task, 1)
    assert sender.bodies == [10, 5] and bl.pending_samples == 0


def test_writer_names_must_be_unique(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        RemoteWrite([WriterSettings(url="http://a", name="x"), WriterSettings(url="http://b", name="x")],
                    metrics=SelfMetrics(), spool_dir=tmp_path)


async def test_stats_report_pending_and_age() -> None:
    clock = FakeClock()
    rec = Receiver(script=[(500, {}, "down")] * 1000)
    async with running_receiver(rec):
        rw = RemoteWrite([WriterSettings(url=rec.url, name="w", flush_deadline=0.0)], metrics=SelfMetrics(),
                         spool_dir=None, clock=clock)
        await rw.start()
        await rw.append([scrape("a", 1)])
        for _ in range(50):
            await asyncio.sleep(0.01)
            if rw.stats()[0].failed:
                break
        st = rw.stats()[0]
        assert st.pending_samples == 5 and st.failed >= 5 and "500" in st.last_error
        assert st.oldest_age > 0 and st.spool_bytes > 0
        await rw.close(0.1)


class PickyReceiver(Receiver):
    """Refuses (400, nothing stored — as Prometheus does) any request holding a series labelled bad."""

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        decoded = decode_write_request(decompress(await request.read()))
        if any(labels.get("bad") for labels, _ in decoded):
            return web.Response(status=400, text="out of bounds")
        self.accepted.append(decoded)
        return web.Response(status=204)


@pytest.mark.parametrize("keyed", [True, False])
async def test_a_refused_request_is_split_so_only_the_bad_series_is_dropped(keyed: bool) -> None:
    m = SelfMetrics()
    rec = PickyReceiver()
    async with running_receiver(rec):
        rw = RemoteWrite([WriterSettings(url=rec.url, name="w", batch=1000, flush_deadline=0.01)], metrics=m,
                         spool_dir=None)
        await rw.start()
        chunks = [scrape(t, 1)._replace(key=k if keyed else 0) for k, t in enumerate("abcdefg", 1)]
        bad = Chunk(chunk_bytes("m", [(1.0, 1)], target="h", i="0")
                    + chunk_bytes("m", [(1.0, 1)], target="h", i="1", bad="1")
                    + chunk_bytes("m", [(1.0, 1)], target="h", i="2"), 3, 8 if keyed else 0)
        await rw.append([*chunks[:3], bad, *chunks[3:]])
        await rw.close(5.0)
    got = rec.samples()
    assert len(got) == 7 * 5 + 2, "every valid sample of every target arrived"
    assert not any("bad=1" in series for series, _, _ in got)
    st = rw.stats()[0]
    assert st.sent == 37 and st.dropped_by_reason == {"http_400": 1}
    assert st.appended == st.sent + st.dropped + st.evicted + st.pending_samples
    assert value(m, "kubescrape_samples_dropped_total", writer="w", reason="http_400") == 1
    assert rec.requests <= 2 * 8 + 2 * 3, "bisection, not one request per series"


def test_halves_split_by_chunk_then_by_series() -> None:
    a, b, c = scrape("a", 1), scrape("b", 1), scrape("c", 1)
    assert halves([a, b, c]) == ([a], [b, c])
    first, second = halves([a]) or ([], [])
    assert len(first) == 2 and len(second) == 3 and all(p.samples == 1 for p in first + second)
    assert b"".join(p.data for p in first + second) == a.data
    assert halves([Chunk(chunk_bytes("m", [(1.0, 1)]), 1)]) is None, "one series cannot be split"
    assert halves([Chunk(b"\xff\xff", 2)]) is None


async def test_drops_are_logged_once_per_reason_and_always_counted(caplog: pytest.LogCaptureFixture) -> None:
    rec = PickyReceiver()
    async with running_receiver(rec):
        rw = RemoteWrite([WriterSettings(url=rec.url, name="w", flush_deadline=0.0)], metrics=SelfMetrics(),
                         spool_dir=None)
        await rw.start()
        with caplog.at_level(logging.ERROR, logger="kubescrape.remote_write"):
            for ts in range(1, 6):
                await rw.append([Chunk(chunk_bytes("m", [(1.0, ts)], bad="1"), 1)])
                for _ in range(200):
                    if rw.stats()[0].dropped == ts:
                        break
                    await asyncio.sleep(0.01)
        await rw.close(5.0)
    assert rw.stats()[0].dropped_by_reason == {"http_400": 5}
    lines = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(lines) == 1 and "http_400" in lines[0] and "out of bounds" in lines[0]


def test_a_refused_compressed_chunk_splits_by_series() -> None:
    """A spooled chunk is snappy-compressed; the rare 400-split decompresses it and splits by series."""
    data = chunk_bytes("a", [(1.0, 1)]) + chunk_bytes("b", [(2.0, 2)]) + chunk_bytes("c", [(3.0, 3)])
    packed = Chunk(compress(data), 3, key=9, snappy=True)
    split = halves([packed])
    assert split is not None
    left, right = split
    assert [c.samples for c in left + right] == [1, 1, 1] and all(c.key == 9 for c in left + right)
    assert b"".join(c.data for c in left + right) == data
    assert decompress(request_body(left + right)) == data == plain(packed).data
