"""Discovery → scrape manager → remote write → a real Prometheus: annotated pods and kubelets of the emulated
cluster are scraped from a Prometheus configuration file; when a node leaves, its targets' series go stale
in Prometheus at once; shards split the targets."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import pytest

from kubescrape.config.models import AgentConfig
from kubescrape.config.prometheus import load_prometheus
from kubescrape.discovery import ApiClient, ApiConfig, KubeletDiscovery, Sharder, TargetGroup
from kubescrape.discovery.config import Discovery, job_discoveries
from kubescrape.emulator.fleet import Emulator
from kubescrape.emulator.payloads_pods import app_pod_ip
from kubescrape.remote_write import Chunk
from kubescrape.remote_write.encode import decode_write_request, is_stale_nan
from kubescrape.remote_write.queue import RemoteWrite, WriterSettings
from kubescrape.scrape.discovered import DiscoveredScraping, has_discovery
from kubescrape.scrape.loop import ScrapeClient
from kubescrape.scrape.manager import ScrapeManager
from kubescrape.selfmon import SelfMetrics
from kubescrape.supervisor import Supervisor
from tests.e2e.prom import Prometheus

RBAC = Path(__file__).resolve().parent.parent / "data" / "discovery-rbac.yaml"
NODES, PODS = 3, 12


def _config(emu: Emulator) -> str:
    assert emu.apiserver is not None
    token = emu.token_path("monitoring", "kubescrape")
    sd = (f"  kubernetes_sd_configs:\n  - role: ROLE\n    api_server: {emu.apiserver.url}\n"
          f"    tls_config: {{ca_file: {emu.ca_path}}}\n    bearer_token_file: {token}\n")
    return f"""global: {{scrape_interval: 1s, scrape_timeout: 1s}}
scrape_configs:
- job_name: kubelet
  scheme: https
  tls_config: {{ca_file: {emu.ca_path}}}
  bearer_token_file: {token}
{sd.replace("ROLE", "node")}  relabel_configs:
  - {{source_labels: [__meta_kubernetes_node_name], target_label: node}}
  metric_relabel_configs:
  - {{source_labels: [__name__], regex: kubelet_running_pods, action: keep}}
- job_name: pods
{sd.replace("ROLE", "pod")}  relabel_configs:
  - {{source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_scrape], action: keep, regex: "true"}}
  - {{source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_path], target_label: __metrics_path__,
     regex: (.+)}}
  - {{source_labels: [__address__, __meta_kubernetes_pod_annotation_prometheus_io_port],
     regex: '([^:]+)(?::\\d+)?;(\\d+)', replacement: $1:$2, target_label: __address__}}
  - {{source_labels: [__meta_kubernetes_namespace], target_label: namespace}}
  - {{source_labels: [__meta_kubernetes_pod_name], target_label: pod}}
  - {{source_labels: [__meta_kubernetes_pod_node_name], target_label: node}}
  - {{action: labeldrop, regex: __meta_kubernetes_pod_container_.*}}
