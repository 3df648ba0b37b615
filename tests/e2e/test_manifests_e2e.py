"""The generated RBAC, loaded into the kubelet emulator, allows what the agent scrapes and nothing else.

Real TLS (the emulator's CA), real ServiceAccount tokens signed by the emulator, real HTTP on loopback.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from kubescrape.deploy import (
    SA_CA_FILE,
    SA_TOKEN_FILE,
    build_manifests,
    config_toml,
    dump_yaml,
    prometheus_toml,
)
from kubescrape.emulator.fleet import Emulator
from kubescrape.emulator.server import NodeSpec

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


def rbac_file(tmp_path: Path) -> Path:
    """ServiceAccount, ClusterRole and ClusterRoleBinding exactly as `kubescrape manifests` prints them."""
    docs = [
        dump_yaml(obj, comment) for comment, obj in build_manifests(NAMESPACE, "http://x/write", "img")
        if obj["kind"] in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding")
    ]
    path = tmp_path / "rbac.yaml"
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
