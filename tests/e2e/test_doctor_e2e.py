"""doctor against the kubelet emulator: every failure of the seed documents, diagnosed with its fix.

Real TLS with the emulator's CA and serving certificates, real ServiceAccount tokens, the emulator's
authn → authz chain and its 401/403 bodies. The command line runs as a subprocess (text and --json).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubescrape.doctor import Diagnosis, diagnose, diagnose_url, target_from_url
from kubescrape.emulator.fleet import Emulator
from kubescrape.emulator.pki import CertificateAuthority
from kubescrape.emulator.server import NodeSpec
from kubescrape.emulator.tokens import TokenIssuer
from kubescrape.scrape.targets import Target
from kubescrape.testing import FakeClock

ROOT = Path(__file__).resolve().parents[2]
SERIES = 250
GOOD = "".join(
    f'kubelet_http_requests_total{{path="/p{i}",verb="GET"}} {i}\n' for i in range(SERIES)
).encode()
# Line 4 has an unterminated label set.
BROKEN = b'# HELP a A.\n# TYPE a gauge\na 1\nb{job="x" 2\nc 3\n'
HTML = b"<!DOCTYPE html><html><head><title>Dashboard</title></head><body>hi</body></html>"


class Payloads:
    """/metrics is fine, /metrics/cadvisor is an HTML page, /metrics/probes is malformed text."""

    def metrics(self) -> bytes:
        return GOOD

    def cadvisor(self) -> bytes:
        return HTML

    def resource(self) -> bytes:
        return GOOD

    def probes(self) -> bytes:
        return BROKEN

    def kube_proxy_metrics(self) -> bytes:
        return GOOD

    def stats_summary(self) -> bytes:
        return b'{"node": {}}'

    def pods_json(self) -> bytes:
        return b'{"items": []}'

    def configz(self) -> bytes:
        return b"{}"


def payloads(_: NodeSpec, __: int) -> Payloads:
    return Payloads()


def start_emulator(state: Path, **options: object) -> Emulator:
    return Emulator(state, port=0, healthz_port=None, proxy_port=None, payload_factory=payloads,
                    **options)  # type: ignore[arg-type]


@pytest.fixture
async def emulator(tmp_path: Path) -> AsyncIterator[Emulator]:
    async with start_emulator(tmp_path / "state") as emu:
        yield emu


def spec(emu: Emulator, path: str = "/metrics", /, **changes: Any) -> Target:
    """The seed's kubelet instance (CA + the categraf-daemonset token) for ``path``, with ``changes``."""
    options: dict[str, Any] = {
        "ca_file": str(emu.ca_path), "token_file": str(emu.token_path("flashcat", "categraf-daemonset")),
    }
    return target_from_url(emu.nodes[0].url + path, scrape_timeout=3, **{**options, **changes})


def failed(d: Diagnosis, step: str) -> tuple[str, str]:
    assert not d.ok and d.finding is not None, d
    assert d.steps[-1].name == step and not d.steps[-1].ok, d.steps
    return d.finding.cause, d.finding.fix


