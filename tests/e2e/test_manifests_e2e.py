"""The generated RBAC, loaded into the kubelet emulator, allows what the agent scrapes and nothing else; the
generated configurations of both modes load, discover the emulated cluster and scrape it: the DaemonSet's
node-local discovery finds exactly its node's annotated pods, the StatefulSet's shards together scrape every
node and annotated pod exactly once, through the stand-in apiserver with exactly the generated RBAC.

Real TLS (the emulator's CA), real ServiceAccount tokens signed by the emulator, real HTTP on loopback.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from kubescrape.agent import Agent
from kubescrape.config.categraf import load_categraf
from kubescrape.config.prometheus import load_prometheus
from kubescrape.deploy import (
    APISERVER,
    NODE_PODS_FILE,
    SA_CA_FILE,
    SA_TOKEN_FILE,
    build_manifests,
    cluster_prometheus_yml,
    config_toml,
    dump_yaml,
    node_pods_yml,
    prometheus_toml,
)
from kubescrape.discovery.shard import sharder_from_options
from kubescrape.emulator.fleet import Emulator
from kubescrape.emulator.server import NodeSpec
from kubescrape.remote_write import Chunk

NAMESPACE = "obs"
METRICS = b"# TYPE kubelet_up gauge\nkubelet_up 1\nkubelet_running_pods 3\n"


class Payloads:
    """Small fixed payloads: this test is about authorization, not payload realism."""

    def metrics(self) -> bytes:
        return METRICS

    def cadvisor(self) -> bytes:
        return b'container_cpu_usage_seconds_total{container="a"} 1\n'

    def resource(self) -> bytes:
        return b"node_cpu_usage_seconds_total 2\n"

    def probes(self) -> bytes:
        return b'prober_probe_total{result="successful"} 4\n'

    def kube_proxy_metrics(self) -> bytes:
        return b"kubeproxy_sync_proxy_rules_last_timestamp_seconds 1\n"

    def stats_summary(self) -> bytes:
        return json.dumps({"node": {"nodeName": "node-1"}, "pods": []}).encode()

    def pods_json(self) -> bytes:
        return json.dumps({"kind": "PodList", "apiVersion": "v1", "items": []}).encode()

    def configz(self) -> bytes:
        return b'{"kubeletconfig": {}}'


def payloads(_: NodeSpec, __: int) -> Payloads:
    return Payloads()


def rbac_file(tmp_path: Path, mode: str = "daemonset") -> Path:
    """ServiceAccount, ClusterRole and ClusterRoleBinding exactly as `kubescrape manifests` prints them."""
    docs = [
        dump_yaml(obj, comment)
        for comment, obj in build_manifests(NAMESPACE, "http://x/write", "img", mode=mode)
        if obj["kind"] in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding")
    ]
    path = tmp_path / f"rbac-{mode}.yaml"
    path.write_text("---\n".join(docs))
    return path


@pytest.fixture(params=["1.29.0", "1.32.0"])
async def emulator(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Emulator]:
    emu = Emulator(
        tmp_path / "state", port=0, healthz_port=None, proxy_port=None, rbac_files=[rbac_file(tmp_path)],
        kubelet_version=request.param, payload_factory=payloads,
    )
    async with emu:
        yield emu


async def status_of(emu: Emulator, method: str, path: str, token: str) -> tuple[int, str]:
    ctx = ssl.create_default_context(cafile=str(emu.ca_path))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session, session.request(
        method, emu.nodes[0].url + path, ssl=ctx, headers={"Authorization": f"Bearer {token}"}
    ) as resp:
        return resp.status, await resp.text()


AGENT_PATHS = [
    "/metrics", "/metrics/cadvisor", "/metrics/resource", "/metrics/probes", "/stats/summary", "/pods",
]
DENIED = [
    ("POST", "/metrics"),
    ("DELETE", "/metrics"),
    ("GET", "/logs/"),
    ("GET", "/logs/syslog"),
    ("POST", "/checkpoint/default/web/app"),
    ("POST", "/exec/default/web/app?command=sh"),
    ("POST", "/run/default/web/app"),
    ("PUT", "/stats/summary"),
]


async def test_generated_rbac_allows_what_the_agent_scrapes_and_denies_the_rest(emulator: Emulator) -> None:
    token = emulator.token_path(NAMESPACE, "kubescrape").read_text().strip()
    allowed = await asyncio.gather(*(status_of(emulator, "GET", p, token) for p in AGENT_PATHS))
    assert [s for s, _ in allowed] == [200] * len(AGENT_PATHS), allowed
    assert allowed[0][1].encode() == METRICS
    denied = await asyncio.gather(*(status_of(emulator, m, p, token) for m, p in DENIED))
    for (method, path), (status, body) in zip(DENIED, denied, strict=True):
        assert status == 403, (method, path, status, body)
        assert f"user=system:serviceaccount:{NAMESPACE}:kubescrape" in body


async def test_without_the_generated_rbac_the_same_service_account_is_forbidden(tmp_path: Path) -> None:
    # The grant above comes from the generated binding, not from the emulator's defaults.
    sa_only = tmp_path / "sa.yaml"
    sa_only.write_text(f"apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: kubescrape\n"
                       f"  namespace: {NAMESPACE}\n")
    async with Emulator(tmp_path / "state", port=0, healthz_port=None, proxy_port=None, rbac_files=[sa_only],
                        payload_factory=payloads) as emu:
        token = emu.token_path(NAMESPACE, "kubescrape").read_text().strip()
        status, _ = await status_of(emu, "GET", "/metrics", token)
    assert status == 403


def generated_conf(emu: Emulator, conf: Path) -> Path:
    """The generated Categraf config with the in-pod paths pointed at the emulator's files."""
    (conf / "input.prometheus").mkdir(parents=True)
    (conf / "config.toml").write_text(config_toml("http://127.0.0.1:1/write"))
    toml = prometheus_toml()
    # kube-proxy is not emulated here: keep the two kubelet instances.
    toml = toml[toml.index("# The kubelet"):]
    toml = (toml.replace(":10250", f":{emu.nodes[0].port}")
            .replace(SA_TOKEN_FILE, str(emu.token_path(NAMESPACE, "kubescrape")))
            .replace(SA_CA_FILE, str(emu.ca_path)))
    (conf / "input.prometheus" / "prometheus.toml").write_text(toml)
    return conf


