"""Differential: vmagent's own Kubernetes discovery and kubescrape's, given the same Prometheus scrape
configuration and pointed at the emulator's stand-in apiserver (20 nodes × 30 pods, a third annotated),
discover the same targets with the same final labels and the same scrape URLs; the discovered
``__meta_kubernetes_*`` labels agree wherever vmagent 1.79 has them.

Node role: the kubelet directly (``/metrics``, ``/metrics/cadvisor``) and through the apiserver's
``nodes/proxy`` path; pod role: the usual ``prometheus.io/*`` annotation rules.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from kubescrape.config.prometheus import load_prometheus
from kubescrape.discovery.config import job_discoveries
from kubescrape.emulator.fleet import Emulator
from kubescrape.scrape.manager import job_target
from kubescrape.scrape.targets import DEFAULT_SCRAPE_TIMEOUT, _pre_relabel
from tests.e2e.vmagent import running_vmagent, vmagent_available, vmagent_targets

RBAC = Path(__file__).resolve().parent.parent / "data" / "discovery-rbac.yaml"
NODES, PODS = 20, 30
# Labels newer than vmagent 1.79's Kubernetes discovery (Prometheus 2.4x / 3.x): ours has them, it has not.
NEWER = {"__meta_kubernetes_pod_container_id", "__meta_kubernetes_pod_container_image",
         "__meta_kubernetes_pod_ipv4", "__meta_kubernetes_pod_ipv6", "__meta_kubernetes_pod_container_init",
         "__meta_kubernetes_endpointslice_endpoint_conditions_serving",
         "__meta_kubernetes_endpointslice_endpoint_conditions_terminating",
         "__meta_kubernetes_endpointslice_endpoint_node_name", "__meta_kubernetes_service_port_number"}
# vmagent's own additions: the service's cluster IP and type on endpointslice targets (Prometheus'
# serviceLabels for that role has only the namespace and the service's metadata).
VMAGENT_ONLY = {"__meta_kubernetes_service_cluster_ip", "__meta_kubernetes_service_type"}

pytestmark = pytest.mark.skipif(not vmagent_available(),
                                reason="vmagent is not installed (Debian victoria-metrics; scripts/install)")


def _config(emu: Emulator) -> str:
    """The fleet's own Prometheus configuration (what ``Emulator.prometheus_yml`` prints) plus jobs for the
    endpointslice and service roles."""
    assert emu.apiserver is not None
    token = emu.token_path("monitoring", "kubescrape")
    sd = (f"  kubernetes_sd_configs:\n  - role: ROLE\n    api_server: {emu.apiserver.url}\n"
          f"    tls_config: {{ca_file: {emu.ca_path}}}\n    bearer_token_file: {token}\n")
    return emu.prometheus_yml() + f"""- job_name: endpointslices
{sd.replace("ROLE", "endpointslice")}  relabel_configs:
  - {{source_labels: [__meta_kubernetes_service_name], regex: "node-exporter|coredns", action: keep}}
  - {{action: labelmap, regex: __meta_kubernetes_(service_name|namespace|endpointslice_port_name)}}
- job_name: services
{sd.replace("ROLE", "service")}  relabel_configs:
  - {{action: labelmap, regex: __meta_kubernetes_(service_name|namespace|service_port_name)}}
