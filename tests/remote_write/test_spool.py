from __future__ import annotations

import asyncio
import errno
import hashlib
import logging
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from kubescrape.errors import SpoolError
from kubescrape.remote_write import Chunk
from kubescrape.remote_write.dispatcher import plain, request_body
from kubescrape.remote_write.encode import compress, decompress, snappy_concat
from kubescrape.remote_write.queue import Record, RemoteWrite, WriterSettings
from kubescrape.remote_write.spool import (
    ACK,
    FRAME,
    HEADER,
    IOV_MAX,
    Spool,
    _Segment,
    encode_record,
    frame_chunks,
    pack_chunks,
    record_parts,
    scan_segment,
    unframe_chunks,
)
from kubescrape.selfmon import SelfMetrics
from kubescrape.testing import FakeClock
from tests.remote_write.receiver import Receiver, chunk_bytes, running_receiver


def chunk(i: int, samples: int = 10) -> Chunk:
    # Incompressible (hash bytes): the spool stores chunks compressed, and sizes here must be known.
    return Chunk(b"".join(hashlib.sha256(f"record-{i:05d}-{j}".encode()).digest() for j in range(8))[:260],
                 samples)


def segments(d: Path) -> list[Path]:
    return sorted(d.glob("*.seg"))


def data_of(records: Sequence[Record]) -> list[bytes]:
    return [plain(r.chunks[0]).data for r in records]


def test_frame_roundtrip() -> None:
    chunks = (Chunk(b"abc", 3), Chunk(b"", 0), Chunk(b"x" * 1000, 7, key=0xFFFFFFFF), Chunk(b"y", 1, key=42))
    assert unframe_chunks(frame_chunks(chunks)) == chunks


async def test_replay_after_restart_in_order_and_acked_records_not_replayed(tmp_path: Path) -> None:
    sp = Spool(tmp_path, segment_bytes=1500)
    for i in range(10):
        await sp.put([chunk(i)])
    assert sp.pending_samples == 100 and sp.bytes > 0
    sp.ack(sp.take(30))
    taken = sp.take(20)  # in flight when the process "dies": must come back
    assert data_of(taken) == [chunk(3).data, chunk(4).data]
    await sp.close()

    sp2 = Spool(tmp_path, segment_bytes=1500)
    assert sp2.pending_samples == 70
    assert data_of(sp2.take(1000)) == [chunk(i).data for i in range(3, 10)]
    await sp2.close()


async def test_unclean_exit_replays_everything_unacked(tmp_path: Path) -> None:
    sp = Spool(tmp_path)
    for i in range(5):
        await sp.put([chunk(i)])
    sp.ack(sp.take(20))
    # no close(): as after kill -9 (the ack cursor was still written on ack)
    sp2 = Spool(tmp_path)
    assert data_of(sp2.take(1000)) == [chunk(i).data for i in range(2, 5)]
    await sp2.close()
    await sp.close()


async def test_ack_deletes_fully_acknowledged_segments(tmp_path: Path) -> None:
    sp = Spool(tmp_path, segment_bytes=600)
    for i in range(12):
        await sp.put([chunk(i)])
    before = len(segments(tmp_path))
    assert before >= 4
    sp.ack(sp.take(60))
    mid = len(segments(tmp_path))
    assert 0 < mid < before
    sp.ack(sp.take(1000))
    (current,) = segments(tmp_path)
    assert current.stat().st_size == 0 and sp.bytes == 0, "all delivered: only the emptied current file"
    await sp.put([chunk(99)])
    assert segments(tmp_path) == [current], "the emptied file takes the next record"
    sp.ack(sp.take(1000))
    assert sp.pending_samples == 0
    await sp.close()
    assert segments(tmp_path) == [], "closed with everything delivered: no files left"
    sp2 = Spool(tmp_path)
    assert sp2.take(1000) == []
    await sp2.close()


async def test_acknowledged_records_still_in_a_segment_are_not_counted_as_damage(tmp_path: Path) -> None:
    """A segment whose first records are acknowledged and the rest not (killed between rounds): the
    acknowledged ones are left out at open, silently; only the others are replayed."""
    corrupt: list[int] = []
    sp = Spool(tmp_path)
    for i in range(3):
        await sp.put([chunk(i)])
    sp.ack(sp.take(10))
    sp2 = Spool(tmp_path, on_corrupt=corrupt.append)
    assert data_of(sp2.take(1000)) == [chunk(1).data, chunk(2).data]
    assert corrupt == [] and sp2.corrupt_records == 0
    await sp2.close()
    await sp.close()


