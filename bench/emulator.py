"""How fast the kubelet emulator serves a 100-pod node, and how many nodes one process sustains.

The emulator runs in a child process (its own event loop and CPU), an aiohttp client in this process
scrapes it over real TLS on loopback with the bound ServiceAccount token. The child's CPU time comes
from /proc, so the per-request cost excludes the client. Printed as a markdown table.

    python3 bench/emulator.py [--quick] [--pods 100] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kubescrape.emulator.fleet import Emulator
from kubescrape.emulator.pki import client_ssl_context

SCRAPE_INTERVAL = 15.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def _serve(state_dir: str, pods: int, cache_ttl: float, conn: Connection) -> None:
    async def main() -> None:
        async with Emulator(state_dir, port=0, healthz_port=None, proxy_port=None, pods=pods,
                            cache_ttl=cache_ttl) as emu:
            conn.send((emu.nodes[0].url, str(emu.ca_path),
                       str(emu.token_path("flashcat", "categraf-daemonset"))))
            await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # wait for "stop"

    asyncio.run(main())


async def _load(url: str, ca: str, token: str, path: str, seconds: float, concurrency: int,
                gzip_ok: bool) -> tuple[int, int]:
    ctx = client_ssl_context(Path(ca).read_bytes())
    headers = {"Authorization": f"Bearer {Path(token).read_text().strip()}",
               "Accept-Encoding": "gzip" if gzip_ok else "identity"}
    deadline = time.monotonic() + seconds
    done = 0
    nbytes = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal done, nbytes
        while time.monotonic() < deadline:
            async with session.get(url + path, ssl=ctx, headers=headers) as r:
                body = await r.read()
                if r.status != 200:
                    raise RuntimeError(f"{path}: HTTP {r.status}: {body[:200]!r}")
                done += 1
                nbytes += len(body)

    async with aiohttp.ClientSession(auto_decompress=False) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return done, nbytes


def _case(pods: int, cache_ttl: float, path: str, seconds: float, concurrency: int,
          gzip_ok: bool) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="kubescrape-bench-") as tmp:
        parent, child = mp.Pipe()
        proc = mp.get_context("fork").Process(target=_serve, args=(tmp, pods, cache_ttl, child), daemon=True)
        proc.start()
        try:
            if not parent.poll(60):
                raise RuntimeError("emulator did not start")
            url, ca, token = parent.recv()
            asyncio.run(_load(url, ca, token, path, 0.3, 2, gzip_ok))  # warm up: payload objects, TLS
            assert proc.pid is not None
            cpu0, t0 = _cpu_seconds(proc.pid), time.monotonic()
            n, nbytes = asyncio.run(_load(url, ca, token, path, seconds, concurrency, gzip_ok))
            cpu1, t1 = _cpu_seconds(proc.pid), time.monotonic()
        finally:
            parent.send("stop")
            proc.join(10)
            if proc.is_alive():
                proc.kill()
    wall = t1 - t0
    return {"rps": n / wall, "mbps": nbytes / wall / 1e6, "cpu_ms": (cpu1 - cpu0) / max(n, 1) * 1e3,
            "kb": nbytes / max(n, 1) / 1e3, "cpu_util": (cpu1 - cpu0) / wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1.5 s per case instead of 5 s")
    ap.add_argument("--pods", type=int, default=100)
    ap.add_argument("--concurrency", type=int, default=8)
    args = ap.parse_args()
    seconds = 1.5 if args.quick else 5.0

    rows = []
    uncached: dict[str, float] = {}
    for path in ("/metrics", "/metrics/cadvisor"):
        for cache_ttl, label in ((1.0, "1 s cache"), (0.0, "no cache")):
            r = _case(args.pods, cache_ttl, path, seconds, args.concurrency, gzip_ok=False)
            rows.append((path, label, "identity", r))
            if cache_ttl == 0.0:
                uncached[path] = r["cpu_ms"]
        r = _case(args.pods, 1.0, path, seconds, args.concurrency, gzip_ok=True)
        rows.append((path, "1 s cache", "gzip", r))

    print(f"### kubelet emulator, one {args.pods}-pod node, TLS + bearer token, "
          f"{args.concurrency} concurrent clients, {seconds:g} s per case\n")
    print("| endpoint | payload | encoding | req/s | MB/s | body KB | server CPU ms/req | server CPU % |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for path, label, enc, r in rows:
        print(f"| {path} | {label} | {enc} | {r['rps']:.0f} | {r['mbps']:.1f} | {r['kb']:.0f} | "
              f"{r['cpu_ms']:.2f} | {r['cpu_util'] * 100:.0f} |")
    per_node_ms = uncached["/metrics"] + uncached["/metrics/cadvisor"]
    nodes = SCRAPE_INTERVAL * 1000 / per_node_ms
    print(f"\nOne scrape of /metrics + /metrics/cadvisor per node every {SCRAPE_INTERVAL:g} s, rendered "
          f"fresh (uncached) each time: {per_node_ms:.1f} ms CPU per node per interval → one process "
          f"(one core) sustains about **{nodes:.0f} nodes** at 100 % CPU, **{nodes * 0.5:.0f}** at a "
          f"comfortable 50 %.")


if __name__ == "__main__":
    main()
