"""Kubernetes discovery against the emulator's stand-in apiserver and kubelets: node and pod roles match the
emulated cluster, follow nodes that leave and come back, survive a forced 410 without losing targets,
back off on errors; node-local discovery finds exactly its node's annotated pods; shards split the work."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kubescrape.clock import Backoff
from kubescrape.discovery import (
    ApiClient,
    ApiConfig,
    ApiError,
    KubeletDiscovery,
    KubernetesDiscovery,
    Sharder,
    TargetGroup,
    in_cluster_config,
    load_kubeconfig,
)
from kubescrape.discovery.metrics import DiscoveryMetrics
from kubescrape.emulator.fleet import Emulator
from kubescrape.relabel import RelabelConfig, relabel

RBAC = Path(__file__).resolve().parent.parent / "data" / "discovery-rbac.yaml"
NODES, PODS = 4, 15
ANNOTATION_RULES = [
    RelabelConfig(source_labels=["__meta_kubernetes_pod_annotation_prometheus_io_scrape"], action="keep",
                  regex="true"),
    RelabelConfig(source_labels=["__meta_kubernetes_pod_annotation_prometheus_io_path"],
                  target_label="__metrics_path__", regex="(.+)"),
    RelabelConfig(source_labels=["__address__", "__meta_kubernetes_pod_annotation_prometheus_io_port"],
                  target_label="__address__", regex=r"([^:]+)(?::\d+)?;(\d+)", replacement="$1:$2"),
    RelabelConfig(action="labelmap", regex="__meta_kubernetes_pod_(name|node_name)"),
    RelabelConfig(action="labeldrop", regex="__meta_.*"),
]


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[Emulator]:
    emu = Emulator(tmp_path / "state", nodes=NODES, pods=PODS, port=0, healthz_port=None, proxy_port=None,
                   rbac_files=[RBAC], apiserver_port=0, bookmark_interval=0.3, sync_interval=0.1)
    async with emu:
        yield emu


def _sa_config(emu: Emulator, ns: str = "monitoring", name: str = "kubescrape") -> ApiConfig:
    """The in-cluster shape: server, CA file and a token file that is re-read."""
    assert emu.apiserver is not None
    return ApiConfig(emu.apiserver.url, ca_file=str(emu.ca_path), token_file=str(emu.token_path(ns, name)))


class Updates:
    def __init__(self) -> None:
        self.batches: list[list[TargetGroup]] = []
        self.event = asyncio.Event()

    def __call__(self, groups: list[TargetGroup]) -> None:
        self.batches.append(groups)
        self.event.set()

    async def until(self, pred: object, timeout: float = 15.0) -> None:
        assert callable(pred)
        deadline = asyncio.get_running_loop().time() + timeout
        while not pred():
            self.event.clear()
            remaining = deadline - asyncio.get_running_loop().time()
            assert remaining > 0, "timed out waiting for discovery updates"
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.event.wait(), remaining)


async def _started(d: KubernetesDiscovery) -> KubernetesDiscovery:
    await d.start()
    assert await d.wait_synced(15)
    return d


async def test_node_and_pod_roles_match_the_cluster(fleet: Emulator) -> None:
    async with ApiClient(_sa_config(fleet)) as client:
        nodes = await _started(KubernetesDiscovery(client, "node", Updates()))
        pods = await _started(KubernetesDiscovery(client, "pod", Updates()))
        try:
            assert sorted(ls["__address__"] for ls in nodes.label_sets()) == sorted(
                f"{s.address}:{s.port}" for s in fleet.nodes)
            assert {ls["instance"] for ls in nodes.label_sets()} == {s.name for s in fleet.nodes}
            uids = {ls["__meta_kubernetes_pod_uid"] for ls in pods.label_sets()}
            assert len(pods.groups) == len(uids) == NODES * PODS
            kubelet_uids = {p["metadata"]["uid"] for s in fleet.servers
                            for p in json.loads(s.payloads.pods_json())["items"]}
            assert uids == kubelet_uids
        finally:
            await nodes.stop()
            await pods.stop()


async def test_nodes_leave_and_return_with_one_watch_event(fleet: Emulator) -> None:
    async with ApiClient(load_kubeconfig(fleet.kubeconfig_path)) as client:
        updates = Updates()
        nodes = await _started(KubernetesDiscovery(client, "node", updates))
        pod_updates = Updates()
        pods = await _started(KubernetesDiscovery(client, "pod", pod_updates))
        try:
            updates.batches.clear()
            await fleet.remove_node("node-2")
            await updates.until(lambda: "node/node-2" not in nodes.groups)
            assert updates.batches[0] == [TargetGroup("node/node-2")], "one DELETED event, one empty group"
            await pod_updates.until(lambda: not any(
                ls["__meta_kubernetes_pod_node_name"] == "node-2" for ls in pods.label_sets()))
            assert len(pods.groups) == (NODES - 1) * PODS
            await fleet.add_node()
            await updates.until(lambda: "node/node-2" in nodes.groups)
            await pod_updates.until(lambda: len(pods.groups) == NODES * PODS)
        finally:
            await nodes.stop()
            await pods.stop()


async def test_forced_410_relists_without_losing_targets(fleet: Emulator) -> None:
    assert fleet.store is not None
    async with ApiClient(_sa_config(fleet)) as client:
        updates = Updates()
        pods = await _started(KubernetesDiscovery(client, "pod", updates, metrics=DiscoveryMetrics()))
        try:
            before = dict(pods.groups)
            reflector = pods.reflectors[0]
            assert pods.metrics is not None
            assert pods.metrics.registry.get_sample_value("kubescrape_sd_kubernetes_lists_total",
                                                          {"role": "pod"}) == 1
            lists = reflector.lists
            updates.batches.clear()
            await fleet.remove_node("node-4")  # changes the reflector has not seen yet …
            fleet.store.compact()  # … are compacted away,
            fleet.store.close_watchers()  # and the watch is cut: resuming it gets 410 Expired
            await updates.until(lambda: reflector.lists > lists and len(pods.groups) == (NODES - 1) * PODS)
            removed = [g.source for batch in updates.batches for g in batch if not g.targets]
            assert sorted(removed) == sorted(s for s, g in before.items()
                                             if g.labels["__meta_kubernetes_pod_node_name"] == "node-4")
            assert all(pods.groups[s] == g for s, g in before.items() if s in pods.groups)
            assert pods.metrics.registry.get_sample_value("kubescrape_sd_kubernetes_lists_total",
                                                          {"role": "pod"}) == 2, "one re-list after 410"
        finally:
            await pods.stop()


async def test_forbidden_is_counted_and_retried_with_backoff(fleet: Emulator) -> None:
    metrics = DiscoveryMetrics()
    async with ApiClient(_sa_config(fleet, "default", "unbound")) as client:
        d = KubernetesDiscovery(client, "node", Updates(), metrics=metrics)
        d.reflectors[0].backoff = Backoff(0.05, 0.1)
        await d.start()
        try:
            for _ in range(200):
                if d.reflectors[0].errors >= 3:
                    break
                await asyncio.sleep(0.05)
            err = d.reflectors[0].last_error
            assert isinstance(err, ApiError) and err.code == 403
            assert "grant the ServiceAccount list and watch" in str(err)
            assert not d.synced and d.groups == {}
            failures = metrics.registry.get_sample_value(
                "kubescrape_sd_failures_total", {"mechanism": "kubernetes", "reason": "http_403"})
            assert failures is not None and failures >= 3
        finally:
            await d.stop()


async def test_node_local_discovery_finds_exactly_its_annotated_pods(fleet: Emulator) -> None:
    node = fleet.nodes[1]
    cfg = ApiConfig(node.url, ca_file=str(fleet.ca_path), token_file=str(fleet.token_path("monitoring",
                                                                                          "kubescrape")))
    async with ApiClient(cfg) as client:
        local = KubeletDiscovery(client, Updates())
        await local.refresh()
    assert fleet.apiserver is not None
    async with ApiClient(_sa_config(fleet)) as client:
        cluster = await _started(KubernetesDiscovery(client, "pod", Updates()))
        await cluster.stop()
    # identical labels for the node's pods, whichever way they were discovered, except the annotations
    # only the kubelet's copy of a pod has (kubernetes.io/config.seen, kubernetes.io/config.source)
    def comparable(labels: list[dict[str, str]]) -> list[dict[str, str]]:
        return sorted(({k: v for k, v in ls.items() if "kubernetes_io_config_" not in k} for ls in labels),
                      key=lambda ls: sorted(ls.items()))

    on_node = [ls for ls in cluster.label_sets() if ls["__meta_kubernetes_pod_node_name"] == node.name]
    assert comparable(local.label_sets()) == comparable(on_node)
    assert set(local.groups) == {f"pod/{ls['__meta_kubernetes_namespace']}/{ls['__meta_kubernetes_pod_name']}"
                                 for ls in on_node}
    final = [ls for ls in (relabel(t, ANNOTATION_RULES) for t in local.label_sets()) if ls is not None]
    annotated = {p["metadata"]["name"] for p in json.loads(fleet.servers[1].payloads.pods_json())["items"]
                 if p["metadata"]["annotations"].get("prometheus.io/scrape") == "true"}
    assert annotated and {ls["name"] for ls in final} == annotated
    assert {ls["node_name"] for ls in final} == {node.name}
    assert fleet.apps is not None
    served = {(ep.ip, ep.port) for ep in fleet.apps.endpoints}
    for ls in final:
        host, port = ls["__address__"].rsplit(":", 1)
        assert (host, int(port)) in served, "the relabeled address is where the pod's metrics answer"


async def test_three_shards_split_discovered_pods(fleet: Emulator) -> None:
    async with ApiClient(_sa_config(fleet)) as client:
        pods = await _started(KubernetesDiscovery(client, "pod", Updates()))
        await pods.stop()
    targets = pods.label_sets()
    for replication in (1, 2):
        kept = [[t["__address__"] + t["__meta_kubernetes_pod_container_name"] for t in targets
                 if Sharder(3, i, replication).keep(t)] for i in range(3)]
        union = [k for share in kept for k in share]
        assert sorted(set(union)) == sorted({t["__address__"] + t["__meta_kubernetes_pod_container_name"]
                                             for t in targets})
        assert len(union) == replication * len(targets)


async def test_in_cluster_config_rereads_the_rotated_token(tmp_path: Path) -> None:
    """Tokens live 3 s and are rewritten at 80 % of that: every reconnect of the 1 s watches must use the
    current token, or the apiserver answers 401."""
    emu = Emulator(tmp_path / "state", nodes=2, pods=6, port=0, healthz_port=None, proxy_port=None,
                   rbac_files=[RBAC], apiserver_port=0, token_ttl=3.0)
    async with emu:
        assert emu.apiserver is not None
        env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(emu.apiserver.port)}
        cfg = in_cluster_config(env, token_file=emu.token_path("monitoring", "kubescrape"),
                                ca_file=emu.ca_path)
        assert cfg.server == emu.apiserver.url
        async with ApiClient(cfg) as client:
            d = KubernetesDiscovery(client, "node", Updates(), watch_timeout=1)
            await _started(d)
            rotations = emu.token_store.rotations if emu.token_store else 0
            await asyncio.sleep(7.0)
            await d.stop()
        assert emu.token_store is not None and emu.token_store.rotations >= rotations + 2
        r = d.reflectors[0]
        assert r.watches >= 5 and r.errors == 0, r.last_error
        assert len(d.groups) == 2