"""


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[Emulator]:
    emu = Emulator(tmp_path / "state", nodes=NODES, pods=PODS, port=0, healthz_port=None, proxy_port=None,
                   rbac_files=[RBAC], apiserver_port=0, sync_interval=0.1)
    async with emu:
        yield emu


class ListSink:
    def __init__(self) -> None:
        self.chunks: list[Chunk] = []

    async def append(self, chunks: Sequence[Chunk]) -> None:
        self.chunks.extend(chunks)

    def series(self) -> list[tuple[dict[str, str], float, int]]:
        out = []
        for c in self.chunks:
            for labels, samples in decode_write_request(c.plain()):
                out += [(labels, v, c.key) for v, _ in samples]
        return out


async def _discover(cfg: AgentConfig, manager: ScrapeManager) -> list[Discovery]:
    discoveries: list[Discovery] = []
    for inst in cfg.instances:
        if inst.job_name is None or not inst.kubernetes_sd_configs:
            continue
        manager.add_job(cfg, inst)

        def feed(groups: list[TargetGroup], name: str = inst.job_name) -> None:
            manager.update(name, groups)

        discoveries += job_discoveries(cfg, inst, feed)
    for d in discoveries:
        await d.start()
    for d in discoveries:
        assert await d.wait_synced(15)
    return discoveries


async def _stop(discoveries: list[Discovery], manager: ScrapeManager, client: ScrapeClient) -> None:
    for d in discoveries:
        await d.stop()
        await d.client.close()
    await manager.stop()
    await client.close()


async def _until(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(check):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


async def test_targets_follow_the_cluster_and_removed_ones_go_stale(fleet: Emulator, tmp_path: Path) -> None:
    config = tmp_path / "prometheus.yml"
    config.write_text(_config(fleet))
    cfg = load_prometheus(config)
    sink = ListSink()
    client = ScrapeClient()
    manager = ScrapeManager(client=client, sink=sink, jitter=False)
    discoveries = await _discover(cfg, manager)
    manager.start()
    try:
        annotated = [ep for ep in (fleet.apps.endpoints if fleet.apps else [])]
        await _until(lambda: len(manager.running) == NODES + len(annotated), "every target to be scraped")
        await _until(lambda: {ls["pod"] for ls, v, _ in sink.series()
                              if ls["__name__"] == "http_requests_total" and ls["job"] == "pods"}
                     == {ep.pod for ep in annotated},
                     "samples of every annotated pod")
        ups = [(ls, v) for ls, v, _ in sink.series() if ls["__name__"] == "up"]
        assert ups and all(v == 1.0 for _, v in ups), [ls for ls, v in ups if v != 1.0][:3]
        keys = {ls["instance"]: key for ls, _, key in sink.series() if ls["__name__"] == "up"}
        sink.chunks.clear()
        node3 = fleet.nodes[2]
        assert node3.name == "node-3"
        await fleet.remove_node("node-3")
        prefix = (app_pod_ip(node3.address, 0) or "").rsplit(".", 1)[0] + "."
        gone = {ep.pod for ep in annotated if ep.ip.startswith(prefix)} | {"node-3"}
        def stale_up() -> set[str]:
            return {ls.get("pod", ls.get("node", "")) for ls, v, _ in sink.series()
                    if ls["__name__"] == "up" and is_stale_nan(v)}

        await _until(lambda: stale_up() >= gone, "staleness markers of every removed target")
        assert stale_up() == gone
        stale = [(ls, key) for ls, v, key in sink.series() if is_stale_nan(v)]
        assert {ls["__name__"] for ls, _ in stale} >= {"up", "scrape_duration_seconds", "http_requests_total",
                                                         "kubelet_running_pods"}
        assert all(key == keys[ls["instance"]] for ls, key in stale), \
            "staleness markers travel with the target's own routing key"
        assert len(manager.running) == NODES - 1 + len(annotated) - (len(gone) - 1)
    finally:
        await _stop(discoveries, manager, client)


async def test_series_of_a_removed_node_are_stale_in_prometheus(fleet: Emulator, tmp_path: Path,
                                                                  prometheus: Prometheus) -> None:
    config = tmp_path / "prometheus.yml"
    config.write_text(_config(fleet))
    cfg = load_prometheus(config)
    rw = RemoteWrite([WriterSettings(url=prometheus.write_url, name="prom", flush_deadline=0.05)],
                     metrics=SelfMetrics(), spool_dir=None)
    await rw.start()
    client = ScrapeClient()
    manager = ScrapeManager(client=client, sink=rw, jitter=False)
    discoveries = await _discover(cfg, manager)
    manager.start()
    try:
        await _until(lambda: len(prometheus.query('up{job="kubelet"} == 1')) == NODES, "kubelets up")
        await _until(lambda: len(prometheus.query('up{job="pods",node="node-2"} == 1')) > 0, "pods up")
        await fleet.remove_node("node-2")
        await _until(lambda: prometheus.query('up{node="node-2"}') == [], "node-2's series to go stale")
        left = prometheus.query('http_requests_total{node="node-2"}')
        assert left == [], (left, prometheus.query('http_requests_total{node="node-2"}[30s]'))
        assert len(prometheus.query('up{job="kubelet"}')) == NODES - 1
    finally:
        await _stop(discoveries, manager, client)
        await rw.close(5.0)


async def test_three_shards_scrape_every_target_exactly_once(fleet: Emulator, tmp_path: Path) -> None:
    config = tmp_path / "prometheus.yml"
    config.write_text(_config(fleet))
    cfg = load_prometheus(config)
    members = []
    for replication in (1, 2):
        for i in range(3):
            manager = ScrapeManager(client=ScrapeClient(), sink=None, sharder=Sharder(3, i, replication),
                                    jitter=False)
            discoveries = await _discover(cfg, manager)
            members.append((replication, set(manager.desired())))
            for d in discoveries:
                await d.stop()
                await d.client.close()
    for replication in (1, 2):
        shares = [keys for r, keys in members if r == replication]
        union = set().union(*shares)
        assert len(union) == NODES + len(fleet.apps.endpoints if fleet.apps else [])
        assert sum(len(s) for s in shares) == replication * len(union)


async def test_daemonset_mode_scrapes_exactly_its_nodes_annotated_pods(fleet: Emulator,
                                                                       tmp_path: Path) -> None:
    """Node-local discovery (the kubelet's /pods, no apiserver) feeding a job's relabel rules."""
    node = fleet.nodes[1]
    config = tmp_path / "prometheus.yml"
    config.write_text("""global: {scrape_interval: 1s, scrape_timeout: 1s}
scrape_configs:
- job_name: node-local-pods
  relabel_configs:
  - {source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_scrape], action: keep, regex: "true"}
  - {source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_path], target_label: __metrics_path__,
     regex: (.+)}
  - {source_labels: [__address__, __meta_kubernetes_pod_annotation_prometheus_io_port],
     regex: '([^:]+)(?::\\d+)?;(\\d+)', replacement: $1:$2, target_label: __address__}
  - {source_labels: [__meta_kubernetes_pod_name], target_label: pod}
  - {source_labels: [__meta_kubernetes_pod_node_name], target_label: node}