async def test_emptied_segment_reused_replays_exactly_the_unacked_records(tmp_path: Path) -> None:
    """A keeping-up spool empties its one file and appends to it again: after a kill (no close), the
    records appended since are replayed in order, the delivered ones are not, nothing counts as corrupt."""
    corrupt: list[int] = []
    sp = Spool(tmp_path)
    for i in range(3):
        await sp.put([chunk(i)])
    sp.ack(sp.take(1000))
    (current,) = segments(tmp_path)
    assert current.stat().st_size == 0
    for i in range(3, 6):
        await sp.put([chunk(i)])
    sp.ack(sp.take(10))  # record 3 delivered, 4 and 5 not
    assert segments(tmp_path) == [current]
    sp2 = Spool(tmp_path, on_corrupt=corrupt.append)  # the first one was never closed: as after SIGKILL
    assert data_of(sp2.take(1000)) == [chunk(4).data, chunk(5).data]
    assert corrupt == [] and sp2.corrupt_records == 0
    await sp2.close()
    await sp.close()


async def test_eviction_counts_every_evicted_sample_exactly(tmp_path: Path) -> None:
    sp = Spool(tmp_path, max_bytes=10_000, segment_bytes=2_000)
    total = 0
    for i in range(100):
        await sp.put([chunk(i, samples=i + 1)])
        total += i + 1
        assert sp.bytes <= 10_000 + 2_000 + 600
    remaining = sp.take(10**9)
    assert sp.evicted_samples + sum(r.samples for r in remaining) == total
    assert sp.evicted_samples == sp.counters.evicted > 0
    # the oldest went first: what is left is a contiguous tail ending with the newest record
    seqs = [r.seq for r in remaining]
    assert seqs == list(range(seqs[0], 101))
    await sp.close()


async def test_in_flight_records_are_not_counted_as_evicted(tmp_path: Path) -> None:
    sp = Spool(tmp_path, max_bytes=3_000, segment_bytes=1_000)
    await sp.put([chunk(0, 5)])
    await sp.put([chunk(1, 5)])
    inflight = sp.take(5)
    for i in range(2, 20):
        await sp.put([chunk(i, 5)])
    sp.ack(inflight)  # delivered after its file was evicted: fine, and not double counted
    left = sp.take(10**9)
    assert sp.evicted_samples + sum(r.samples for r in left) + 5 == 100
    assert sp.counters.sent == 5 and sp.counters.unaccounted() == 0
    await sp.close()