async def cli(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kubescrape", "doctor", *args, "--timeout", "3",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT,
        env={**os.environ, "COLUMNS": "200"},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode() + err.decode()


async def test_nothing_listening() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, out = await cli(f"https://127.0.0.1:{port}/metrics")
    assert code == 1
    assert "✗ connect" in out and "connection refused" in out and "hostNetwork: true" in out


async def test_http_sent_to_the_https_port(emulator: Emulator) -> None:
    node = emulator.nodes[0]
    d = await diagnose_url(f"http://{node.address}:{node.port}/metrics", timeout=3)
    cause, fix = failed(d, "http")
    assert "Client sent an HTTP request to an HTTPS server." in cause
    assert f"use https://{node.address}:{node.port}/metrics with use_tls = true" in fix


async def test_unknown_authority_like_curl_without_cacert(emulator: Emulator) -> None:
    d = await diagnose(spec(emulator, ca_file=None), timeout=3)
    cause, fix = failed(d, "tls")
    assert "issued by CN=kubernetes-ca" in cause
    assert 'tls_ca = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"' in fix
    assert "insecure_skip_verify = true" in fix
    # Passing the CA, as the fix says, gets past TLS.
    assert (await diagnose(spec(emulator), timeout=3)).ok


async def test_name_mismatch_and_following_the_fix(emulator: Emulator) -> None:
    d = await diagnose(spec(emulator, server_name="kubelet.example.com"), timeout=3)
    cause, fix = failed(d, "tls")
    assert "DNS:node-1" in cause and "IP:127.0.0.1" in cause
    assert 'tls_server_name = "node-1"' in fix
    assert (await diagnose(spec(emulator, server_name="node-1"), timeout=3)).ok


def expired_node_state(state: Path) -> dt.datetime:
    """An emulator state directory whose node-1 serving certificate expired 35 days ago; returns when."""
    ca = CertificateAuthority.create()
    ca.save(state / "ca.crt", state / "pki" / "ca.key")
    now = dt.datetime.now(dt.UTC)
    expired = now - dt.timedelta(days=35)
    ca.issue_server("node-1", ips=["127.0.0.1"], dns_names=["node-1", "localhost"],
                    not_before=now - dt.timedelta(days=400), not_after=expired).write(
        state / "pki" / "nodes" / "node-1.crt", state / "pki" / "nodes" / "node-1.key")
    return expired


async def test_expired_serving_certificate(tmp_path: Path) -> None:
    state = tmp_path / "state"
    expired = expired_node_state(state)
    async with start_emulator(state) as emu:
        code, out = await cli(emu.nodes[0].url + "/metrics", "--ca", str(emu.ca_path), "--json")
    assert code == 1
    (item,) = json.loads(out)
    assert item["steps"][-1]["name"] == "tls"
    expected_day = expired.strftime("%Y-%m-%d")
    assert f"expired on {expected_day}" in item["diagnosis"]["cause"]
    assert "renew" in item["diagnosis"]["fix"]


async def test_token_file_missing_empty_and_expired(emulator: Emulator, tmp_path: Path) -> None:
    d = await diagnose(spec(emulator, token_file=str(tmp_path / "nope")), timeout=3)
    cause, fix = failed(d, "token")
    assert "does not exist" in cause and "serviceAccountName" in fix

    empty = tmp_path / "empty"
    empty.write_text("")
    cause, _ = failed(await diagnose(spec(emulator, token_file=str(empty)), timeout=3), "token")
    assert "is empty" in cause

    # A token the emulator itself signed an hour ago for a minute: expired, noticed before sending it.
    key = emulator.state_dir / "pki" / "sa.key"
    past = TokenIssuer.load_or_create(key, clock=FakeClock(time.time() - 3600))
    expired = tmp_path / "expired"
    expired.write_text(past.issue("flashcat", "categraf-daemonset", 60))
    # Doctor notices the expiry before sending, and fails where the agent does: on the kubelet's 401.
    d = await diagnose(spec(emulator, token_file=str(expired)), timeout=3)
    cause, fix = failed(d, "http")
    assert "401" in cause and "EXPIRED" in fix and "kubectl create token" in fix
    (token_step,) = [s for s in d.steps if s.name == "token"]
    assert token_step.warning is not None
    assert "ServiceAccount flashcat/categraf-daemonset" in token_step.warning


async def test_401_for_a_token_the_kubelet_does_not_accept(emulator: Emulator, tmp_path: Path) -> None:
    seed_style = tmp_path / "token"
    seed_style.write_text("123456\n")  # curl -H "Authorization: Bearer 123456" in the seed
    cause, fix = failed(await diagnose(spec(emulator, token_file=str(seed_style)), timeout=3), "http")
    assert "401 Unauthorized" in cause and f"bearer_token_file ({seed_style}) was rejected" in cause
    assert "THIS cluster" in fix and "authentication.webhook.enabled" in fix

    # A well-formed token from another cluster (another signing key).
    foreign = tmp_path / "foreign"
    foreign.write_text(TokenIssuer.generate().issue("flashcat", "categraf-daemonset", 3600))
    d = await diagnose(spec(emulator, token_file=str(foreign)), timeout=3)
    cause, _ = failed(d, "http")
    assert "401" in cause
    (token_step,) = [s for s in d.steps if s.name == "token"]
    assert "ServiceAccount flashcat/categraf-daemonset" in token_step.detail


@pytest.mark.parametrize("version", ["1.29.0", "1.32.0"])
async def test_403_rbac_yaml_fed_back_to_the_emulator_makes_the_request_succeed(
    tmp_path: Path, version: str
) -> None:
    state = tmp_path / "state"
    async with start_emulator(state, kubelet_version=version) as emu:
        unbound = str(emu.token_path("default", "unbound"))
        code, out = await cli(emu.nodes[0].url + "/metrics", "--ca", str(emu.ca_path),
                              "--token-file", unbound, "--json")
        code_text, text = await cli(emu.nodes[0].url + "/metrics", "--ca", str(emu.ca_path),
                                    "--token-file", unbound)
    assert code == 1 and code_text == 1
    (item,) = json.loads(out)
    assert item["steps"][-1]["name"] == "http"
    assert "system:serviceaccount:default:unbound" in item["diagnosis"]["cause"]
    fix_yaml = item["diagnosis"]["yaml"]
    role, binding = yaml.safe_load_all(fix_yaml)
    assert role["rules"] == [{"apiGroups": [""], "resources": ["nodes/metrics"], "verbs": ["get"]}]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "unbound", "namespace": "default"}]
    # The readable output carries the same YAML.
    assert "✗ http" in text and "Forbidden (user=system:serviceaccount:default:unbound" in text
    assert "kind: ClusterRoleBinding" in text and "- nodes/metrics" in text

    rbac = tmp_path / "fix.yaml"
    rbac.write_text(fix_yaml)
    async with start_emulator(state, kubelet_version=version, rbac_files=[rbac]) as emu:
        d = await diagnose(spec(emu, token_file=str(emu.token_path("default", "unbound"))), timeout=3)
    assert d.ok, d.finding
    assert d.stats is not None and d.stats.series == SERIES


