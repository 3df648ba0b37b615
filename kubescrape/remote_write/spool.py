"""The durable spool of one writer: an append-only segment log with CRC'd records and an ack cursor.

Why a segment log and not SQLite in WAL mode: both were measured with ``python3 bench/delivery.py
--spool-formats`` (300 appends of a 2000-sample, 421 KiB chunk, one fsync per append, 2-CPU VM)::

    segment log                     219 appends/s (438k samples/s)   replay 441 MB/s (incl. CRC check)
    SQLite WAL, synchronous=FULL    225 appends/s (450k samples/s)   replay 1,787 MB/s (no checksum)

Appends are fsync-bound and equal; both replay far faster than any backend ingests (delivery into
Prometheus runs at ~70k samples/s ≈ 15 MB/s). What decides is everything else: the spool is a FIFO
that is only ever appended to and dropped from the front. With segment files, acknowledging deletes
whole files (no per-record DELETE, no checkpoints, no free pages: the disk usage *is* the sum of file
sizes, so ``max_bytes`` is exact and eviction is an ``unlink`` that counts exactly the records in the
file); a torn tail after ``kill -9`` or a flipped bit is found by a per-record CRC, and because records
carry sequence numbers we can say exactly how many records were skipped. SQLite would give us crash
safety too, but a database file does not shrink after DELETE without VACUUM, and a damaged database
is all-or-nothing to recover.

Layout of a spool directory::

    00000000000000000001.seg   records with seq >= 1 (name = first seq the file was created for)
    00000000000000000734.seg   ...
    cursor                     two slots, each the last acknowledged seq (u64) + crc32

Record: ``crc32 u32 | length u32 | seq u64 | samples u32 | appended_at f64`` then ``length`` payload
bytes; the CRC covers everything after itself. The payload is the record's chunks, each framed as
``samples u32 | length u32 | key u32 | data``.

**Spool what is sent.** Each chunk's data is stored as one snappy block (the top bit of its frame's
``length`` says so): a scrape loop hands its chunks over compressed already, and any plain one is
compressed once in the flusher's worker thread: 4–8× fewer bytes written, CRC'd and
read back, and a request is assembled from the compressed chunks by
:func:`~kubescrape.remote_write.encode.snappy_concat` without compressing again. Chunks stay separate
(not one body per record) so that a round still routes them to shards by key and a refused request
still splits by chunk; only the rare paths that look inside a chunk (no routing key, a refused single
chunk split by series) decompress it. Records written before this format (plain chunks, flag clear)
and their ``ack`` file are read as they are; the ``ack`` file is deleted once ``cursor`` is written.

**The cheap round trip.** When the sender keeps up, a record is taken milliseconds after it was
appended, so reading it back from disk would only cost CPU. Records appended by this process keep
their (compressed) chunks in memory until they are taken, up to ``cache_bytes`` of chunk data
(default: 64 MiB or a quarter of ``max_bytes``, whichever is smaller); :meth:`Spool.take` hands those
out without touching the disk and reads the rest (records from a previous run, records appended while
the cache was full, so that a long outage costs disk space, not memory) from their segment files. A
record leaves the cache when it is taken or evicted. On the way in, a record is written with one
``writev`` of its header, frame headers and the compressed chunks, its CRC computed incrementally over
those parts, so the compressed data is not copied again in user space (measured with
``python3 -m bench.delivery --spool-roundtrip``).

Guarantees:

- **Durable on return**: :meth:`Spool.put` returns after the record is written and ``fsync``'d.
  Concurrent puts (many scrape loops) share one ``fsync`` (group commit), done in a worker thread so
  the event loop keeps running. ``fsync=False`` trades this for speed (data survives a process kill,
  not a power loss).
- **Ordered replay**: at open, every record after the ack cursor is handed out again, in seq order.
- **Deleted only after acknowledgement**: a segment file is deleted once every record in it is acked;
  the one being written is emptied instead (``ftruncate``) and written on, so a spool that keeps up
  creates no file per round (and closes with an empty directory).
  The cursor is one ``pwrite`` per acknowledged round into the older of its two fixed slots (no new
  file, no rename), not fsync'd: a torn slot fails its CRC and the other slot holds the previous
  cursor; a cursor lost to a crash or power cut means re-sending one round, which receivers accept
  (identical samples are not errors).
- **Bounded**: when the files exceed ``max_bytes``, the oldest segment is deleted; each not-yet-sent
  sample in it is counted exactly as evicted (records already in flight are not counted then: they are
  delivered or dropped by the dispatcher — or, if their round fails and they cannot be read again,
  counted as evicted at that moment).
- **Write errors are counted, not only logged**: when a group commit fails (disk full, I/O error), its
  puts raise :class:`SpoolError` and their samples are counted as appended and dropped with
  ``reason="spool_full"`` (ENOSPC, EDQUOT) or ``"spool_write_error"``; ``counters.persist_error`` says
  why until a write succeeds again (``/healthz`` reports it). Any other exception in the flusher fails
  its waiting puts (``reason="spool_error"``) and then ends the flusher, which its supervisor restarts:
  no ``put`` waits forever.
- **Books**: unread and in-flight records are kept in the shared
  :class:`~kubescrape.remote_write.ledger.Fifo`; records replayed at open count as appended (and
  replayed) in this process, so ``appended = sent + dropped + evicted + pending`` holds per process.
- **Corruption**: a truncated or checksum-failing record (``kill -9`` mid-write, a flipped bit) is
  found at open; the log resynchronises at the next record that verifies, the skipped records are
  counted through ``on_corrupt`` (by the gap in sequence numbers), a warning is logged, the segment is
  rewritten without the bad part (so it is not counted again) and the spool opens anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import struct
import zlib
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from kubescrape.clock import SYSTEM_CLOCK, Clock
from kubescrape.errors import SpoolError
from kubescrape.remote_write import Chunk
from kubescrape.remote_write.encode import compress
from kubescrape.remote_write.ledger import Fifo, Record, WriterCounters

_crc32_impl: Callable[[bytes | memoryview, int], int] | None = None


def _crc32(data: bytes | memoryview, value: int = 0) -> int:
    """zlib's CRC-32, computed by ISA-L when installed (a dependency, which inflates scrape bodies too;
    ~4x faster: ~0.5 ms for the 4.7 MB a 250-pod scrape spools); imported on first use, off start-up."""
    global _crc32_impl
    if _crc32_impl is None:
        try:
            from isal.isal_zlib import crc32
        except ImportError:  # pragma: no cover - isal missing: the standard library's
            crc32 = zlib.crc32
        _crc32_impl = crc32
    return _crc32_impl(data, value)

log = logging.getLogger("kubescrape.spool")

HEADER = struct.Struct("<IIQId")
FRAME = struct.Struct("<III")
ACK = struct.Struct("<QI")
SEQ = struct.Struct("<Q")
SUFFIX = ".seg"
# The ack cursor: two ACK-sized slots written in turn (``LEGACY_ACK``: one record, replaced by rename).
CURSOR = "cursor"
LEGACY_ACK = "ack"
# Set in a frame's length field: the chunk's data is one snappy block (records of earlier versions
# never set it: their chunks are plain).
SNAPPY = 1 << 31
# Buffers per writev call: the kernel refuses more than IOV_MAX (1024 on Linux).
IOV_MAX = min(1024, os.sysconf("SC_IOV_MAX")) if hasattr(os, "sysconf") else 1024
# How many following sequence numbers to look for when resynchronising after a bad record.
RESYNC_SPAN = 256


class _Meta(NamedTuple):
    seq: int
    offset: int
    length: int
    samples: int
    ts: float
    seg: _Segment
    # The record's chunks while it is unread and cached in memory (None: read it from ``seg``).
    chunks: tuple[Chunk, ...] | None = None
    cached_bytes: int = 0


@dataclass(eq=False)
class _Segment:
    first_seq: int
    path: Path
    size: int = 0
    last_seq: int = 0
    fd: int | None = field(default=None, repr=False)
    deleted: bool = False

    def read(self, offset: int, length: int) -> bytes:
        if self.fd is None:
            self.fd = os.open(self.path, os.O_RDONLY)
        data = os.pread(self.fd, length, offset)
        if len(data) != length:
            raise SpoolError(f"spool segment {self.path} is shorter than its index ({offset}+{length})",
                             "the file was modified while the agent ran; do not edit spool files")
        return data

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _frame(c: Chunk) -> bytes:
    return FRAME.pack(c.samples, len(c.data) | (SNAPPY if c.snappy else 0), c.key)


def frame_chunks(chunks: Sequence[Chunk]) -> bytes:
    """The payload of a record: each chunk as ``samples u32 | length u32 | key u32 | data`` (the top bit
    of ``length`` set when ``data`` is snappy-compressed)."""
    parts: list[bytes] = []
    for c in chunks:
        parts.append(_frame(c))
        parts.append(c.data)
    return b"".join(parts)


def unframe_chunks(payload: bytes) -> tuple[Chunk, ...]:
    """Inverse of :func:`frame_chunks`; reads the records of either format."""
    out: list[Chunk] = []
    pos = 0
    mv = memoryview(payload)
    while pos < len(payload):
        samples, length, key = FRAME.unpack_from(payload, pos)
        pos += FRAME.size
        snappy = bool(length & SNAPPY)
        length &= ~SNAPPY
        out.append(Chunk(bytes(mv[pos:pos + length]), samples, key, snappy))
        pos += length
    return tuple(out)


def pack_chunks(chunks: Sequence[Chunk]) -> tuple[Chunk, ...]:
    """``chunks`` with their data snappy-compressed, as they are spooled and sent."""
    return tuple(c if c.snappy or not c.data else Chunk(compress(c.data), c.samples, c.key, True)
                 for c in chunks)


def encode_record(seq: int, samples: int, ts: float, payload: bytes) -> bytes:
    """Header (with CRC) + payload of one record."""
    rest = HEADER.pack(0, len(payload), seq, samples, ts)[4:]
    crc = _crc32(payload, _crc32(rest))
    return struct.pack("<I", crc) + rest + payload


def record_parts(seq: int, samples: int, ts: float, chunks: Sequence[Chunk]) -> tuple[list[bytes], int]:
    """One record as buffers for ``writev`` (the chunks' own bytes, not copies) and its payload length.

    ``b"".join`` of the parts equals ``encode_record(seq, samples, ts, frame_chunks(chunks))``; the CRC
    is computed over the parts as they are, so the chunk data is not copied to build the record.
    """
    parts: list[bytes] = [b""]
    length = 0
    for c in chunks:
        parts.append(_frame(c))
        parts.append(c.data)
        length += FRAME.size + len(c.data)
    rest = HEADER.pack(0, length, seq, samples, ts)[4:]
    crc = _crc32(rest)
    for part in parts:
        crc = _crc32(part, crc)
    parts[0] = struct.pack("<I", crc) + rest
    return parts, length


def _valid_at(data: bytes, pos: int) -> tuple[int, int, int, float] | None:
    """(length, seq, samples, ts) if a record that verifies starts at ``pos``."""
    if pos < 0 or len(data) - pos < HEADER.size:
        return None
    crc, length, seq, samples, ts = HEADER.unpack_from(data, pos)
    end = pos + HEADER.size + length
    if end > len(data):
        return None
    mv = memoryview(data)
    if _crc32(mv[pos + HEADER.size:end], _crc32(mv[pos + 4:pos + HEADER.size])) != crc:
        return None
    return length, seq, samples, ts


class ScanResult(NamedTuple):
    """What :func:`scan_segment` found: good records (offset, length, seq, samples, ts) and the damage."""

    records: list[tuple[int, int, int, int, float]]
    skipped_records: int
    skipped_bytes: int


def scan_segment(data: bytes, prev_seq: int, acked: int = 0) -> ScanResult:
    """Parse a segment's bytes; skip (and count) truncated or corrupt records.

    ``prev_seq`` is the seq just before this segment's first record (the records must follow it, in
    order); ``acked`` the ack cursor: a damaged stretch counts the records it hides above the cursor
    (at least one), not acknowledged ones that an emptied and reused file no longer holds.
    """
    records: list[tuple[int, int, int, int, float]] = []
    skipped = 0
    skipped_bytes = 0
    pos = 0
    last = prev_seq
    n = len(data)
    while pos < n:
        ok = _valid_at(data, pos)
        if ok is not None and ok[1] > last:
            length, seq, samples, ts = ok
            records.append((pos, length, seq, samples, ts))
            last = seq
            pos += HEADER.size + length
            continue
        # Resynchronise: the next good record carries one of the next sequence numbers at offset 8.
        best: tuple[int, int] | None = None
        for s in range(last + 1, last + 1 + RESYNC_SPAN):
            i = data.find(SEQ.pack(s), pos + 9)
            while i != -1 and (best is None or i - 8 < best[0]):
                if _valid_at(data, i - 8) is not None:
                    best = (i - 8, s)
                    break
                i = data.find(SEQ.pack(s), i + 1)
        if best is None:
            skipped += 1
            skipped_bytes += n - pos
            break
        skipped += max(1, best[1] - max(last, acked) - 1)
        skipped_bytes += best[0] - pos
        pos = best[0]
    return ScanResult(records, skipped, skipped_bytes)


def _ack_slot(raw: bytes) -> int | None:
    """The seq in one cursor slot, or None if it is empty, torn or corrupt."""
    if len(raw) != ACK.size:
        return None
    seq, crc = ACK.unpack(raw)
    return int(seq) if _crc32(SEQ.pack(seq)) == crc else None


def _writev_all(fd: int, parts: list[bytes]) -> None:
    """``writev`` all of ``parts``; short writes are legal, so finish the rest."""
    total = sum(len(p) for p in parts)
    written = os.writev(fd, parts)
    while written < total:
        rest = memoryview(b"".join(parts))[written:]
        written += os.write(fd, rest)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """One writer's durable backlog (implements :class:`~kubescrape.remote_write.queue.Backlog`).

    Open it with :meth:`open` (from async code) or the constructor (does blocking I/O).
    """

    def __init__(self, directory: Path, *, max_bytes: int = 1 << 30, clock: Clock = SYSTEM_CLOCK,
                 counters: WriterCounters | None = None,
                 on_corrupt: Callable[[int], None] | None = None,
                 segment_bytes: int | None = None, fsync: bool = True,
                 cache_bytes: int | None = None) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.clock = clock
        self.counters = counters or WriterCounters(directory.name)
        self.fifo: Fifo[_Meta] = Fifo(self.counters)
        self.on_corrupt = on_corrupt or (lambda n: None)
        self.segment_bytes = segment_bytes or max(64 << 10, min(64 << 20, max_bytes // 8))
        self.fsync = fsync
        # See "The cheap round trip" in the module docstring; 0 turns the cache off.
        self.cache_bytes = min(64 << 20, max_bytes // 4) if cache_bytes is None else max(0, cache_bytes)
        self.data_ready = asyncio.Event()
        self.corrupt_records = 0
        self.corrupt_bytes = 0
        self.progress = 0  # group commits handled by the flusher: its supervisor's sign of recovery
        self._segments: deque[_Segment] = deque()
        self._bytes = 0
        self._cached = 0  # chunk bytes held by unread records' ``chunks`` (at most ``cache_bytes``)
        self._ack_seq = 0
        self._ack_written = 0  # the seq last written to the cursor file (or read from it)
        self._ack_slot = 0  # the cursor slot the next write goes to
        self._ack_fd: int | None = None
        self._legacy_ack = False  # an "ack" file of an earlier version is there (deleted on first write)
        self._next_seq = 1
        self._cur: _Segment | None = None
        self._wfd: int | None = None
        self._new_segment = False
        self._force_rotate = False
        self._pending: list[tuple[tuple[Chunk, ...], int, float, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stopped = asyncio.Event()
        self._attached = False
        self._running = False
        self._flushing = False
        self._ack_failing = False
        self._closing = False
        self._closed = False
        try:
            directory.mkdir(parents=True, exist_ok=True)
            self._load()
        except OSError as e:
            raise SpoolError(f"cannot open the spool at {directory}: {e}",
                             "check the --spool-dir path exists, is writable by the agent and the disk "
                             "is not full (or run with --no-spool)") from e

    @classmethod
    async def open(cls, directory: Path, *, max_bytes: int = 1 << 30, clock: Clock = SYSTEM_CLOCK,
                   counters: WriterCounters | None = None,
                   on_corrupt: Callable[[int], None] | None = None,
                   segment_bytes: int | None = None, fsync: bool = True,
                   cache_bytes: int | None = None) -> Spool:
        """Open (scan, repair, replay) without blocking the event loop."""
        return await asyncio.to_thread(
            lambda: cls(directory, max_bytes=max_bytes, clock=clock, counters=counters, on_corrupt=on_corrupt,
                        segment_bytes=segment_bytes, fsync=fsync, cache_bytes=cache_bytes))

    # --- opening ------------------------------------------------------------------------------

    def _load(self) -> None:
        self._ack_seq = self._read_ack()
        paths = sorted(p for p in self.directory.iterdir() if p.name.endswith(SUFFIX))
        # Records at or below the cursor may still be in a file (a segment is deleted or emptied only
        # once all of its records are acknowledged): they are read and left out below, not counted as
        # damage.
        prev = 0
        for path in paths:
            try:
                first = int(path.name[: -len(SUFFIX)])
            except ValueError:
                log.warning("spool %s: ignoring unexpected file %s", self.directory, path.name)
                continue
            data = path.read_bytes()
            scan = scan_segment(data, max(prev, first - 1), self._ack_seq)
            if scan.skipped_records:
                self.corrupt_records += scan.skipped_records
                self.corrupt_bytes += scan.skipped_bytes
                self.on_corrupt(scan.skipped_records)
                log.warning(
                    "spool %s: segment %s is damaged (truncated or corrupt, e.g. after a kill during a "
                    "write): skipped %d record(s), %d bytes; kept %d good record(s)",
                    self.directory, path.name, scan.skipped_records, scan.skipped_bytes, len(scan.records))
                data = self._rewrite(path, data, scan.records)
                scan = scan_segment(data, max(prev, first - 1), self._ack_seq)
            seg = _Segment(first, path, len(data))
            keep = False
            for offset, length, seq, samples, ts in scan.records:
                seg.last_seq = seq
                prev = max(prev, seq)
                if seq > self._ack_seq:
                    keep = True
                    self.fifo.push(_Meta(seq, offset + HEADER.size, length, samples, ts, seg), replayed=True)
            if not keep:
                path.unlink()
                continue
            self._segments.append(seg)
            self._bytes += seg.size
        self._next_seq = max(prev, self._ack_seq) + 1
        if self.fifo.unread:
            log.info("spool %s: %d samples in %d records to replay", self.directory, self.fifo.unread_samples,
                     len(self.fifo.unread))

    def _rewrite(self, path: Path, data: bytes, records: list[tuple[int, int, int, int, float]]) -> bytes:
        good = b"".join(data[off:off + HEADER.size + length] for off, length, *_ in records)
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as f:
            f.write(good)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(self.directory)
        return good

    def _read_ack(self) -> int:
        """The newest valid slot of the cursor (or the cursor file of earlier versions)."""
        found: list[int] = []
        damaged = False
        try:
            raw = (self.directory / CURSOR).read_bytes()
        except FileNotFoundError:
            raw = b""
        slots = [_ack_slot(raw[i * ACK.size:(i + 1) * ACK.size]) for i in range(2)]
        if raw and all(v is None for v in slots):
            damaged = True
        best = -1
        for i, v in enumerate(slots):
            if v is not None and v > best:
                best = v
                self._ack_slot = 1 - i  # the next write goes to the other slot
        if best >= 0:
            found.append(best)
        try:
            legacy = (self.directory / LEGACY_ACK).read_bytes()
        except FileNotFoundError:
            pass
        else:
            self._legacy_ack = True
            v = _ack_slot(legacy) if len(legacy) == ACK.size else None
            if v is None:
                damaged = True
            else:
                found.append(v)
        if damaged and not found:
            log.warning("spool %s: the ack cursor is damaged; replaying everything in the spool (the "
                        "receiver ignores samples it already has)", self.directory)
        self._ack_written = max(found, default=0)
        return self._ack_written

    def _write_ack(self) -> None:
        """Overwrite the older of the cursor's two slots: one ``pwrite``, no new file, no rename.

        A write torn by a crash leaves a slot whose CRC fails; the other slot still holds the previous
        cursor, so the worst case is re-sending one round (as with a cursor lost to a power cut).
        """
        if self._ack_seq == self._ack_written:
            return
        if self._ack_fd is None:
            self._ack_fd = os.open(self.directory / CURSOR, os.O_RDWR | os.O_CREAT, 0o600)
        os.pwrite(self._ack_fd, ACK.pack(self._ack_seq, _crc32(SEQ.pack(self._ack_seq))),
                  self._ack_slot * ACK.size)
        self._ack_slot = 1 - self._ack_slot
        self._ack_written = self._ack_seq
        if self._legacy_ack:
            with contextlib.suppress(FileNotFoundError):
                (self.directory / LEGACY_ACK).unlink()
            self._legacy_ack = False

    # --- writing ------------------------------------------------------------------------------

    def attach(self) -> None:
        """Someone (the writer's supervisor) runs :meth:`run`; without that, ``put`` flushes by itself."""
        self._attached = True

    async def put(self, chunks: Sequence[Chunk]) -> None:
        """Append one record; return once it is on disk (fsync'd unless ``fsync=False``).

        Raises :class:`SpoolError` when the record could not be written; its samples are counted
        (appended and dropped with a reason) before that.
        """
        if self._closed or self._closing:
            self.fifo.reject(sum(c.samples for c in chunks), "shutdown")
            raise SpoolError(f"spool {self.directory} is closed", "append before closing the spool")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # The chunks are kept as they are (for the cache and for writev); anything but plain ``bytes``
        # is copied once here, so a caller reusing a buffer cannot change what was accepted.
        kept = tuple(c if type(c.data) is bytes else Chunk(bytes(c.data), c.samples, c.key) for c in chunks)
        self._pending.append((kept, sum(c.samples for c in kept), self.clock.time(), fut))
        if self._attached:
            self._wake.set()
        elif self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_pending(), name=f"spool-flush {self.directory}")
            # Its failures reach the callers through their futures (settled in _flush_batch's finally).
            self._flusher.add_done_callback(lambda t: t.cancelled() or t.exception())
        await asyncio.shield(fut)

    async def run(self) -> None:
        """The flusher: write what ``put`` queued, one group commit at a time, until :meth:`close`."""
        self._running = True
        self._stopped.clear()
        try:
            while True:
                if self._pending:
                    await self._flush_pending()
                    continue
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
        finally:
            self._running = False
            self._stopped.set()

    async def _flush_pending(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            await self._flush_batch(batch)
            self.progress += 1

    async def _flush_batch(self, batch: list[tuple[tuple[Chunk, ...], int, float, asyncio.Future[None]]],
                           ) -> None:
        """Write one group commit. Every future of ``batch`` is settled when this returns or raises."""
        samples = sum(n for _, n, _, _ in batch)
        error: SpoolError | None = None
        accepted = False
        self._flushing = True
        try:
            try:
                self._maybe_rotate()
                cur = self._cur
                assert cur is not None
                items: list[tuple[int, int, float, tuple[Chunk, ...]]] = []
                for chunks, n, ts, _ in batch:
                    items.append((self._next_seq, n, ts, chunks))
                    self._next_seq += 1
                written = await asyncio.to_thread(self._write, items, cur.size, self._new_segment)
                metas: list[_Meta] = []
                offset = cur.size
                for (seq, n, ts, _), (packed, length) in zip(items, written, strict=True):
                    metas.append(_Meta(seq, offset + HEADER.size, length, n, ts, cur, packed))
                    offset += HEADER.size + length
            except OSError as e:
                full = e.errno in (errno.ENOSPC, errno.EDQUOT)
                error = SpoolError(
                    f"cannot write to the spool at {self.directory}: {e.strerror or e}",
                    "free disk space or lower --spool-max-bytes below the free space; check the directory "
                    "is writable" if full else "check the disk and that the directory is writable")
                self.fifo.reject(samples, "spool_full" if full else "spool_write_error")
                self.counters.persist_failed(f"cannot persist: {error}")
                # The failed records' sequence numbers stay unused (a gap is harmless at replay): a new
                # segment must never take the name of one that is still open. The next records go to a
                # new file, so that this one is deleted once its records are acknowledged: that is
                # what frees the space on a full disk.
                self._force_rotate = True
                return
            except BaseException as e:
                cancelled = isinstance(e, asyncio.CancelledError)
                error = SpoolError(
                    f"the spool at {self.directory} stopped while writing ({e!r})",
                    "the agent is shutting down" if cancelled else "this is a bug in kubescrape; the "
                    "spool writer is restarted, please report the error logged with it")
                self.fifo.reject(samples, "shutdown" if cancelled else "spool_error")
                if not cancelled:
                    self.counters.persist_failed(f"cannot persist: {error}")
                raise
            self._new_segment = False
            cur.last_seq = metas[-1].seq
            self._bytes += offset - cur.size
            cur.size = offset
            for m in metas:
                data_bytes = m.length - FRAME.size * len(m.chunks or ())
                if self._cached + data_bytes <= self.cache_bytes:
                    self._cached += data_bytes
                    m = m._replace(cached_bytes=data_bytes)
                else:
                    # Cache full (the sender is behind): this record is read back from disk when taken.
                    # Refusing the newest rather than dropping the oldest keeps the next takes cheap.
                    m = m._replace(chunks=None)
                self.fifo.push(m)
            accepted = True
            self.counters.persist_succeeded()
            self.data_ready.set()
            self._evict()
        finally:
            self._flushing = False
            if not accepted and error is None:
                # Failed after the write, before the records entered the books: count them here.
                error = SpoolError(f"spool {self.directory}: the write was abandoned",
                                   "this is a bug in kubescrape; please report the error logged with it")
                self.fifo.reject(samples, "spool_error")
            for *_, fut in batch:
                if fut.done():
                    continue
                if accepted or error is None:
                    fut.set_result(None)
                else:
                    fut.set_exception(error)

    def _maybe_rotate(self) -> None:
        if self._cur is not None and self._cur.size < self.segment_bytes and not self._force_rotate:
            return
        self._force_rotate = False
        if self._wfd is not None:
            os.close(self._wfd)
            self._wfd = None
        path = self.directory / f"{self._next_seq:020d}{SUFFIX}"
        self._wfd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._cur = _Segment(self._next_seq, path)
        self._segments.append(self._cur)
        self._new_segment = True
        self._drop_acked_segments()

    def _write(self, items: list[tuple[int, int, float, tuple[Chunk, ...]]], expected_size: int,
               new_segment: bool) -> list[tuple[tuple[Chunk, ...], int]]:
        """Worker-thread part of a flush: compress the records' plain chunks, writev (in IOV_MAX slices), one
        fsync (and the directory's, for a new file). Returns each record's stored chunks and length."""
        fd = self._wfd
        assert fd is not None
        out: list[tuple[tuple[Chunk, ...], int]] = []
        parts: list[bytes] = []
        for seq, n, ts, chunks in items:
            packed = pack_chunks(chunks)
            rec_parts, length = record_parts(seq, n, ts, packed)
            parts.extend(rec_parts)
            out.append((packed, length))
        try:
            for i in range(0, len(parts), IOV_MAX):
                _writev_all(fd, parts[i:i + IOV_MAX])
            if self.fsync:
                os.fsync(fd)
                if new_segment:
                    _fsync_dir(self.directory)
        except OSError:
            # Leave no half record behind for this run's offsets (disk full, I/O error).
            with contextlib.suppress(OSError):
                os.ftruncate(fd, expected_size)
            raise
        return out

    # --- reading and acknowledging --------------------------------------------------------------

    def take(self, max_samples: int) -> list[Record]:
        """The oldest unread records (at least one if any), up to ``max_samples`` samples, in order.

        All or nothing: if reading one of them fails, nothing is taken and the error propagates (the
        dispatcher is restarted and tries again) — unless the record can never be read (its file was
        truncated or removed behind the agent's back): then it is dropped, counted as
        ``reason="spool_read_error"``, and the next ones are taken.
        """
        taken: list[_Meta] = []
        out: list[Record] = []
        for m in self.fifo.peek(max_samples):
            try:
                chunks = m.chunks if m.chunks is not None else unframe_chunks(m.seg.read(m.offset, m.length))
            except (SpoolError, FileNotFoundError) as e:
                if taken:
                    break  # send the readable ones first; this one is at the head next time
                self.fifo.drop_oldest("spool_read_error")
                self._cached -= m.cached_bytes
                log.error("spool %s: record %d (%d samples) cannot be read and is dropped: %s",
                          self.directory, m.seq, m.samples, e)
                continue
            out.append(Record(m.seq, m.samples, m.ts, chunks))
            taken.append(m)
        light: list[_Meta] = []
        for m in taken:
            self._cached -= m.cached_bytes
            light.append(m._replace(chunks=None, cached_bytes=0))  # the round owns the chunks now
        self.fifo.start_flight(light)
        return out

    def ack(self, records: Sequence[Record], *, sent: int | None = None,
            dropped: Mapping[str, int] | None = None) -> None:
        """The backend has these records (the oldest taken, in order; ``sent``/``dropped`` as in
        :meth:`Fifo.ack`): advance the cursor, delete files."""
        if not records:
            return
        self.fifo.ack(records, sent=sent, dropped=dropped)
        self._ack_seq = records[-1].seq
        self._drop_acked_segments()
        try:
            self._write_ack()
        except OSError as e:
            if not self._ack_failing:  # once per streak: a full disk would otherwise log every round
                log.warning("spool %s: cannot write the ack cursor (%s); a restart will re-send some data",
                            self.directory, e)
            self._ack_failing = True
        else:
            self._ack_failing = False

    def release(self) -> None:
        """In-flight records go back to unread (their round failed); those whose file was evicted in the
        meantime are counted as evicted."""
        lost = self.fifo.release(keep=lambda m: not m.seg.deleted)
        if lost:
            log.warning("spool %s: %d in-flight samples were evicted before they could be re-sent",
                        self.directory, sum(m.samples for m in lost))

    def _drop_acked_segments(self) -> None:
        while self._segments and self._segments[0] is not self._cur and \
                self._segments[0].last_seq <= self._ack_seq:
            self._delete(self._segments.popleft())
        cur = self._cur
        idle = not self._pending and not self._flushing
        if cur is not None and idle and cur.size and list(self._segments) == [cur] and \
                cur.last_seq <= self._ack_seq:
            # Everything is delivered: empty the file and keep writing into it. Deleting it and creating
            # the next one made every interval of a keeping-up agent pay an open, an unlink and a
            # directory fsync (a journal commit) besides the record's own fsync. The file's name stays
            # below every seq it will hold, so the segments still sort in append order.
            if self._wfd is not None:
                try:
                    os.ftruncate(self._wfd, 0)
                except OSError:
                    pass  # delete it instead (below)
                else:
                    self._bytes -= cur.size
                    cur.size = 0
                    return
            if self._wfd is not None:
                os.close(self._wfd)
                self._wfd = None
            self._segments.clear()
            self._cur = None
            self._delete(cur)

    def _delete(self, seg: _Segment) -> None:
        seg.deleted = True
        seg.close()
        self._bytes -= seg.size
        with contextlib.suppress(FileNotFoundError):
            seg.path.unlink()

    def _evict(self) -> None:
        """Delete the oldest segments while over ``max_bytes``, counting every unsent sample in them."""
        while self._bytes > self.max_bytes and self._segments:
            seg = self._segments[0]
            if seg is self._cur:
                # Only the segment being written is left: start a new one with the next record so
                # this one can go then.
                self._force_rotate = True
                break
            self._segments.popleft()
            evicted = 0
            while self.fifo.unread and self.fifo.unread[0].seg is seg:
                m = self.fifo.evict_oldest()
                evicted += m.samples
                self._cached -= m.cached_bytes
            self._delete(seg)
            if evicted:
                log.warning("spool %s over its limit of %d bytes: evicted the oldest %d unsent samples",
                            self.directory, self.max_bytes, evicted)

    # --- state ----------------------------------------------------------------------------------

    @property
    def unread_samples(self) -> int:
        return self.fifo.unread_samples

    @property
    def evicted_samples(self) -> int:
        return self.counters.evicted

    @property
    def blocked(self) -> bool:
        """Never: the spool makes room by eviction, appends do not wait for the sender."""
        return False

    @property
    def pending_samples(self) -> int:
        return self.fifo.pending_samples

    @property
    def bytes(self) -> int:
        """Bytes of the segment files (what ``max_bytes`` limits)."""
        return self._bytes

    @property
    def cached_bytes(self) -> int:
        """Chunk bytes of unread records held in memory (at most ``cache_bytes``)."""
        return self._cached

    @property
    def memory_bytes(self) -> int:
        """What :attr:`cached_bytes` is: the rest of the unread records is read back from disk."""
        return self._cached

    def oldest_ts(self) -> float | None:
        return self.fifo.oldest_ts()

    async def close(self) -> None:
        """Finish pending writes, persist the cursor, close files. Unsent records stay for the next open.

        The flusher run by :meth:`run` ends by itself once everything queued is written; whatever is
        still queued when it is gone (stopped by its supervisor) is written here.
        """
        self._closing = True
        self._wake.set()
        if self._running:
            await self._stopped.wait()
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
        if self._pending:
            with contextlib.suppress(Exception):
                await self._flush_pending()
        self._closed = True
        with contextlib.suppress(OSError):
            self._write_ack()
        if self._ack_fd is not None:
            os.close(self._ack_fd)
            self._ack_fd = None
        if self._wfd is not None:
            os.close(self._wfd)
            self._wfd = None
        cur = self._cur
        if cur is not None and cur.size == 0 and list(self._segments) == [cur]:
            # Everything was delivered: leave an empty directory, not an empty segment file.
            self._segments.clear()
            self._cur = None
            self._delete(cur)
        for seg in self._segments:
            seg.close()
