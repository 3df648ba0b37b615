"""Memory of the scrape path under hostile targets (issue 15, finding 2): RSS, reported, never asserted.

Three scenarios, each in this process (the hostile HTTP server runs in a child process so its memory is
not counted):

* ``oversized body``: 20 scrapes through :class:`~kubescrape.scrape.loop.ScrapeLoop` of a target that
  streams a 200 MB body against the default 64 MiB ``body_size_limit``; RSS after each scrape, with and
  without a ``gc.collect()`` between scrapes (the difference is memory only the cycle collector frees:
  buffers kept alive through an exception's traceback).
* ``1M series, sample_limit``: 20 scrapes of a body with one million distinct series (new series every
  scrape) through :class:`~kubescrape.scrape.cache.SeriesCache` with ``sample_limit = 50000``: each fails
  fast; RSS and time per scrape.
* ``1M series, no limit``: the same target without a limit, 6 scrapes: the series cache holds what one
  scrape (times its generation) needs and no more.

Each scenario runs in a fresh child process. Run: ``python3 -m bench.scrape_memory [--quick]`` (quick: 5
scrapes, 50 MB body against 16 MiB, 200k
series).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.procstat import rss_bytes
from kubescrape.config.categraf import load_categraf
from kubescrape.errors import ScrapeError
from kubescrape.scrape.cache import ScrapeLimits, SeriesCache
from kubescrape.scrape.loop import ScrapeClient, ScrapeLoop
from kubescrape.scrape.targets import build_targets

MIB = 1 << 20


def _rss_mib() -> float:
    return rss_bytes(os.getpid()) / MIB


def serve(port: int, size: int) -> None:
    """Child process: answer every GET with ``size`` bytes of valid exposition text, streamed."""
    from aiohttp import web

    line = b'hostile_series{pod="p-000000000",container="c"} 1\n'
    block = line * (MIB // len(line))

    async def handle(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/plain; version=0.0.4"})
        await resp.prepare(request)
        sent = 0
        while sent < size:
            await resp.write(block)
            sent += len(block)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/metrics", handle)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


async def oversized_body(
    size: int, limit: int, scrapes: int, collect: bool
) -> list[tuple[float, float, str]]:
    from kubescrape.prometheus import free_port

    port = free_port()
    child = subprocess.Popen(
        [sys.executable, "-m", "bench.scrape_memory", "--serve", str(port), str(size)],
        stderr=subprocess.DEVNULL,
    )
    try:
        with tempfile.TemporaryDirectory() as tmp:
            config = Path(tmp)
            (config / "input.prometheus").mkdir()
            (config / "config.toml").write_text("[global]\ninterval = 15\nomit_hostname = true\n")
            (config / "input.prometheus" / "prometheus.toml").write_text(
                f'[[instances]]\nurls = ["http://127.0.0.1:{port}/metrics"]\nbody_size_limit = {limit}\n'
                "timeout = 14\n"
            )
            [target] = build_targets(load_categraf(config))
        deadline = time.monotonic() + 10
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
        client = ScrapeClient()
        loop = ScrapeLoop(target, client=client)
        rss = []
        try:
            for _ in range(scrapes):
                start = time.perf_counter()
                report = await loop.scrape()
                reason = report.error.reason if report.error is not None else "ok"
                del report
                if collect:
                    gc.collect()
                rss.append((_rss_mib(), time.perf_counter() - start, f"up 0 ({reason})"))
        finally:
            await client.close()
        return rss
    finally:
        child.terminate()
        child.wait(timeout=10)


def million_series(series: int, scrapes: int, limit: int) -> list[tuple[float, float, str]]:
    """RSS (MiB), seconds and outcome per scrape of ``series`` new distinct series each time."""
    cache = SeriesCache(
        lambda name, labels: [("__name__", name), *labels, ("job", "hostile")],
        limits=ScrapeLimits(sample_limit=limit),
    )
    out = []
    for scrape in range(scrapes):
        body = b"".join(b'm{pod="p-%d-%d",container="c"} 1\n' % (scrape, i) for i in range(series))
        start = time.perf_counter()
        try:
            result = cache.process(body, 1_764_000_000_000 + scrape * 15_000)
            outcome = f"ok, {result.samples_post_relabel} samples, cache {len(cache)} series"
            del result
        except ScrapeError as exc:
            outcome = f"failed ({exc.reason}), cache {len(cache)} series"
        elapsed = time.perf_counter() - start
        del body
        out.append((_rss_mib(), elapsed, outcome))
    return out


def _scenario(name: str, quick: bool) -> list[tuple[float, float, str]]:
    """Run one scenario in this (fresh) process: rows of (RSS MiB, seconds, outcome)."""
    size, limit, scrapes, series = (
        (50 * 10**6, 16 * MIB, 5, 200_000) if quick else (200 * 10**6, 64 * MIB, 20, 1_000_000)
    )
    if name in ("oversized", "oversized-gc"):
        return asyncio.run(oversized_body(size, limit, scrapes, collect=name == "oversized-gc"))
    if name == "series-limit":
        return million_series(series, scrapes, 50_000)
    return million_series(series, 3, 0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--serve", nargs=2, type=int, metavar=("PORT", "SIZE"), help=argparse.SUPPRESS)
    parser.add_argument("--scenario", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(*args.serve)
        return
    if args.scenario:
        print(json.dumps({"start": _rss_mib(), "rows": _scenario(args.scenario, args.quick)}))
        return
    size, limit, series = (50 * 10**6, 16, 200_000) if args.quick else (200 * 10**6, 64, 1_000_000)
    print(f"Python {sys.version.split()[0]}; VmRSS of a fresh process per scenario, MiB\n")
    titles = {
        "oversized": f"{size / 1e6:.0f} MB body against body_size_limit {limit} MiB (ScrapeLoop over HTTP)",
        "oversized-gc": "the same, gc.collect() after each scrape",
        "series-limit": f"{series:,} new series per scrape, sample_limit 50000 (SeriesCache)",
        "series-nolimit": f"{series:,} new series per scrape, no limit (SeriesCache)",
    }
    for name, title in titles.items():
        extra = ["--quick"] if args.quick else []
        out = subprocess.run(
            [sys.executable, "-m", "bench.scrape_memory", "--scenario", name, *extra],
            capture_output=True, text=True, check=True, timeout=900,
        )
        data = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"## {title}\n\nRSS at start: {data['start']:.0f} MiB\n")
        print("| scrape | RSS MiB | seconds | outcome |")
        print("|---:|---:|---:|---|")
        for i, (rss, seconds, outcome) in enumerate(data["rows"], 1):
            print(f"| {i} | {rss:.0f} | {seconds:.2f} | {outcome} |")
        print(f"\nmax RSS {max(row[0] for row in data['rows']):.0f} MiB\n", flush=True)


if __name__ == "__main__":
    main()
