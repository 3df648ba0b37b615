"""Real Kubernetes clients against the emulator's stand-in apiserver: kubectl, the official Python client
and raw HTTP checks of the apiserver's JSON shapes (lists, watch framing, bookmarks, Status objects)."""

from __future__ import annotations

import asyncio
import importlib
import json
import shutil
import ssl
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from kubescrape.emulator.fleet import Emulator

RBAC = Path(__file__).resolve().parent.parent / "data" / "discovery-rbac.yaml"
NODES, PODS = 3, 12
KUBECTL = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(KUBECTL is None,
                                   reason="kubectl is not installed (Debian kubernetes-client)")


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[Emulator]:
    emu = Emulator(tmp_path / "state", nodes=NODES, pods=PODS, port=0, healthz_port=None, proxy_port=None,
                   rbac_files=[RBAC], apiserver_port=0, bookmark_interval=0.5, sync_interval=0.1)
    async with emu:
        yield emu


async def kubectl(kubeconfig: Path, *args: str, timeout: float = 60.0) -> tuple[int, str, str]:
    assert KUBECTL is not None
    proc = await asyncio.create_subprocess_exec(
        KUBECTL, f"--kubeconfig={kubeconfig}", *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={"HOME": str(kubeconfig.parent), "PATH": "/usr/bin:/bin"})
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _json_stream(text: str) -> list[Any]:
    dec, out, i = json.JSONDecoder(), [], 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        obj, i = dec.raw_decode(text, i)
        out.append(obj)
    return out


def _ssl(emu: Emulator) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(emu.ca_path))


async def _get(emu: Emulator, path: str, token: str | None = None) -> tuple[int, Any]:
    assert emu.apiserver is not None
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with aiohttp.ClientSession() as s, s.get(emu.apiserver.url + path, ssl=_ssl(emu),
                                                    headers=headers) as r:
        return r.status, await r.json(content_type=None)


def _token(emu: Emulator, ns: str, name: str) -> str:
    return emu.token_path(ns, name).read_text().strip()


# --- kubectl -------------------------------------------------------------------------------------------

