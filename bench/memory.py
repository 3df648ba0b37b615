"""What kubescrape keeps per series, and what its spool writes per sample (report only; nothing is asserted).

- **Series cache**: the Python heap a :class:`~kubescrape.scrape.cache.SeriesCache` holds for one target
  after two scrapes of the kubelet emulator's ``/metrics/cadvisor`` payload (N pods), and again in the
  steady state after ``--scrapes`` of them (what a running agent holds: memos that fill over several
  scrapes show only there), measured with ``tracemalloc`` (allocations made after the baseline and
  still alive: the cache's entries, its series order, its memos and the shared label-field cache of
  :mod:`kubescrape.remote_write.encode`), divided by the series the cache holds. The largest allocation
  sites of the steady state follow, so a change knows where the bytes are. ``peak`` is the transient
  high-water mark over all those scrapes.
- **Spool**: the bytes a :class:`~kubescrape.remote_write.spool.Spool` writes per sample (``wchar`` of
  ``/proc/self/io`` around ``put``, and around ``take`` + ``ack``), with its on-disk size per sample, next to
  the sizes of the chunks it is handed (encoded protobuf) and of the same chunks snappy-compressed as one
  remote-write request (what spooling the ready-to-send request would write).

    python3 -m bench.memory [--pods 100 --pods 250] [--scrapes 20] [--cache-scrapes 8]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import linecache
import sys
import tempfile
import tracemalloc
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make `bench` and `kubescrape` importable
    sys.path.insert(0, str(ROOT))

from bench.parse import cadvisor_scrapes  # noqa: E402
from kubescrape.remote_write import Chunk  # noqa: E402
from kubescrape.remote_write.encode import clear_label_cache, compress  # noqa: E402
from kubescrape.remote_write.spool import Spool  # noqa: E402
from kubescrape.scrape import cache as cache_module  # noqa: E402
from kubescrape.scrape.cache import SeriesCache  # noqa: E402

TS_MS = 1_700_000_015_000  # the emulated node's FakeClock time: its own timestamps fall in the window
# The labels a running agent adds to a cAdvisor series (target labels and the bench's global labels).
TARGET_LABELS = (
    ("agent_hostname", "bench"),
    ("bench_agent", "kubescrape"),
    ("instance", "127.0.0.1:10250"),
    ("job", "cadvisor"),
)


def labeler(name: str, labels: list[tuple[str, str]]) -> list[tuple[str, str]] | None:
    """Target labels on top of the exposed ones, as the scrape loop's labeler does without relabeling."""
    return [("__name__", name), *labels, *TARGET_LABELS]


@dataclass(frozen=True)
class CacheMemory:
    """Heap held by one target's series cache."""

    pods: int
    series: int
    samples: int
    payload_bytes: int
    held_bytes: int
    peak_bytes: int
    top_sites: list[tuple[str, int]]
    scrapes: int = 2
    steady_bytes: int = 0

    @property
    def bytes_per_series(self) -> float:
        return self.held_bytes / self.series if self.series else float("nan")

    @property
    def steady_bytes_per_series(self) -> float:
        return self.steady_bytes / self.series if self.series else float("nan")


def _site(filename: str, lineno: int) -> str:
    """``file.py:N  <the source line>`` for a report."""
    code = linecache.getline(filename, lineno).strip().replace("|", "\\|")  # a table cell
    return f"{Path(filename).name}:{lineno} {code}"[:100]


def cache_memory(pods: int, top: int = 6, scrapes: int = 8) -> CacheMemory:
    """Measure a series cache after a cold and a warm scrape of an N-pod node, then after ``scrapes`` in
    all (see the module docstring)."""
    bodies = cadvisor_scrapes(pods, max(2, scrapes))
    clear_label_cache()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        cache = SeriesCache(labeler)
        samples = cache.process(bodies[0], TS_MS).samples_scraped
        held = 0
        for i, body in enumerate(bodies[1:], start=1):
            cache.process(body, TS_MS + 15_000 * i)  # the result (chunks) is dropped, as after sending
            if i == 1:
                gc.collect()
                held, _ = tracemalloc.get_traced_memory()
        gc.collect()
        steady, peak = tracemalloc.get_traced_memory()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    series = len(cache)
    sites = [(_site(s.traceback[0].filename, s.traceback[0].lineno), s.size_diff)
             for s in after.compare_to(before, "lineno")[:top] if s.size_diff > 0]
    return CacheMemory(pods, series, samples, len(bodies[0]), held - base, peak - base, sites,
                       len(bodies), steady - base)


@dataclass(frozen=True)
class SpoolBytes:
    """Bytes the spool wrote for ``samples`` samples in ``records`` records (one per scrape)."""

    pods: int
    records: int
    samples: int
    chunk_bytes: int
    snappy_bytes: int
    put_written: int
    ack_written: int
    disk_bytes: int

    def per_sample(self, n: int) -> float:
        return n / self.samples if self.samples else float("nan")