async def test_truncated_tail_is_skipped_counted_and_open_succeeds(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sp = Spool(tmp_path)
    for i in range(5):
        await sp.put([chunk(i)])
    await sp.close()
    (seg,) = segments(tmp_path)
    size = seg.stat().st_size
    with seg.open("r+b") as f:
        f.truncate(size - 17)  # killed in the middle of writing record 5
    corrupt: list[int] = []
    with caplog.at_level(logging.WARNING):
        sp2 = Spool(tmp_path, on_corrupt=corrupt.append)
    assert corrupt == [1] and "skipped 1 record" in caplog.text
    assert data_of(sp2.take(1000)) == [chunk(i).data for i in range(4)]
    await sp2.put([chunk(50)])  # new records get new sequence numbers and survive
    await sp2.close()
    corrupt.clear()
    sp3 = Spool(tmp_path, on_corrupt=corrupt.append)
    assert corrupt == [], "the damage is repaired, not counted again"
    assert data_of(sp3.take(1000))[-1] == chunk(50).data
    await sp3.close()


@pytest.mark.parametrize("where", ["payload", "header"])
async def test_flipped_byte_skips_exactly_that_record(tmp_path: Path, where: str) -> None:
    sp = Spool(tmp_path)
    for i in range(6):
        await sp.put([chunk(i)])
    await sp.close()
    (seg,) = segments(tmp_path)
    raw = bytearray(seg.read_bytes())
    scan = scan_segment(bytes(raw), 0)
    off, length, *_ = scan.records[2]
    pos = off + (HEADER.size + length // 2 if where == "payload" else 5)  # payload byte or the length field
    raw[pos] ^= 0x40
    seg.write_bytes(bytes(raw))
    corrupt: list[int] = []
    sp2 = Spool(tmp_path, on_corrupt=corrupt.append)
    assert corrupt == [1]
    assert data_of(sp2.take(1000)) == [chunk(i).data for i in (0, 1, 3, 4, 5)]
    await sp2.close()


async def test_garbage_segment_and_damaged_cursor_do_not_stop_the_open(tmp_path: Path) -> None:
    sp = Spool(tmp_path)
    await sp.put([chunk(1)])
    sp.ack(sp.take(100))
    await sp.put([chunk(2)])
    await sp.close()
    (tmp_path / "ack").write_bytes(b"garbage")
    (tmp_path / f"{10**6:020d}.seg").write_bytes(b"\x00" * 100)
    corrupt: list[int] = []
    sp2 = Spool(tmp_path, on_corrupt=corrupt.append)
    assert corrupt == [1]
    # with the cursor lost, everything still on disk is replayed (receivers ignore duplicates)
    assert chunk(2).data in data_of(sp2.take(1000))
    await sp2.close()


def test_unwritable_directory_raises_spool_error_with_fix(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SpoolError) as ei:
        Spool(blocker / "spool")
    assert "--spool-dir" in str(ei.value)


async def test_concurrent_appends_share_fsyncs_and_keep_all_records(tmp_path: Path) -> None:
    sp = Spool(tmp_path)
    await asyncio.gather(*(sp.put([chunk(i)]) for i in range(50)))
    assert sorted(data_of(sp.take(10**6))) == sorted(chunk(i).data for i in range(50))
    await sp.close()


async def test_remote_write_with_spool_survives_outage_and_restart(tmp_path: Path) -> None:
    m = SelfMetrics()
    rec = Receiver(script=[(503, {"Retry-After": "0"}, "down")] * 10**6)
    async with running_receiver(rec):
        s = WriterSettings(url=rec.url, name="w", batch=50, flush_deadline=0.0, min_backoff=0.01)
        rw = RemoteWrite([s], metrics=m, spool_dir=tmp_path, clock=FakeClock())
        await rw.start()
        for ts in range(1, 21):
            await rw.append([Chunk(chunk_bytes("m", [(1.0, ts)], t="a"), 1)])
        await asyncio.sleep(0.05)
        await rw.close(0.05)
        assert rw.stats()[0].pending_samples == 20
        rec.script.clear()  # the backend recovers; a new process opens the same spool
        m2 = SelfMetrics()
        rw2 = RemoteWrite([s], metrics=m2, spool_dir=tmp_path)
        await rw2.start()
        await rw2.append([Chunk(chunk_bytes("m", [(1.0, 21)], t="a"), 1)])
        await rw2.close(5.0)
    assert [ts for _, _, ts in rec.samples()] == list(range(1, 22))
    assert rw2.stats()[0].pending_samples == 0
    assert m2.registry.get_sample_value("kubescrape_samples_sent_total", {"writer": "w"}) == 21
    assert segments(tmp_path / "w") == []


# --- the in-memory cache of unread records and the copy-free write ---------------------------------


def multi(i: int) -> list[Chunk]:
    """A record of several chunks with routing keys (incl. 0 and the largest u32) and an empty chunk."""
    return [Chunk(f"a{i}".encode() * 50, 3, key=i + 1), Chunk(b"", 0),
            Chunk(f"b{i}".encode() * 70, 4, key=0xFFFFFFFF), Chunk(f"c{i}".encode() * 30, 2)]


def count_disk_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Patch segment reads to record each read's length (the cache must make them unnecessary)."""
    reads: list[int] = []
    original = _Segment.read

    def read(self: _Segment, offset: int, length: int) -> bytes:
        reads.append(length)
        return original(self, offset, length)

    monkeypatch.setattr(_Segment, "read", read)
    return reads


@pytest.mark.parametrize("chunks", [[Chunk(b"abc", 3)], [Chunk(b"", 0)], multi(7), [Chunk(b"z", 1)] * 3])
def test_record_parts_are_byte_identical_to_encode_record(chunks: list[Chunk]) -> None:
    parts, length = record_parts(42, sum(c.samples for c in chunks), 1.5, chunks)
    payload = frame_chunks(chunks)
    assert length == len(payload)
    assert b"".join(parts) == encode_record(42, sum(c.samples for c in chunks), 1.5, payload)
    assert any(p is chunks[0].data for p in parts), "the chunk's own bytes are written, not a copy"


async def test_take_from_memory_equals_disk_replay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reads = count_disk_reads(monkeypatch)
    sp = Spool(tmp_path / "s", segment_bytes=2_000)
    for i in range(8):
        await sp.put(multi(i))
    assert sp.cached_bytes == sum(len(c.data) for i in range(8) for c in pack_chunks(multi(i)))
    from_memory = sp.take(10**6)
    assert reads == [], "recently appended records come from memory"
    assert sp.cached_bytes == 0, "taken records leave the cache"
    await sp.close()

    sp2 = Spool(tmp_path / "s", segment_bytes=2_000)  # a restart: everything comes from disk
    assert sp2.cached_bytes == 0
    from_disk = sp2.take(10**6)
    assert len(reads) == 8
    assert from_disk == from_memory
    assert [tuple(map(plain, r.chunks)) for r in from_disk] == [tuple(multi(i)) for i in range(8)]
    assert all(type(c) is Chunk and type(c.data) is bytes for r in from_memory for c in r.chunks)
    await sp2.close()


async def test_cache_budget_is_respected_and_uncached_records_are_read_from_disk(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reads = count_disk_reads(monkeypatch)
    size = len(pack_chunks([chunk(0)])[0].data)  # as stored: compressed (the same for every chunk(i))
    sp = Spool(tmp_path, cache_bytes=3 * size + 10)
    for i in range(6):
        await sp.put([chunk(i)])
        assert sp.cached_bytes <= 3 * size + 10
    assert sp.cached_bytes == 3 * size, "the oldest three are cached, the newer ones only on disk"
    first = sp.take(20)
    assert data_of(first) == [chunk(0).data, chunk(1).data] and reads == []
    rest = sp.take(10**6)
    assert data_of(rest) == [chunk(i).data for i in range(2, 6)]
    assert reads == [size + FRAME.size] * 3, "exactly the three records beyond the budget were read"
    assert sp.cached_bytes == 0
    sp.ack(first + rest)
    assert sp.pending_samples == 0 and sp.cached_bytes == 0
    await sp.close()


async def test_cache_off_reads_everything_from_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reads = count_disk_reads(monkeypatch)
    sp = Spool(tmp_path, cache_bytes=0)
    for i in range(3):
        await sp.put([chunk(i)])
    assert sp.cached_bytes == 0
    assert data_of(sp.take(10**6)) == [chunk(i).data for i in range(3)] and len(reads) == 3
    await sp.close()


async def test_evicted_records_leave_the_cache(tmp_path: Path) -> None:
    sp = Spool(tmp_path, max_bytes=6_000, segment_bytes=1_000, cache_bytes=10**6)
    for i in range(40):
        await sp.put([chunk(i)])
    assert sp.evicted_samples > 0
    left = sp.take(10**6)
    assert sp.cached_bytes == 0
    assert sp.evicted_samples + sum(r.samples for r in left) == 400
    assert data_of(left) == [chunk(r.seq - 1).data for r in left]
    await sp.close()


async def test_a_reused_buffer_cannot_change_an_accepted_record(tmp_path: Path) -> None:
    buf = bytearray(b"original" * 10)
    sp = Spool(tmp_path)
    await sp.put([Chunk(buf, 1)])  # type: ignore[arg-type]  # callers may hand in any buffer
    buf[:8] = b"MUTATED!"
    (rec,) = sp.take(10)
    assert tuple(map(plain, rec.chunks)) == (Chunk(b"original" * 10, 1),)
    assert type(rec.chunks[0].data) is bytes
    await sp.close()


async def test_more_chunks_than_one_writev_accepts(tmp_path: Path) -> None:
    chunks = [Chunk(f"{i}".encode(), 1, key=i) for i in range(2 * IOV_MAX + 7)]
    sp = Spool(tmp_path)
    await asyncio.gather(sp.put(chunks), sp.put(chunks[:5]))
    await sp.close()
    sp2 = Spool(tmp_path)
    assert [tuple(map(plain, r.chunks)) for r in sp2.take(10**6)] == [tuple(chunks), tuple(chunks[:5])]
    await sp2.close()


# --- write errors are counted, reported, and never leave a caller waiting ----------------------------


async def test_disk_full_is_counted_reported_and_frees_space_once_acknowledged(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sp = Spool(tmp_path)
    await sp.put([chunk(0)])
    await sp.put([chunk(1)])
    original = Spool._write
    full = True

    def write(self: Spool, items: list[tuple[int, int, float, tuple[Chunk, ...]]], expected_size: int,
              new_segment: bool) -> list[tuple[tuple[Chunk, ...], int]]:
        if full:
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, items, expected_size, new_segment)

    monkeypatch.setattr(Spool, "_write", write)
    with pytest.raises(SpoolError, match="No space left on device"):
        await asyncio.wait_for(sp.put([chunk(2, samples=7)]), 5)
    c = sp.counters
    assert c.dropped == {"spool_full": 7} and "cannot persist" in c.persist_error
    assert c.appended == 27 and c.unaccounted() == 0
    (old,) = segments(tmp_path)
    sp.ack(sp.take(100))
    full = False
    await sp.put([chunk(3)])
    assert c.persist_error == "", "a successful write ends the failure"
    assert old not in segments(tmp_path), "the acknowledged segment is gone: its space is free again"
    assert data_of(sp.take(100)) == [chunk(3).data]
    assert c.unaccounted() == 0
    await sp.close()


async def test_any_exception_in_the_flusher_fails_its_puts_counted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sp = Spool(tmp_path)

    def broken(self: Spool, *args: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(Spool, "_write", broken)
    results = await asyncio.wait_for(
        asyncio.gather(*(sp.put([chunk(i, samples=2)]) for i in range(3)), return_exceptions=True), 5)
    assert all(isinstance(r, SpoolError) and "RuntimeError" in str(r) for r in results)
    assert sp.counters.dropped == {"spool_error": 6} and sp.counters.unaccounted() == 0
    await sp.close()


async def test_an_attached_flusher_that_fails_leaves_no_put_waiting(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sp = Spool(tmp_path)
    sp.attach()
    calls = 0
    original = Spool._write

    def flaky(self: Spool, *args: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ValueError("once")
        return original(self, *args)

    monkeypatch.setattr(Spool, "_write", flaky)
    runner = asyncio.create_task(sp.run())
    with pytest.raises(SpoolError):
        await asyncio.wait_for(sp.put([chunk(0)]), 5)
    with pytest.raises(ValueError):
        await asyncio.wait_for(runner, 5)  # the flusher ends with the error: its supervisor restarts it
    runner = asyncio.create_task(sp.run())
    await asyncio.wait_for(sp.put([chunk(1)]), 5)
    assert data_of(sp.take(100)) == [chunk(1).data]
    await asyncio.wait_for(sp.close(), 5)
    await asyncio.wait_for(runner, 5)


async def test_a_record_that_can_never_be_read_is_dropped_counted_not_retried_forever(tmp_path: Path) -> None:
    sp = Spool(tmp_path, segment_bytes=600, cache_bytes=0)
    for i in range(6):
        await sp.put([chunk(i)])
    files = segments(tmp_path)
    assert len(files) >= 3
    lost = files[1]
    first_seq = int(lost.name[:-4])
    lost.unlink()  # removed behind the agent's back (or truncated: the read comes up short)
    taken = sp.take(10**6)
    assert [r.seq for r in taken] == list(range(1, first_seq)), "the readable ones first"
    sp.ack(taken)
    rest = sp.take(10**6)
    assert rest and rest[0].seq > first_seq
    assert sp.counters.dropped["spool_read_error"] > 0
    sp.ack(rest)
    assert sp.pending_samples == 0 and sp.counters.unaccounted() == 0
    await sp.close()


# --- the compressed format, the format before it, and the two-slot ack cursor ---------------------


def test_snappy_blocks_concatenate_without_recompression() -> None:
    parts = [chunk(i).data for i in range(3)] + [b"abc" * 500, b"", b"x"]
    body = snappy_concat([compress(p) for p in parts])
    assert decompress(body) == b"".join(parts)
    assert request_body([Chunk(compress(parts[0]), 1, 0, True), Chunk(parts[3], 1)]) == \
        snappy_concat([compress(parts[0]), compress(parts[3])])


async def test_records_of_the_previous_format_replay(tmp_path: Path) -> None:
    """Segments and cursor written by the earlier version (plain chunks, an ``ack`` file) still open."""
    def old_record(seq: int, data: bytes) -> bytes:
        payload = struct.pack("<III", 10, len(data), 7) + data
        rest = struct.pack("<IQId", len(payload), seq, 10, 1.0)
        return struct.pack("<I", zlib.crc32(payload, zlib.crc32(rest))) + rest + payload

    (tmp_path / f"{1:020d}.seg").write_bytes(b"".join(old_record(s, chunk(s).data) for s in (1, 2, 3)))
    (tmp_path / "ack").write_bytes(struct.pack("<QI", 1, zlib.crc32(struct.pack("<Q", 1))))
    sp = Spool(tmp_path)
    recs = sp.take(10**6)
    assert [r.seq for r in recs] == [2, 3] and data_of(recs) == [chunk(2).data, chunk(3).data]
    assert all(not c.snappy and c.key == 7 for r in recs for c in r.chunks)
    await sp.put([chunk(4)])
    sp.ack(recs)
    assert not (tmp_path / "ack").exists(), "the old cursor file is replaced by the two-slot one"
    await sp.close()
    sp2 = Spool(tmp_path)
    assert data_of(sp2.take(10**6)) == [chunk(4).data]
    await sp2.close()


async def test_spooled_chunks_are_compressed_on_disk(tmp_path: Path) -> None:
    c = Chunk(b"container_cpu_usage_seconds_total{pod=\"x\"} " * 200, 5, key=3)
    sp = Spool(tmp_path)
    await sp.put([c])
    await sp.close()
    assert sum(p.stat().st_size for p in segments(tmp_path)) < len(c.data) // 4
    sp2 = Spool(tmp_path)
    (rec,) = sp2.take(10)
    assert rec.chunks[0].snappy and plain(rec.chunks[0]) == c
    await sp2.close()


@pytest.mark.parametrize("cut", range(ACK.size + 1))
async def test_a_torn_cursor_write_falls_back_to_the_previous_slot(tmp_path: Path, cut: int) -> None:
    """A crash in the middle of overwriting a cursor slot (any prefix of the new bytes landed) leaves
    the previous cursor readable: at most one round is sent again, nothing acknowledged is lost twice."""
    sp = Spool(tmp_path)
    for i in range(4):
        await sp.put([chunk(i)])
    sp.ack(sp.take(10))  # seq 1 -> slot 0
    sp.ack(sp.take(10))  # seq 2 -> slot 1
    await sp.close()
    raw = bytearray((tmp_path / "cursor").read_bytes())
    new = ACK.pack(3, zlib.crc32(struct.pack("<Q", 3)))
    raw[:cut] = new[:cut]  # the next write (seq 3) goes to slot 0 and is torn after ``cut`` bytes
    (tmp_path / "cursor").write_bytes(bytes(raw))
    sp2 = Spool(tmp_path)
    got = [r.seq for r in sp2.take(10**6)]
    assert got == ([4] if cut == ACK.size else [3, 4]), "the torn slot is ignored, the other one holds"
    await sp2.close()


async def test_cursor_slots_alternate_and_survive_reopen(tmp_path: Path) -> None:
    for round_ in range(3):
        sp = Spool(tmp_path)
        for i in range(3):
            await sp.put([chunk(i)])
        recs = sp.take(10**6)
        assert len(recs) == 3
        sp.ack(recs[:1])
        sp.ack(recs[1:2])
        await sp.close()
        sp = Spool(tmp_path)
        rest = sp.take(10**6)
        assert [r.seq for r in rest] == [recs[2].seq], f"reopen {round_}"
        sp.ack(rest)
        await sp.close()
    assert (tmp_path / "cursor").stat().st_size == 2 * ACK.size