@needs_kubectl
async def test_kubectl_gets_nodes_and_all_pods(fleet: Emulator) -> None:
    rc, out, err = await kubectl(fleet.kubeconfig_path, "get", "nodes", "-o", "json")
    assert rc == 0, err
    assert sorted(i["metadata"]["name"] for i in json.loads(out)["items"]) == ["node-1", "node-2", "node-3"]
    rc, out, err = await kubectl(fleet.kubeconfig_path, "get", "pods", "-A", "-o", "json")
    assert rc == 0, err
    pods = json.loads(out)["items"]
    assert len(pods) == NODES * PODS
    # the apiserver's pods are the kubelets' pods
    kubelet = json.loads(fleet.servers[0].payloads.pods_json())["items"]
    on_node1 = {p["metadata"]["uid"] for p in pods if p["spec"]["nodeName"] == "node-1"}
    assert on_node1 == {p["metadata"]["uid"] for p in kubelet}
    rc, out, err = await kubectl(fleet.kubeconfig_path, "get", "pods", "-A")
    assert rc == 0 and len(out.strip().splitlines()) == NODES * PODS + 1, err
    assert out.split()[:6] == ["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "AGE"], \
        "the server's Table columns"
    rc, out, err = await kubectl(fleet.kubeconfig_path, "get", "nodes")
    assert rc == 0, err
    header, *rows = out.strip().splitlines()
    assert header.split() == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    assert [r.split()[0:3] for r in rows] == [[f"node-{k}", "Ready", "<none>"] for k in range(1, NODES + 1)]
    assert all(r.split()[4] == "v1.29.0" for r in rows)


@needs_kubectl
async def test_kubectl_watch_sees_a_node_leave(fleet: Emulator) -> None:
    watch = asyncio.create_task(kubectl(fleet.kubeconfig_path, "get", "nodes", "-w", "--output-watch-events",
                                        "-o", "json", "--request-timeout=6s"))
    await asyncio.sleep(2.0)
    await fleet.remove_node("node-3")
    _, out, err = await watch
    events = [(e["type"], e["object"]["metadata"]["name"]) for e in _json_stream(out)]
    assert ("ADDED", "node-1") in events and ("DELETED", "node-3") in events, (events, err)


@needs_kubectl
async def test_kubectl_auth_can_i_answers_from_the_rbac_yaml(fleet: Emulator) -> None:
    sa = fleet.service_account_kubeconfig("monitoring", "kubescrape")
    seed = fleet.service_account_kubeconfig("flashcat", "categraf-daemonset")
    unbound = fleet.service_account_kubeconfig("default", "unbound")
    cases = [
        (sa, ("list", "pods", "-A"), "yes"),
        (sa, ("watch", "endpointslices.discovery.k8s.io", "-A"), "yes"),
        (sa, ("get", "nodes", "--subresource=proxy"), "yes"),
        (sa, ("delete", "pods"), "no"),
        (seed, ("get", "nodes", "--subresource=proxy"), "yes"),
        (seed, ("list", "nodes"), "no"),
        (unbound, ("get", "nodes", "--subresource=metrics"), "no"),
        (fleet.kubeconfig_path, ("delete", "nodes"), "yes"),
    ]
    for kubeconfig, args, expected in cases:
        rc, out, err = await kubectl(kubeconfig, "auth", "can-i", *args)
        assert out.strip() == expected, (kubeconfig.name, args, out, err)
        assert rc == (0 if expected == "yes" else 1)
    rc, out, _ = await kubectl(fleet.kubeconfig_path, "auth", "can-i", "list", "pods",
                               "--as=system:serviceaccount:flashcat:categraf-daemonset")
    assert out.strip() == "no"


@needs_kubectl
async def test_kubectl_reports_forbidden_from_the_status(fleet: Emulator) -> None:
    unbound = fleet.service_account_kubeconfig("default", "unbound")
    rc, _, err = await kubectl(unbound, "get", "pods", "-A")
    assert rc == 1
    assert ('pods is forbidden: User "system:serviceaccount:default:unbound" cannot list resource "pods" '
            'in API group "" at the cluster scope') in err


@needs_kubectl
async def test_kubectl_reads_kubelet_metrics_through_nodes_proxy(fleet: Emulator) -> None:
    rc, out, err = await kubectl(fleet.kubeconfig_path, "get", "--raw",
                                 "/api/v1/nodes/node-2/proxy/metrics/cadvisor")
    assert rc == 0, err
    assert "container_cpu_usage_seconds_total" in out


# --- the official Python client --------------------------------------------------------------------------

def _python_client_list_and_watch(kubeconfig: Path, stop_after: int,
                                  listed: threading.Event) -> tuple[list[str], int, list[tuple[str, str]]]:
    # Typed loosely: the client's generated models are not what this test is about.
    client: Any = importlib.import_module("kubernetes.client")
    config: Any = importlib.import_module("kubernetes.config")
    watch: Any = importlib.import_module("kubernetes.watch")

    api = client.CoreV1Api(config.new_client_from_config(str(kubeconfig)))
    nodes: Any = api.list_node()
    pods: Any = api.list_pod_for_all_namespaces(field_selector="spec.nodeName=node-2")
    events: list[tuple[str, str]] = []
    listed.set()
    w = watch.Watch()
    for ev in w.stream(api.list_node, resource_version=nodes.metadata.resource_version, timeout_seconds=10,
                       allow_watch_bookmarks=True):
        events.append((ev["type"], ev["object"].metadata.name if ev["type"] != "BOOKMARK" else ""))
        if sum(t != "BOOKMARK" for t, _ in events) >= stop_after:
            w.stop()
    return [n.metadata.name for n in nodes.items], len(pods.items), events


async def test_python_client_lists_and_watches(fleet: Emulator) -> None:
    pytest.importorskip("kubernetes")
    kubeconfig = fleet.service_account_kubeconfig("monitoring", "kubescrape")
    listed = threading.Event()
    task = asyncio.create_task(asyncio.to_thread(_python_client_list_and_watch, kubeconfig, 2, listed))
    assert await asyncio.to_thread(listed.wait, 30)
    await fleet.remove_node("node-1")
    await asyncio.sleep(0.2)
    await fleet.add_node()
    names, pods_on_node2, events = await asyncio.wait_for(task, 30)
    assert sorted(names) == ["node-1", "node-2", "node-3"]
    assert pods_on_node2 == PODS
    assert [e for e in events if e[0] != "BOOKMARK"] == [("DELETED", "node-1"), ("ADDED", "node-1")]


# --- the apiserver's JSON shapes ----------------------------------------------------------------------------

async def test_status_objects(fleet: Emulator) -> None:
    status, body = await _get(fleet, "/api/v1/nodes", token="not-a-token")
    assert status == 401
    assert body == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": "Unauthorized", "reason": "Unauthorized", "code": 401}
    unbound = _token(fleet, "default", "unbound")
    status, body = await _get(fleet, "/api/v1/namespaces/shop/pods", token=unbound)
    assert status == 403 and body["reason"] == "Forbidden" and body["details"] == {"kind": "pods"}
    assert body["message"] == ('pods is forbidden: User "system:serviceaccount:default:unbound" cannot list '
                               'resource "pods" in API group "" in the namespace "shop"')
    sa = _token(fleet, "monitoring", "kubescrape")
    status, body = await _get(fleet, "/api/v1/nodes/node-9", token=sa)
    assert status == 404 and body["message"] == 'nodes "node-9" not found'
    assert body["details"] == {"name": "node-9", "kind": "nodes"}
    status, body = await _get(fleet, "/api/v1/pods?fieldSelector=spec.foo%3Dx", token=sa)
    assert status == 400 and body["message"] == "field label not supported: spec.foo"
    status, body = await _get(fleet, "/api/v1/nodes", token=None)
    assert status == 403 and 'User "system:anonymous" cannot list resource "nodes"' in body["message"]


async def test_lists_and_selectors(fleet: Emulator) -> None:
    sa = _token(fleet, "monitoring", "kubescrape")
    status, body = await _get(fleet, "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-2", token=sa)
    assert status == 200 and body["kind"] == "PodList" and body["apiVersion"] == "v1"
    assert int(body["metadata"]["resourceVersion"]) > 0
    assert len(body["items"]) == PODS and {p["spec"]["nodeName"] for p in body["items"]} == {"node-2"}
    assert "kind" not in body["items"][0], "list items carry no kind/apiVersion"
    status, body = await _get(fleet, "/api/v1/nodes?fieldSelector=metadata.name%3Dnode-1", token=sa)
    assert [n["metadata"]["name"] for n in body["items"]] == ["node-1"]
    node = body["items"][0]
    assert node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"] == fleet.nodes[0].port
    assert {"type": "InternalIP", "address": fleet.nodes[0].address} in node["status"]["addresses"]
    status, body = await _get(fleet, "/api/v1/pods?labelSelector=app.kubernetes.io%2Fname%3Dnode-exporter",
                              token=sa)
    assert len(body["items"]) == NODES
    status, body = await _get(fleet, "/apis/discovery.k8s.io/v1/endpointslices", token=sa)
    assert body["kind"] == "EndpointSliceList" and body["apiVersion"] == "discovery.k8s.io/v1"
    exporter = [s for s in body["items"]
                if s["metadata"]["labels"]["kubernetes.io/service-name"] == "node-exporter"]
    assert len(exporter[0]["endpoints"]) == NODES
    status, body = await _get(fleet, "/api/v1/pods?limit=5", token=sa)
    assert len(body["items"]) == 5 and body["metadata"]["remainingItemCount"] == NODES * PODS - 5
    seen = [p["metadata"]["name"] for p in body["items"]]
    while body["metadata"].get("continue"):
        status, body = await _get(fleet, f"/api/v1/pods?limit=7&continue={body['metadata']['continue']}",
                                  token=sa)
        seen += [p["metadata"]["name"] for p in body["items"]]
    assert len(seen) == len(set(seen)) == NODES * PODS


async def _watch_lines(emu: Emulator, query: str, token: str, until: int, timeout: float = 15) -> list[Any]:
    assert emu.apiserver is not None
    out: list[Any] = []
    async with aiohttp.ClientSession() as s, s.get(
            f"{emu.apiserver.url}/api/v1/nodes?watch=1&{query}", ssl=_ssl(emu),
            headers={"Authorization": f"Bearer {token}"}, timeout=aiohttp.ClientTimeout(total=timeout)) as r:
        assert r.status == 200 and r.headers["Content-Type"] == "application/json"
        async for line in r.content:
            out.append(json.loads(line))
            if len(out) >= until:
                break
    return out


async def test_watch_framing_bookmarks_and_resume(fleet: Emulator) -> None:
    sa = _token(fleet, "monitoring", "kubescrape")
    _, listing = await _get(fleet, "/api/v1/nodes", token=sa)
    rv = listing["metadata"]["resourceVersion"]
    task = asyncio.create_task(_watch_lines(fleet, f"resourceVersion={rv}&allowWatchBookmarks=true", sa, 3))
    await asyncio.sleep(0.3)
    await fleet.remove_node("node-2")
    events = await task
    types = [e["type"] for e in events]
    assert "DELETED" in types and "BOOKMARK" in types, types
    deleted = next(e for e in events if e["type"] == "DELETED")
    assert deleted["object"]["kind"] == "Node" and deleted["object"]["apiVersion"] == "v1"
    assert deleted["object"]["metadata"]["name"] == "node-2"
    bookmark = next(e for e in events if e["type"] == "BOOKMARK")
    assert set(bookmark["object"]["metadata"]) == {"resourceVersion", "creationTimestamp"}
    assert int(bookmark["object"]["metadata"]["resourceVersion"]) >= int(rv)
    # resuming from the version before the deletion replays it
    replay = await _watch_lines(fleet, f"resourceVersion={rv}", sa, 1)
    assert replay[0]["type"] == "DELETED" and replay[0]["object"]["metadata"]["name"] == "node-2"
    # without a version: the current state as ADDED events
    initial = await _watch_lines(fleet, "resourceVersion=0", sa, 2)
    assert {e["type"] for e in initial} == {"ADDED"}


async def test_watch_after_compaction_is_410_expired(fleet: Emulator) -> None:
    sa = _token(fleet, "monitoring", "kubescrape")
    _, listing = await _get(fleet, "/api/v1/nodes", token=sa)
    old = int(listing["metadata"]["resourceVersion"])
    await fleet.remove_node("node-3")
    assert fleet.store is not None
    fleet.store.compact()
    events = await _watch_lines(fleet, f"resourceVersion={old}", sa, 1)
    assert events == [{"type": "ERROR", "object": {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": f"too old resource version: {old} ({fleet.store.rv})", "reason": "Expired", "code": 410}}]


async def test_nodes_proxy_and_annotated_pods_answer(fleet: Emulator) -> None:
    sa = _token(fleet, "monitoring", "kubescrape")
    assert fleet.apiserver is not None
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{fleet.apiserver.url}/api/v1/nodes/node-1/proxy/metrics", ssl=_ssl(fleet),
                         headers={"Authorization": f"Bearer {sa}"}) as r:
            assert r.status == 200 and "kubelet_running_pods" in await r.text()
        seed = _token(fleet, "default", "unbound")
        async with s.get(f"{fleet.apiserver.url}/api/v1/nodes/node-1/proxy/metrics", ssl=_ssl(fleet),
                         headers={"Authorization": f"Bearer {seed}"}) as r:
            body = await r.json()
            assert r.status == 403 and body["message"].startswith('nodes "node-1" is forbidden: User')
            assert 'cannot get resource "nodes/proxy"' in body["message"]
        _, pods = await _get(fleet, "/api/v1/pods", token=sa)
        annotated = [p for p in pods["items"]
                     if p["metadata"].get("annotations", {}).get("prometheus.io/scrape") == "true"]
        assert len(annotated) >= NODES * 3
        for p in annotated:
            ann = p["metadata"]["annotations"]
            url = f"http://{p['status']['podIP']}:{ann['prometheus.io/port']}{ann['prometheus.io/path']}"
            async with s.get(url) as r:
                assert r.status == 200 and "http_requests_total" in await r.text(), url


async def test_node_churn_schedule_removes_and_returns_a_node(tmp_path: Path) -> None:
    emu = Emulator(tmp_path / "state", nodes=3, pods=4, port=0, healthz_port=None, proxy_port=None,
                   apiserver_port=0, node_churn=0.5, sync_interval=0.05)
    async with emu:
        assert emu.store is not None
        nodes = emu.store.resource("", "nodes")
        counts = set()
        for _ in range(100):
            counts.add(len(emu.store.items(nodes)))
            if counts >= {2, 3} and len(emu.store.items(nodes)) == 3:
                break
            await asyncio.sleep(0.05)
        assert counts >= {2, 3}, counts
        kinds = [e.type for e in emu.store.events_since(nodes, 1000)]
        assert "DELETED" in kinds and kinds.count("ADDED") >= 4


@needs_kubectl
async def test_kubectl_watch_prints_the_servers_table(fleet: Emulator) -> None:
    _, out, err = await kubectl(fleet.kubeconfig_path, "get", "pods", "-n", "monitoring", "-w",
                                 "--request-timeout=3s")
    lines = out.strip().splitlines()
    assert lines[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"], (out, err)
    names = {ln.split()[0] for ln in lines[1:]}
    assert {n for n in names if n.startswith("node-exporter-")} and all("Running" in ln for ln in lines[1:])