async def test_html_body(emulator: Emulator) -> None:
    cause, fix = failed(await diagnose(spec(emulator, "/metrics/cadvisor"), timeout=3), "body")
    assert "HTML page" in cause and "/metrics" in fix


async def test_parse_error_with_its_line_number(emulator: Emulator) -> None:
    d = await diagnose(spec(emulator, "/metrics/probes"), timeout=3)
    cause, _ = failed(d, "body")
    assert "line 4" in cause and 'b{job="x" 2' in cause


async def test_working_target_text_and_json(emulator: Emulator) -> None:
    url = emulator.nodes[0].url + "/metrics"
    token = str(emulator.token_path("flashcat", "categraf-daemonset"))
    code, out = await cli(url, "--ca", str(emulator.ca_path), "--token-file", token, "--json")
    assert code == 0, out
    (item,) = json.loads(out)
    assert item["ok"] is True and item["diagnosis"] is None
    assert item["stats"]["series"] == SERIES and item["stats"]["bytes"] == len(GOOD)
    assert [s["name"] for s in item["steps"]] == ["url", "resolve", "connect", "tls", "token", "http", "body",
                                                   "timing"]
    code, out = await cli(url, "--ca", str(emulator.ca_path), "--token-file", token)
    assert code == 0
    assert "✓ tls" in out and f"{SERIES} series" in out and "1 of 1 target(s) OK" in out


async def test_client_certificate_user_403_and_rbac_round_trip(tmp_path: Path) -> None:
    """The seed's kube-controller-manager certificate: authenticated by x509, forbidden, then granted."""
    state = tmp_path / "state"
    async with start_emulator(state) as emu:
        ca = CertificateAuthority.load(emu.ca_path, state / "pki" / "ca.key")
        cert, key = tmp_path / "kcm.crt", tmp_path / "kcm.key"
        ca.issue_client("system:kube-controller-manager").write(cert, key)
        client = {"token_file": None, "cert_file": str(cert), "key_file": str(key)}
        d = await diagnose(spec(emu, **client), timeout=3)
        admin_cert, admin_key = emu.admin_cert_paths()
        admin = await diagnose(
            spec(emu, token_file=None, cert_file=str(admin_cert), key_file=str(admin_key)), timeout=3
        )
    assert admin.ok, admin.finding
    cause, _ = failed(d, "http")
    assert "system:kube-controller-manager" in cause
    assert d.finding is not None and d.finding.yaml is not None
    _, binding = yaml.safe_load_all(d.finding.yaml)
    assert binding["subjects"] == [
        {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "system:kube-controller-manager"}
    ]
    rbac = tmp_path / "fix.yaml"
    rbac.write_text(d.finding.yaml)
    async with start_emulator(state, rbac_files=[rbac]) as emu:
        assert (await diagnose(spec(emu, **client), timeout=3)).ok
