"""A real Prometheus server scrapes the emulated kubelet over TLS with a ServiceAccount token."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path
from typing import Any

import pytest

from kubescrape.emulator.fleet import Emulator, PayloadFactory
from kubescrape.emulator.server import NodeSpec
from tests.e2e.prom import Prometheus, prometheus_available, running_prometheus


class _MinimalPayloads:
    """Used only until the payload generator module exists: valid exposition text, one series each."""

    def __init__(self, spec: NodeSpec, pods: int) -> None:
        self.node = spec.name

    def _m(self, name: str) -> bytes:
        return f'# TYPE {name} gauge\n{name}{{node="{self.node}"}} 1\n'.encode()

    def metrics(self) -> bytes:
        return self._m("kubelet_running_pods")

    def cadvisor(self) -> bytes:
        return self._m("container_memory_working_set_bytes")

    def resource(self) -> bytes:
        return self._m("node_memory_working_set_bytes")

    def probes(self) -> bytes:
        return self._m("prober_probe_total")

    def kube_proxy_metrics(self) -> bytes:
        return self._m("kubeproxy_sync_proxy_rules_duration_seconds_count")

    def stats_summary(self) -> bytes:
        return b"{}"

    def pods_json(self) -> bytes:
        return b'{"items": []}'

    def configz(self) -> bytes:
        return b"{}"


def _payload_factory() -> PayloadFactory | None:
    if importlib.util.find_spec("kubescrape.emulator.payloads") is not None:
        return None  # the real generator
    return _MinimalPayloads


def _config(target: str, token: Path, ca: Path) -> str:
    jobs = []
    for job, path, auth in (
        ("kubelet", "/metrics", f"    bearer_token_file: {token}\n"),
        ("cadvisor", "/metrics/cadvisor", f"    bearer_token_file: {token}\n"),
        ("no-token", "/metrics", ""),
    ):
        jobs.append(
            f"  - job_name: {job}\n    scheme: https\n    metrics_path: {path}\n{auth}"
            f"    tls_config:\n      ca_file: {ca}\n"
            f"    static_configs:\n      - targets: ['{target}']\n"
        )
    return "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n" + "".join(jobs)


def _targets(prom: Prometheus) -> dict[str, dict[str, Any]]:
    data = prom.api("targets", state="active")
    return {t["labels"]["job"]: t for t in data["activeTargets"]}


def _wait_scraped(prom: Prometheus) -> dict[str, dict[str, Any]]:
    prom.wait_for('up{job="kubelet"} == 1', timeout=20)
    prom.wait_for('up{job="cadvisor"} == 1', timeout=20)
    prom.wait_for('up{job="no-token"} == 0', timeout=20)
    return _targets(prom)


async def test_prometheus_scrapes_the_emulator_with_token_and_ca(tmp_path: Path) -> None:
    if not prometheus_available():
        pytest.fail("the Debian package 'prometheus' is not installed: run `bash scripts/test`")
    async with Emulator(tmp_path / "state", port=0, healthz_port=None, proxy_port=None, pods=10,
                        payload_factory=_payload_factory()) as emu:
        spec = emu.nodes[0]
        token = emu.token_path("flashcat", "categraf-daemonset")
        cm = running_prometheus(tmp_path / "prom",
                                config_yaml=_config(f"{spec.address}:{spec.port}", token, emu.ca_path))
        prom = await asyncio.to_thread(cm.__enter__)
        try:
            targets = await asyncio.wait_for(asyncio.to_thread(_wait_scraped, prom), 25)
            assert targets["kubelet"]["health"] == "up"
            assert targets["cadvisor"]["health"] == "up"
            assert targets["no-token"]["health"] == "down"
            assert "401" in targets["no-token"]["lastError"]
            up = await asyncio.to_thread(prom.query, "up")
            assert {r["metric"]["job"]: r["value"][1] for r in up} == {
                "kubelet": "1", "cadvisor": "1", "no-token": "0"}
            # samples from both endpoints were stored (not just Prometheus' own up/scrape_* series)
            kubelet_series = await asyncio.to_thread(
                prom.query, 'count({job="kubelet", __name__!~"up|scrape_.*"})')
            cadvisor_series = await asyncio.to_thread(
                prom.query, 'count({job="cadvisor", __name__=~"container_.*"})')
            assert int(kubelet_series[0]["value"][1]) > 0
            assert int(cadvisor_series[0]["value"][1]) > 0
        finally:
            await asyncio.to_thread(cm.__exit__, None, None, None)
        assert emu.stats.by_status[200] >= 2
        assert emu.stats.by_status[401] >= 1
