"""Issue 15, finding 2, as an operator sees it: ``kubescrape run`` scraping a target that streams a
200 MB body against the default 64 MiB ``body_size_limit`` keeps its resident memory bounded across
20 scrapes.

The agent runs as its own process; its ``VmRSS`` is read from ``/proc`` after every failed scrape. The bound
(200 MiB) is generous on purpose: before the fix the same run grew past 1 GiB, and the agent's steady RSS
with this configuration is about 55 MiB (bench/results/2026-12-02-scrape-memory-client.md).
"""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.e2e.helpers import free_port

ROOT = Path(__file__).resolve().parents[2]
MIB = 1 << 20
BODY = 200 * 1000 * 1000
SCRAPES = 20
RSS_BOUND_MIB = 200


@pytest.fixture
async def hostile_target() -> AsyncIterator[str]:
    """Streams BODY bytes of valid exposition text to every GET (stops when the client hangs up)."""
    line = b'hostile_series{pod="p-000000000",container="c"} 1\n'
    block = line * (MIB // len(line))

    async def handle(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/plain; version=0.0.4"})
        await resp.prepare(request)
        sent = 0
        try:
            while sent < BODY:
                await resp.write(block)
                sent += len(block)
        except (ConnectionResetError, aiohttp.ClientConnectionResetError):
            pass
        return resp

    app = web.Application()
    app.router.add_get("/metrics", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/metrics"
    finally:
        await runner.cleanup()


def _rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
    assert match, status
    return int(match.group(1)) / 1024


async def _body_size_failures(session: aiohttp.ClientSession, metrics_url: str) -> int:
    try:
        async with session.get(metrics_url) as resp:
            text = await resp.text()
    except aiohttp.ClientError:
        return 0
    return sum(int(float(m)) for m in re.findall(
        r'^kubescrape_scrape_errors_total\{[^}]*reason="body_size"[^}]*\} (\S+)$', text, re.M))


async def test_rss_stays_bounded_across_oversized_scrapes(tmp_path: Path, hostile_target: str) -> None:
    conf = tmp_path / "conf"
    (conf / "input.prometheus").mkdir(parents=True)
    (conf / "config.toml").write_text(
        '[global]\nhostname = "node-1"\ninterval = 1\n'
        f'[[writers]]\nurl = "http://127.0.0.1:{free_port()}/api/v1/write"\n'
    )
    (conf / "input.prometheus" / "prometheus.toml").write_text(
        f'[[instances]]\nurls = ["{hostile_target}"]\ntimeout = 30\n'
    )
    listen_port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kubescrape", "run", "--config-dir", str(conf), "--listen",
        f"127.0.0.1:{listen_port}", "--no-spool", "--shutdown-timeout", "1", "--quiet", cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    metrics_url = f"http://127.0.0.1:{listen_port}/metrics"
    samples: list[float] = []
    failures = 0
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(1200):  # at most 120 s
                await asyncio.sleep(0.1)
                assert proc.returncode is None, "the agent exited"
                samples.append(_rss_mib(proc.pid))
                failures = await _body_size_failures(session, metrics_url)
                if failures >= SCRAPES:
                    break
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    log = stderr.decode()
    assert failures >= SCRAPES, f"only {failures} oversized scrapes in 120 s; agent log:\n{log[-2000:]}"
    assert "body_size_limit" in stderr.decode()
    peak = max(samples)
    print(f"\nagent RSS over {failures} oversized scrapes: peak {peak:.0f} MiB, last {samples[-1]:.0f} MiB",
          file=sys.stderr)
    assert peak < RSS_BOUND_MIB, f"agent RSS reached {peak:.0f} MiB (bound {RSS_BOUND_MIB} MiB)"
