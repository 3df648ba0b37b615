"""The stand-in apiserver's objects follow the emulated kubelets: pods as the kubelets list them, and the
Services, Endpoints, EndpointSlices and Namespaces their controllers would derive."""

from __future__ import annotations

import json
from pathlib import Path

from kubescrape.emulator.apiobjects import ClusterSync, NodeView
from kubescrape.emulator.apistore import Store
from kubescrape.emulator.fleet import Emulator
from kubescrape.emulator.payloads import NodePayloads
from kubescrape.testing import FakeClock


def _views(clock: FakeClock, payloads: list[NodePayloads]) -> list[NodeView]:
    return [NodeView(k + 1, p.node_name, p.node_ip, 10250, "v1.29.0", 0.0, p.pods_json())
            for k, p in enumerate(payloads)]


def _fleet(clock: FakeClock, n: int, pods: int, churn: float = 0.0) -> list[NodePayloads]:
    return [NodePayloads(f"node-{k}", f"127.0.1.{k}", pods, seed=k, clock=clock, churn_per_min=churn)
            for k in range(1, n + 1)]


def test_sync_mirrors_the_kubelets_and_derives_the_rest() -> None:
    clock = FakeClock()
    st = Store()
    sync = ClusterSync(st, created=clock.time())
    nodes = _fleet(clock, 3, 12)
    assert sync.sync(_views(clock, nodes)) > 0
    pods = st.items(st.resource("", "pods"))
    kubelet = [i for p in nodes for i in json.loads(p.pods_json())["items"]]
    assert sorted(p["metadata"]["uid"] for p in pods) == sorted(i["metadata"]["uid"] for i in kubelet)
    assert all("kubernetes.io/config.seen" not in (p["metadata"].get("annotations") or {}) for p in pods)
    names = [n["metadata"]["name"] for n in st.items(st.resource("", "nodes"))]
    assert names == ["node-1", "node-2", "node-3"]
    svcs = {s["metadata"]["name"]: s for s in st.items(st.resource("", "services"))}
    slices = {s["metadata"]["labels"]["kubernetes.io/service-name"]: s
              for s in st.items(st.resource("discovery.k8s.io", "endpointslices"))}
    assert set(svcs) == set(slices)
    exporter = slices["node-exporter"]
    assert sorted(e["nodeName"] for e in exporter["endpoints"]) == ["node-1", "node-2", "node-3"]
    assert exporter["ports"][0]["port"] == 9100
    eps = {e["metadata"]["name"]: e for e in st.items(st.resource("", "endpoints"))}
    assert len(eps["node-exporter"]["subsets"][0]["addresses"]) == 3
    assert "batch" in {n["metadata"]["name"] for n in st.items(st.resource("", "namespaces"))}
    assert sync.sync(_views(clock, nodes)) == 0, "nothing changed, nothing written"


def test_churn_and_a_removed_node_become_watch_events() -> None:
    clock = FakeClock()
    st = Store()
    sync = ClusterSync(st, created=clock.time())
    nodes = _fleet(clock, 2, 12, churn=6.0)
    sync.sync(_views(clock, nodes))
    rv = st.rv
    clock.advance(30)  # 3 pods replaced per node
    sync.sync(_views(clock, nodes))
    kinds = [e.type for e in st.events_since(st.resource("", "pods"), rv)]
    assert kinds.count("DELETED") == kinds.count("ADDED") >= 4
    rv = st.rv
    sync.sync(_views(clock, nodes[:1]))
    deleted = [e.obj["metadata"]["name"] for e in st.events_since(st.resource("", "nodes"), rv)
               if e.type == "DELETED"]
    assert deleted == ["node-2"]
    assert all(p["spec"]["nodeName"] == "node-1" for p in st.items(st.resource("", "pods")))


async def test_a_new_node_gets_the_next_address_and_its_own_certificate(tmp_path: Path) -> None:
    emu = Emulator(tmp_path / "state", nodes=2, pods=3, port=0, healthz_port=None, proxy_port=None,
                   apiserver_port=0)
    async with emu:
        spec = await emu.add_node()
        assert (spec.name, spec.address) == ("node-3", "127.0.1.3")
        assert (tmp_path / "state" / "pki" / "nodes" / "node-3.crt").exists()
        assert emu.store is not None
        assert len(emu.store.items(emu.store.resource("", "nodes"))) == 3