"""


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[Emulator]:
    emu = Emulator(tmp_path / "state", nodes=NODES, pods=PODS, port=0, healthz_port=None, proxy_port=None,
                   rbac_files=[RBAC], apiserver_port=0, sync_interval=0.2)
    async with emu:
        yield emu


def _key(labels: dict[str, str], url: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return url, frozenset(labels.items())


async def _ours(config: Path) -> tuple[dict[str, set[Any]], dict[str, list[dict[str, str]]]]:
    """Active targets (scrape URL + final labels) and all discovered label sets, per job."""
    cfg = load_prometheus(config)
    active: dict[str, set[Any]] = {}
    discovered: dict[str, list[dict[str, str]]] = {}
    for inst in cfg.instances:
        job = inst.job_name or ""
        interval = inst.scrape_interval or cfg.global_.interval
        timeout = inst.scrape_timeout or min(DEFAULT_SCRAPE_TIMEOUT, interval)
        for d in job_discoveries(cfg, inst, lambda groups: None):
            await d.start()
            try:
                assert await d.wait_synced(30)
            finally:
                await d.stop()
                await d.client.close()
            for ls in d.label_sets():
                discovered.setdefault(job, []).append(_pre_relabel(
                    ls, job_name=job, scheme=inst.scheme, metrics_path=inst.metrics_path, params=inst.params,
                    interval=interval, timeout=timeout))
                target = job_target(cfg, inst, ls)
                if target is not None:
                    active.setdefault(job, set()).add(_key(dict(target.labels), target.url))
    return active, discovered


async def _vmagent(url: str, jobs: set[str], expected: int) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for _ in range(120):
        await asyncio.sleep(0.5)
        try:
            data = await vmagent_targets(url)
        except aiohttp.ClientError:
            continue  # not listening yet
        seen = {t["labels"].get("job") for t in data["activeTargets"]}
        if seen >= jobs and len(data["activeTargets"]) >= expected:
            break
    return data


async def test_vmagent_and_kubescrape_discover_the_same_targets(fleet: Emulator, tmp_path: Path) -> None:
    config = tmp_path / "prometheus.yml"
    config.write_text(_config(fleet))
    ours, our_discovered = await _ours(config)
    expected = sum(len(v) for v in ours.values())
    assert set(ours) == {"kubelet", "cadvisor", "cadvisor-via-apiserver", "pods", "endpointslices",
                         "services"}
    assert len(ours["kubelet"]) == NODES
    assert NODES * PODS // 4 <= len(ours["pods"]) <= NODES * PODS // 3 + NODES
    async with running_vmagent(config, tmp_path, "-promscrape.maxDroppedTargets=100000") as url:
        data = await _vmagent(url, set(ours), expected)
    theirs: dict[str, set[Any]] = {}
    for t in data["activeTargets"]:
        theirs.setdefault(t["labels"]["job"], set()).add(_key(t["labels"], t["scrapeUrl"]))
    for job in ours:
        assert theirs.get(job) == ours[job], (job, sorted(theirs.get(job, set()) - ours[job])[:2],
                                              sorted(ours[job] - theirs.get(job, set()))[:2])

    # discovered labels (active and dropped), matched by job, address and container
    def index(sets: list[dict[str, str]]) -> dict[tuple[str, ...], dict[str, str]]:
        return {(s["job"], s["__address__"], s.get("__meta_kubernetes_pod_container_name", ""),
                 s.get("__meta_kubernetes_endpointslice_port_name", "")): s for s in sets}

    their_sets = [t["discoveredLabels"] for t in data["activeTargets"]]
    their_sets += [t["discoveredLabels"] for t in data.get("droppedTargets") or ()]
    theirs_by_key = index(their_sets)
    ours_by_key = index([s for sets in our_discovered.values() for s in sets])
    assert set(theirs_by_key) == set(ours_by_key)
    for key, mine in ours_by_key.items():
        other = theirs_by_key[key]
        assert set(mine) - set(other) <= NEWER, (key, set(mine) - set(other))
        extra = VMAGENT_ONLY if key[0] == "endpointslices" else set()
        assert set(other) - extra <= set(mine), (key, set(other) - set(mine))
        differ = {k: (mine[k], v) for k, v in other.items() if k in mine and mine[k] != v}
        # vmagent prints durations as Go's time.Duration ("5m0s"), Prometheus as model.Duration ("5m")
        assert set(differ) <= {"__scrape_interval__", "__scrape_timeout__"}, (key, differ)