""")
    cfg = load_prometheus(config)
    sink = ListSink()
    client = ScrapeClient()
    manager = ScrapeManager(client=client, sink=sink, jitter=False)
    manager.add_job(cfg, cfg.instances[0])
    api = ApiConfig(node.url, ca_file=str(fleet.ca_path),
                    token_file=str(fleet.token_path("monitoring", "kubescrape")))
    local = KubeletDiscovery(ApiClient(api), lambda groups: manager.update("node-local-pods", groups),
                             refresh_interval=1.0)
    await local.start()
    assert await local.wait_synced(15)
    manager.start()
    try:
        pods = json.loads(fleet.servers[1].payloads.pods_json())["items"]
        annotated = {p["metadata"]["name"] for p in pods
                     if p["metadata"]["annotations"].get("prometheus.io/scrape") == "true"}
        assert annotated
        await _until(lambda: {ls["pod"] for ls, v, _ in sink.series()
                              if ls["__name__"] == "http_requests_total"} == annotated,
                     "samples of this node's annotated pods")
        assert {ls["node"] for ls, _, _ in sink.series()} == {node.name}
        assert len(manager.running) == len(annotated)
    finally:
        await _stop([local], manager, client)


async def test_discovered_scraping_starts_and_stops_everything(fleet: Emulator, tmp_path: Path) -> None:
    config = tmp_path / "prometheus.yml"
    config.write_text(_config(fleet))
    sink = ListSink()
    metrics = SelfMetrics()
    supervisor = Supervisor(metrics=metrics)
    scraping = DiscoveredScraping(load_prometheus(config), jitter=False, metrics=metrics,
                                  supervisor=supervisor)
    await scraping.start(sink)
    try:
        assert await scraping.wait_synced(15)
        annotated = fleet.apps.endpoints if fleet.apps else []
        await _until(lambda: len(scraping.loops) == NODES + len(annotated), "every target to be scraped")
        await _until(lambda: all(loop.stats.scrapes > 0 for loop in scraping.loops), "a scrape of each")
        tasks = [r.task for r in scraping.manager.running.values()]
        assert all(supervisor.running(t) for t in tasks) and supervisor.failing() == {}
        reg = metrics.registry
        assert reg.get_sample_value("kubescrape_sd_discovered_targets", {"job": "kubelet"}) == NODES
        assert reg.get_sample_value("kubescrape_sd_discovered_targets", {"job": "pods"}) == len(annotated)
        added = reg.get_sample_value("kubescrape_sd_kubernetes_events_total", {"role": "pod", "event": "add"})
        assert added == NODES * PODS
        await fleet.remove_node("node-1")
        await _until(lambda: (reg.get_sample_value("kubescrape_scrape_stale_markers_total") or 0) > 0,
                     "staleness markers counted")
    finally:
        await scraping.stop()
    left = [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith(("scrape", "discovery"))]
    assert scraping.loops == [] and left == [], "every task it started has ended"


async def test_only_jobs_with_discovery_are_managed(fleet: Emulator, tmp_path: Path) -> None:
    config = tmp_path / "prometheus.yml"
    config.write_text(_config(fleet) + "- job_name: static\n  static_configs: [{targets: ['127.0.0.1:9']}]\n")
    cfg = load_prometheus(config)
    assert has_discovery(cfg)
    scraping = DiscoveredScraping(cfg, sharder=Sharder(2, 1))
    assert sorted(scraping.manager.jobs) == ["kubelet", "pods"], "static targets stay the agent's own loops"
    assert scraping.manager.sharder == Sharder(2, 1) and len(scraping.discoveries) == 2
    await scraping.stop()
