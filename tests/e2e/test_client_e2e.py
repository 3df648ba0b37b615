"""The scrape request is Prometheus' request: a real Prometheus (Debian's 2.42) scrapes a loopback endpoint
that records what it receives, and the agent's headers are compared with it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiohttp import web

from kubescrape.client import ACCEPT_HEADER, ScrapeClient
from kubescrape.config.models import AgentConfig, GlobalConfig, InstanceConfig
from kubescrape.scrape.loop import ScrapeLoop
from kubescrape.scrape.targets import build_targets
from tests.e2e.prom import Prometheus, prometheus_available
from tests.test_client import serve


async def test_accept_header_matches_what_a_real_prometheus_sends(tmp_path: Path) -> None:
    if not prometheus_available():
        pytest.fail("the Debian package 'prometheus' is not installed: run `bash scripts/test`")
    seen: dict[str, str] = {}
    first = asyncio.Event()

    async def handle(request: web.Request) -> web.Response:
        who = "prometheus" if request.headers.get("User-Agent", "").startswith("Prometheus/") else "agent"
        seen.setdefault(who, request.headers.get("Accept", ""))
        if who == "prometheus":
            first.set()
        return web.Response(text="a 1\n", content_type="text/plain")

    async with serve(handle) as base:
        host_port = base.removeprefix("http://")
        config = (f"global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: probe\n"
                  f"    static_configs:\n      - targets: ['{host_port}']\n")
        (tmp_path / "prom").mkdir()
        prom = Prometheus(tmp_path / "prom", config_yaml=config)
        try:
            await asyncio.to_thread(prom.start)
            await asyncio.wait_for(first.wait(), 30)
            client = ScrapeClient()
            target = build_targets(AgentConfig(global_=GlobalConfig(hostname="n"), instances=[
                InstanceConfig(urls=[base + "/metrics"])]))[0]
            report = await ScrapeLoop(target, client=client).scrape()
            await client.close()
        finally:
            await asyncio.to_thread(prom.stop)
    assert report.ok, report.error
    assert seen["prometheus"] == ACCEPT_HEADER
    assert seen["agent"] == seen["prometheus"]