async def kubescrape(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kubescrape", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "HOSTIP": "127.0.0.1", "HOSTNAME": "node-1"},
        cwd=Path(__file__).resolve().parents[2],
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_generated_config_scrapes_the_emulator_with_doctor_and_the_agent(tmp_path: Path) -> None:
    async with Emulator(tmp_path / "state", port=0, healthz_port=None, proxy_port=None,
                        rbac_files=[rbac_file(tmp_path)], payload_factory=payloads) as emu:
        conf = generated_conf(emu, tmp_path / "conf")
        (code, out, err), (agent_code, agent_out, agent_err) = await asyncio.gather(
            kubescrape("doctor", "--config-dir", str(conf), "--json"),
            kubescrape("run", "--config-dir", str(conf), "--test", "--no-spool", "--listen", ""),
        )
    assert agent_code == 0, (agent_out, agent_err)
    assert "kubelet_running_pods" in agent_out and "container_cpu_usage_seconds_total" in agent_out
    assert code == 0, (out, err)
    results = json.loads(out)
    assert sorted(r["url"] for r in results) == [
        f"https://127.0.0.1:{emu.nodes[0].port}/metrics",
        f"https://127.0.0.1:{emu.nodes[0].port}/metrics/cadvisor",
    ]
    assert all(r["ok"] and r["stats"]["series"] >= 1 for r in results)


class ListSink:
    """Collects what an in-process agent would remote-write."""

    def __init__(self) -> None:
        self.chunks: list[Chunk] = []

    async def append(self, chunks: Sequence[Chunk]) -> None:
        self.chunks.extend(chunks)


async def _until(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


def _scraped_urls(agent: Agent) -> dict[str, bool | None]:
    return {t.url: t.up for t in agent.stats().targets}


def _annotated_urls(emu: Emulator, nodes: Sequence[int]) -> dict[str, str]:
    """URL → pod name of the annotated pods on ``nodes``, from the kubelets' own /pods."""
    out = {}
    for i in nodes:
        for pod in json.loads(emu.servers[i].payloads.pods_json())["items"]:
            ann = pod["metadata"]["annotations"]
            if ann.get("prometheus.io/scrape") == "true":
                url = (f"http://{pod['status']['podIP']}:{ann['prometheus.io/port']}"
                       f"{ann.get('prometheus.io/path', '/metrics')}")
                out[url] = pod["metadata"]["name"]
    return out


def _served(emu: Emulator) -> set[str]:
    """The annotated pods' endpoints the emulator really listens on (a loopback address another test on
    the machine holds is skipped by the emulator; such a pod is discovered but may not answer)."""
    assert emu.apps is not None
    return {f"http://{ep.ip}:{ep.port}{ep.path}" for ep in emu.apps.endpoints}


@pytest.fixture(params=["1.29.0", "1.32.0"])
async def daemonset_fleet(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Emulator]:
    """Four nodes with annotated application pods, the DaemonSet's generated RBAC only; /pods is authorized
    as nodes/proxy on 1.29 and nodes/pods on 1.32 (fine-grained)."""
    emu = Emulator(tmp_path / "state", nodes=4, pods=9, port=0, healthz_port=None, proxy_port=None,
                   rbac_files=[rbac_file(tmp_path)], kubelet_version=request.param, apiserver_port=0,
                   sync_interval=0.1)
    async with emu:
        yield emu


async def test_daemonset_node_local_discovery_scrapes_exactly_its_nodes_annotated_pods(
    daemonset_fleet: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Bounded as a whole: a stuck start or stop fails here with its traceback instead of holding the suite.
    await asyncio.wait_for(_daemonset_mode(daemonset_fleet, tmp_path, monkeypatch), 120)


async def _daemonset_mode(emu: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The node whose pods' endpoints the emulator serves best (pod IPs are fixed per node index, and another
    # emulator on this machine may hold some of them).
    index = max(range(len(emu.nodes)), key=lambda i: len(set(_annotated_urls(emu, [i])) & _served(emu)))
    node = emu.nodes[index]
    conf = tmp_path / "conf"
    (conf / "input.prometheus").mkdir(parents=True)
    pods_file = conf / NODE_PODS_FILE
    (conf / "config.toml").write_text(config_toml("http://127.0.0.1:1/write", str(pods_file)))
    doc = yaml.safe_load(node_pods_yml("1s"))
    doc["global"]["scrape_timeout"] = "1s"
    (job,) = doc["scrape_configs"]
    (sd,) = job["kubelet_sd_configs"]
    # The in-pod ServiceAccount files are the emulator's; the node's IP comes from $HOSTIP as in the pod.
    sd["url"] = sd["url"].replace(":10250", f":{node.port}")
    sd["tls_config"] = {"ca_file": str(emu.ca_path)}
    sd["bearer_token_file"] = str(emu.token_path(NAMESPACE, "kubescrape"))
    sd["refresh_interval"] = "1s"
    pods_file.write_text(yaml.safe_dump(doc))
    (conf / "input.prometheus" / "prometheus.toml").write_text("")
    monkeypatch.setenv("HOSTIP", node.address)
    config = load_categraf(conf)
    assert config.warnings == []
    expected = _annotated_urls(emu, [index])
    assert expected, "the emulated node runs annotated pods"
    others = _annotated_urls(emu, [i for i in range(len(emu.nodes)) if i != index])
    assert others and not set(others) & set(expected)
    answering = set(expected) & _served(emu)
    assert answering
    agent = Agent(config, sink=ListSink(), jitter=False)
    await agent.start()
    try:
        await _until(lambda: set(_scraped_urls(agent)) == set(expected), "exactly this node's annotated pods")
        await _until(lambda: all(_scraped_urls(agent)[u] for u in answering), "this node's pods scraped")
        # The other nodes' pods never became targets: node-local discovery, not the cluster's.
        assert set(_scraped_urls(agent)) == set(expected)
    finally:
        await agent.stop()


def _in_emulator(doc: dict[str, Any], emu: Emulator) -> dict[str, Any]:
    """The cluster-mode prometheus.yml as the pod would see it, with the in-cluster pieces (the
    ServiceAccount files, the apiserver's address) pointed at the emulator's."""
    assert emu.apiserver is not None
    token, ca = str(emu.token_path(NAMESPACE, "kubescrape")), str(emu.ca_path)
    api_host = emu.apiserver.url.removeprefix("https://")
    text = (yaml.safe_dump(doc).replace(SA_TOKEN_FILE, token).replace(SA_CA_FILE, ca)
            .replace(APISERVER, api_host))
    out: dict[str, Any] = yaml.safe_load(text)
    for job in out["scrape_configs"]:
        for sd in job["kubernetes_sd_configs"]:
            sd.update(api_server=emu.apiserver.url, tls_config={"ca_file": ca}, bearer_token_file=token)
    out["global"]["scrape_interval"] = "1s"
    out["global"]["scrape_timeout"] = "1s"
    return out


async def test_cluster_mode_shards_scrape_every_node_and_annotated_pod_exactly_once(tmp_path: Path) -> None:
    # Bounded as a whole: a stuck start or stop fails here with its traceback instead of holding the suite.
    await asyncio.wait_for(_cluster_mode(tmp_path), 120)


async def _cluster_mode(tmp_path: Path) -> None:
    (sts,) = [o for _, o in build_manifests(NAMESPACE, "http://x/write", "img", mode="cluster", replicas=2)
              if o["kind"] == "StatefulSet"]
    command = sts["spec"]["template"]["spec"]["containers"][0]["command"]
    count = int(command[command.index("--shard-count") + 1])
    generated = tmp_path / "prometheus.yml"
    generated.write_text(cluster_prometheus_yml("http://127.0.0.1:1/write"))
    assert load_prometheus(generated, strict=True).warnings == []
    async with Emulator(tmp_path / "state", nodes=3, pods=9, port=0, healthz_port=None, proxy_port=None,
                        rbac_files=[rbac_file(tmp_path, "cluster")], apiserver_port=0,
                        sync_interval=0.1) as emu:
        assert emu.apiserver is not None and emu.apps is not None
        config_file = tmp_path / "in-emulator.yml"
        config_file.write_text(yaml.safe_dump(_in_emulator(yaml.safe_load(generated.read_text()), emu)))
        config = load_prometheus(config_file, strict=True)
        assert config.warnings == []
        api = emu.apiserver.url
        expected = {f"{api}/api/v1/nodes/{n.name}/proxy{path}"
                    for n in emu.nodes for path in ("/metrics", "/metrics/cadvisor")}
        kubelets = set(expected)
        expected |= set(_annotated_urls(emu, range(len(emu.nodes))))
        must_answer = kubelets | (expected & _served(emu))
        # The StatefulSet's pods, kubescrape-0 and kubescrape-1, take their shard from their names.
        agents = [Agent(config, sink=ListSink(), jitter=False,
                        sharder=sharder_from_options(count, None, environ={"POD_NAME": f"kubescrape-{i}"}))
                  for i in range(count)]
        for agent in agents:
            await agent.start()
        try:
            def union() -> list[str]:
                return [u for a in agents for u in _scraped_urls(a)]

            await _until(lambda: set(union()) == expected, "every target on one shard")
            await _until(lambda: all(_scraped_urls(a).get(u) for a in agents for u in must_answer
                                     if u in _scraped_urls(a)),
                         "every target scraped (kubelets through the apiserver's nodes/proxy)")
            assert sorted(union()) == sorted(expected), "no target on two shards"
            assert all(_scraped_urls(a) for a in agents), "every shard got a share"
        finally:
            for agent in agents:
                await agent.stop()
