"""``kubescrape run --config FILE.yml`` with kubernetes_sd_configs: the agent scrapes what discovery finds,
next to its static targets, and stops every discovered loop on shutdown."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import pytest

from kubescrape.agent import Agent
from kubescrape.config.prometheus import load_prometheus
from kubescrape.emulator.fleet import Emulator
from kubescrape.remote_write import Chunk
from kubescrape.remote_write.encode import decode_write_request

RBAC = Path(__file__).resolve().parent.parent / "data" / "discovery-rbac.yaml"


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[Emulator]:
    emu = Emulator(tmp_path / "state", nodes=2, pods=9, port=0, healthz_port=None, proxy_port=None,
                   rbac_files=[RBAC], apiserver_port=0, sync_interval=0.1)
    async with emu:
        yield emu


class ListSink:
    def __init__(self) -> None:
        self.chunks: list[Chunk] = []

    async def append(self, chunks: Sequence[Chunk]) -> None:
        self.chunks.extend(chunks)

    def jobs(self) -> set[str]:
        return {labels.get("job", "") for c in self.chunks for labels, _ in decode_write_request(c.plain())}


async def _until(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def test_the_agent_scrapes_discovered_and_static_targets(fleet: Emulator, tmp_path: Path) -> None:
    assert fleet.apps is not None
    app = fleet.apps.endpoints[0]
    config = tmp_path / "prometheus.yml"
    config.write_text(fleet.prometheus_yml().replace("scrape_interval: 15s", "scrape_interval: 1s")
                      .replace("scrape_timeout: 10s", "scrape_timeout: 1s")
                      + f"- job_name: static\n  metrics_path: {app.path}\n"
                        f"  static_configs: [{{targets: ['{app.ip}:{app.port}']}}]\n")
    cfg = load_prometheus(config)
    sink = ListSink()
    agent = Agent(cfg, sink=sink, jitter=False)
    await agent.start()
    try:
        every = {"kubelet", "cadvisor", "cadvisor-via-apiserver", "pods", "static"}
        await _until(lambda: sink.jobs() >= every, "samples of every job")
        stats = agent.stats()
        assert len(stats.targets) == 1 + 3 * 2 + len(fleet.apps.endpoints)
    finally:
        await agent.stop()
    left = [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith(("scrape", "discovery"))]
    assert left == []