def written_bytes() -> int:
    """Bytes this process has passed to write-like syscalls so far (``wchar`` of ``/proc/self/io``)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise RuntimeError("no wchar in /proc/self/io")


async def _spool_round_trips(
    directory: Path, scrapes: list[list[Chunk]], samples: int
) -> tuple[int, int, int]:
    spool = await Spool.open(directory)
    try:
        w0 = written_bytes()
        for chunks in scrapes:
            await spool.put(chunks)
        w1 = written_bytes()
        disk = sum(p.stat().st_size for p in directory.iterdir() if p.is_file())
        acked = 0
        while acked < samples:
            records = spool.take(samples)
            if not records:
                break
            spool.ack(records)
            acked += sum(r.samples for r in records)
        w2 = written_bytes()
    finally:
        await spool.close()
    return w1 - w0, w2 - w1, disk


def spool_bytes(pods: int, scrapes: int) -> SpoolBytes:
    """Put ``scrapes`` warm scrapes of an N-pod node into a fresh spool (a record each), take and ack them."""
    bodies = cadvisor_scrapes(pods, scrapes + 1)
    cache = SeriesCache(labeler)
    cache.process(bodies[0], TS_MS)
    records: list[list[Chunk]] = []
    samples = chunk_bytes = snappy_bytes = 0
    for i, body in enumerate(bodies[1:], start=1):
        result = cache.process(body, TS_MS + 15_000 * i)
        records.append(list(result.chunks))
        samples += sum(c.samples for c in result.chunks)
        data = b"".join(c.data for c in result.chunks)
        chunk_bytes += len(data)
        snappy_bytes += len(compress(data))
    with tempfile.TemporaryDirectory(prefix="kubescrape-bench-spool-") as tmp:
        put, ack, disk = asyncio.run(_spool_round_trips(Path(tmp), records, samples))
    return SpoolBytes(pods, len(records), samples, chunk_bytes, snappy_bytes, put, ack, disk)


def render_cache(rows: Sequence[CacheMemory]) -> str:
    """Markdown table of series-cache memory, then the allocation sites of the largest case."""
    out = [
        "| pods | series | samples | payload KiB | held KiB, 2 scrapes | bytes/series, 2 scrapes "
        "| scrapes | held KiB, steady | bytes/series, steady | peak KiB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        out.append(
            f"| {r.pods} | {r.series} | {r.samples} | {r.payload_bytes / 1024:.0f} "
            f"| {r.held_bytes / 1024:.0f} | {r.bytes_per_series:.0f} | {r.scrapes} "
            f"| {r.steady_bytes / 1024:.0f} | {r.steady_bytes_per_series:.0f} | {r.peak_bytes / 1024:.0f} |"
        )
    if rows and rows[-1].top_sites:
        biggest = rows[-1]
        title = f"Largest allocation sites still held after {biggest.scrapes} scrapes ({biggest.pods} pods):"
        out += ["", title, "",
                "| site | KiB | bytes/series |", "|---|---:|---:|"]
        for site, size in biggest.top_sites:
            out.append(f"| `{site}` | {size / 1024:.0f} | {size / max(1, biggest.series):.0f} |")
    return "\n".join(out) + "\n"


def render_spool(rows: Sequence[SpoolBytes]) -> str:
    """Markdown table of spool bytes per sample."""
    out = [
        "| pods | records | samples | chunk B/sample | snappy B/sample | spool put: written B/sample "
        "| take + ack: written B/sample | on disk B/sample |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        out.append(
            f"| {r.pods} | {r.records} | {r.samples} | {r.per_sample(r.chunk_bytes):.1f} "
            f"| {r.per_sample(r.snappy_bytes):.1f} | {r.per_sample(r.put_written):.1f} "
            f"| {r.per_sample(r.ack_written):.2f} | {r.per_sample(r.disk_bytes):.1f} |"
        )
    return "\n".join(out) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--pods", type=int, action="append", help="pods per node (repeatable; default 100, 250)"
    )
    parser.add_argument("--scrapes", type=int, default=20, help="scrapes spooled per case (default 20)")
    parser.add_argument(
        "--cache-scrapes", type=int, default=8,
        help="scrapes before the steady series-cache figure (default 8)",
    )
    ns = parser.parse_args(argv)
    pods = ns.pods or [100, 250]
    build = "compiled" if getattr(cache_module, "COMPILED", False) else "pure Python"
    print(f"## kubescrape memory per series and spool bytes per sample (Python {sys.version.split()[0]}, "
          f"scrape cache warm loop: {build})\n")
    print("### Series cache (tracemalloc)\n")
    print(render_cache([cache_memory(p, scrapes=ns.cache_scrapes) for p in pods]))
    print("### Spool\n")
    try:
        print(render_spool([spool_bytes(p, ns.scrapes) for p in pods]))
    except (TypeError, AttributeError) as e:  # the spool's API moved: say so rather than guess
        print(f"spool not measured: {type(e).__name__}: {e}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
