"""Benchmark of a warm scrape of a gzip body: inflated whole, then parsed, against inflated and parsed in
pieces (:class:`kubescrape.client.GzipBody`), with the agent's allocator tuning (``kubescrape._memory``).

The kubelet emulator's ``/metrics/cadvisor`` body is gzip-compressed, split into the 64 KiB parts a
response is read in, and handed to a warm :class:`~kubescrape.scrape.cache.SeriesCache` (chunks
snappy-compressed, as for a sink) either way, scrape after scrape, the two interleaved. After each scrape
``malloc_trim(0)`` gives the free pages back, as the agent does once per interval, so the next scrape
faults in again what it allocates afresh. Prints CPU ms (this thread) and minor page faults per scrape::

    python3 -m bench.parse_pieces                 # 250 pods
    python3 -m bench.parse_pieces --pods 100 --rounds 3
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import gzip
import resource
import statistics
import time
from collections.abc import Callable

from bench.parse import _target_labeler, cadvisor_scrapes
from kubescrape._memory import tune_allocator
from kubescrape.client import GzipBody
from kubescrape.scrape.cache import ScrapeResult, SeriesCache

_READ = 1 << 16
_TS = 1_700_000_015_000  # the emulated node's FakeClock time: its own timestamps are in the window


def _body(compressed: bytes) -> GzipBody:
    """The body as :func:`kubescrape.client.read_gzip` keeps it: the parts it was read in."""
    parts = [compressed[i : i + _READ] for i in range(0, len(compressed), _READ)]
    return GzipBody(parts, 0, "https://node-1:10250/metrics/cadvisor")


def whole(cache: SeriesCache, compressed: bytes, ts: int) -> ScrapeResult:
    return cache.process(_body(compressed).whole(), ts, snappy=True)


def in_pieces(cache: SeriesCache, compressed: bytes, ts: int) -> ScrapeResult:
    return cache.process(_body(compressed), ts, snappy=True)


def run(pods: int, rounds: int) -> dict[str, tuple[list[float], list[int]]]:
    """CPU ms and minor faults of each warm scrape, per contender."""
    tuned = tune_allocator()
    libc = ctypes.CDLL(None) if tuned else None
    bodies = [gzip.compress(body, 1) for body in cadvisor_scrapes(pods, 7)]
    contenders: dict[str, Callable[[SeriesCache, bytes, int], ScrapeResult]] = {
        "inflated whole": whole,
        "in pieces": in_pieces,
    }
    caches = {}
    for name, fn in contenders.items():
        caches[name] = cache = SeriesCache(_target_labeler())
        fn(cache, bodies[0], _TS)
    figures: dict[str, tuple[list[float], list[int]]] = {name: ([], []) for name in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            for i, compressed in enumerate(bodies[1:], 1):
                gc.collect()
                if libc is not None:
                    libc.malloc_trim(0)
                before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                start = time.thread_time()
                result = fn(caches[name], compressed, _TS + 15_000 * i)
                cpu = time.thread_time() - start
                faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
                del result
                figures[name][0].append(cpu * 1000)
                figures[name][1].append(faults)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=250)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    figures = run(args.pods, args.rounds)
    print(f"\nwarm scrape of a gzip cAdvisor body, {args.pods} pods, allocator tuned: {tune_allocator()}\n")
    print("| contender | CPU ms min | CPU ms median | minor faults median |")
    print("|---|---:|---:|---:|")
    for name, (cpu, faults) in figures.items():
        print(f"| {name} | {min(cpu):.1f} | {statistics.median(cpu):.1f} | {statistics.median(faults):.0f} |")


if __name__ == "__main__":
    main()
