"""Allocator tuning for the agent process (glibc only; a no-op elsewhere).

glibc's malloc serves a request of at least ``M_MMAP_THRESHOLD`` bytes (128 KiB at start) with its own
``mmap`` and unmaps it when freed. The threshold is *dynamic*: freeing such a block raises it to the
block's size (up to 32 MiB), and the trim threshold to twice that. Every scrape of a large target
allocates multi-megabyte buffers (the response body, ~13 MB for one node with 250 pods; the joined
remote-write chunks; the compressed request and the spool record), so after the first scrape they all
come from the heap, whose free space is returned only when more than ``2 x`` the largest buffer sits at
its very top. The heap then holds tens of MiB of freed pages that stay resident, and how many depends on
the order of the frees: the RSS of ``kubescrape run`` on one emulated node with 250 pods (~42k series,
2 s interval, remote write into a real Prometheus) wandered between 126 and 188 MiB from run to run
and within a run, with ``mallinfo2`` showing 20-40 MiB free in the heap.

Fixing both thresholds (which also turns the dynamic adjustment off) sends every buffer of 1 MiB or
more to ``mmap``, returned to the system as soon as it is freed, and trims the heap top beyond 1 MiB.
(The threshold sits above one remote-write chunk of 2,000 samples, ~850 KB: a scrape assembles and
compresses its chunks one at a time, so each reuses the heap space the previous one freed instead of
faulting in a fresh mapping; on one node with 250 pods at a 2 s interval that halved the minor page
faults, ~11,300 to ~5,200 per interval.)
Measured on the same set-up: steady RSS 120-124 MiB with a maximum of 121-126 MiB, for about 5,000
more minor page faults per scrape (~42k samples; well under a millisecond of CPU at ~0.1 µs each).

What remains free inside the heap (10-15 MiB: the body's 64 KiB read chunks, freed between live
objects, so the heap top never shrinks) is returned by ``malloc_trim(0)``, which releases the free pages
anywhere in every arena; :func:`trim_periodically` calls it once per scrape interval. Measured: steady
RSS 108-112 MiB (107 between scrapes), at ~1 ms per call plus the page faults below.
Python's small objects (pymalloc's arenas) are not affected by either.

The price is CPU: the pages given back are faulted in again by the next scrape (~1.6 µs per 4 KiB page
here: 13 MB of buffer cost 7 ms instead of 2 ms). At 1x250 and a 2 s interval that is ~8,000 more minor
faults per scrape, ~10 ms or ~0.25 µs per sample; at a 15 s interval it is negligible. With
``KUBESCRAPE_ALLOCATOR=default`` in the environment glibc's defaults are kept (no tuning, no trimming),
e.g. to compare both in a benchmark.

The largest of those buffers, the inflated gzip body, no longer exists: a scrape inflates and parses it in
256 KiB pieces (``kubescrape.client.GzipBody``), each reusing the heap space of the last. At 1x250 and a
2 s interval that took the agent from ~5,800 to ~2,500 minor faults per scrape (``bench/parse_pieces.py``,
the warm scrape alone: 5,900 to 2,500 faults, 68 to 57 ms of CPU; with glibc's defaults it is 56 ms
either way). What is faulted in again now is mostly the compressed chunks a scrape hands on (~4 MB)
and the compressed response (~2.5 MB).
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "trim_periodically", "tune_allocator"]

log = logging.getLogger("kubescrape.memory")

MMAP_THRESHOLD = 1024 * 1024
"""Blocks of this many bytes or more get their own mapping, unmapped when freed."""

TRIM_THRESHOLD = 1024 * 1024
"""Free memory beyond this at the top of the heap is returned to the system."""

# mallopt(3) parameter numbers (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def _glibc() -> ctypes.CDLL | None:
    """The process' own C library if it is glibc (whose malloc is the one in use) and the tuning is not
    turned off with ``KUBESCRAPE_ALLOCATOR=default``, else ``None``."""
    if os.environ.get("KUBESCRAPE_ALLOCATOR", "") == "default":
        return None
    try:
        glibc = (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
    except (ValueError, OSError):  # not a glibc system
        glibc = False
    return ctypes.CDLL(None) if glibc else None


def tune_allocator(libc: ctypes.CDLL | None = None) -> bool:
    """Fix glibc's mmap and trim thresholds for this process (see the module docstring).

    Returns whether both settings were applied: ``False``, doing nothing, on a C library other than
    glibc (musl, macOS) or when ``mallopt`` refuses a value. ``libc`` is for tests."""
    if libc is None:
        libc = _glibc()
        if libc is None:
            return False
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success, 0 on error.
    ok = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) & bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    if not ok:
        log.debug("mallopt refused the allocator thresholds; keeping glibc's defaults")
    return ok


async def trim_periodically(period: float, libc: ctypes.CDLL | None = None) -> None:
    """Return the free pages of malloc's heaps to the system every ``period`` seconds, until cancelled
    (see the module docstring). Returns at once where glibc's ``malloc_trim`` is absent. ``libc`` is for
    tests."""
    if libc is None:
        libc = _glibc()
    trim = getattr(libc, "malloc_trim", None) if libc is not None else None
    if trim is None:
        return
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    while True:
        await asyncio.sleep(period)
        trim(0)
