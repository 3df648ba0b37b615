"""The seed's serving-certificate flow end to end: a kubelet with ``serverTLSBootstrap: true`` and its
``kubernetes.io/kubelet-serving`` CSR Pending refuses every handshake with the alert internal_error (curl,
aiohttp, the agent, doctor) until the real ``kubectl certificate approve`` — then it serves."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from kubescrape.client import translate_error
from kubescrape.doctor import Diagnosis, diagnose, target_from_url
from kubescrape.emulator.csr import csr_name
from kubescrape.emulator.fleet import Emulator
from tests.e2e.test_apiserver_clients import RBAC, kubectl, needs_kubectl

CURL = shutil.which("curl")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[Emulator]:
    emu = Emulator(tmp_path / "state", nodes=2, pods=3, port=0, healthz_port=None, proxy_port=None,
                   rbac_files=[RBAC], apiserver_port=0, pending_serving_csr=["node-1"])
    async with emu:
        yield emu


def _ssl(emu: Emulator) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(emu.ca_path))


async def _healthz(emu: Emulator, node: int) -> tuple[int, str]:
    token = emu.token_path("flashcat", "categraf-daemonset").read_text().strip()
    async with aiohttp.ClientSession() as s, s.get(
            emu.nodes[node].url + "/healthz", ssl=_ssl(emu), headers={"Authorization": f"Bearer {token}"},
            timeout=aiohttp.ClientTimeout(total=10)) as r:
        return r.status, await r.text()


async def _diagnose(emu: Emulator) -> Diagnosis:
    target = target_from_url(emu.nodes[0].url + "/metrics", scrape_timeout=3, ca_file=str(emu.ca_path),
                             token_file=str(emu.token_path("flashcat", "categraf-daemonset")))
    return await diagnose(target, timeout=3)


@pytest.mark.skipif(CURL is None, reason="curl is not installed")
async def test_curl_and_aiohttp_see_the_alert_internal_error_while_pending(fleet: Emulator) -> None:
    assert CURL is not None
    proc = await asyncio.create_subprocess_exec(
        CURL, "-v", "--max-time", "10", "--cacert", str(fleet.ca_path), fleet.nodes[0].url + "/healthz",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 35  # CURLE_SSL_CONNECT_ERROR
    assert "tlsv1 alert internal error" in err.decode()

    with pytest.raises(aiohttp.ClientSSLError) as caught:
        await _healthz(fleet, 0)
    assert "TLSV1_ALERT_INTERNAL_ERROR" in str(caught.value)
    # The agent's translation names the Pending CSR and the two commands.
    error = translate_error(caught.value, fleet.nodes[0].url + "/metrics")
    assert error.reason == "tls_no_serving_cert"
    assert "kubernetes.io/kubelet-serving CSR" in error.cause and "internal_error" in error.cause
    fix = error.fix or ""
    assert "`kubectl get csr`" in fix and "`kubectl certificate approve <name>`" in fix
    # The other node has its certificate and serves.
    assert await _healthz(fleet, 1) == (200, "ok")


@needs_kubectl
async def test_kubectl_get_csr_and_certificate_approve_make_the_kubelet_serve(fleet: Emulator) -> None:
    name = csr_name("node-1")
    rc, out, err = await kubectl(fleet.kubeconfig_path, "get", "csr")
    assert rc == 0, err
    header, *rows = out.splitlines()
    assert header.split() == ["NAME", "AGE", "SIGNERNAME", "REQUESTOR", "REQUESTEDDURATION", "CONDITION"]
    assert len(rows) == 1
    cells = rows[0].split()
    assert (cells[0], cells[2], cells[3], cells[4], cells[5]) == (
        name, "kubernetes.io/kubelet-serving", "system:node:node-1", "<none>", "Pending")
    rc, out, err = await kubectl(fleet.kubeconfig_path, "get", "csr", "-o", "name",
                                 "--field-selector", "spec.signerName=kubernetes.io/kubelet-serving")
    assert rc == 0 and out.split() == [f"certificatesigningrequest.certificates.k8s.io/{name}"], err

    rc, out, err = await kubectl(fleet.kubeconfig_path, "certificate", "approve", name)
    assert rc == 0, err
    assert out.strip() == f"certificatesigningrequest.certificates.k8s.io/{name} approved"

    assert await _healthz(fleet, 0) == (200, "ok")
    rc, out, err = await kubectl(fleet.kubeconfig_path, "get", "csr", name, "-o", "json")
    assert rc == 0, err
    csr = json.loads(out)
    assert [(c["type"], c["reason"]) for c in csr["status"]["conditions"]] == [("Approved", "KubectlApprove")]
    issued = x509.load_pem_x509_certificate(base64.b64decode(csr["status"]["certificate"]))
    # The certificate issued is the one the kubelet now presents.
    node = fleet.nodes[0]
    _, writer = await asyncio.open_connection(node.address, node.port, ssl=_ssl(fleet),
                                              server_hostname=node.address)
    peer = writer.get_extra_info("ssl_object").getpeercert(True)
    writer.close()
    assert peer == issued.public_bytes(serialization.Encoding.DER)
    rc, out, _ = await kubectl(fleet.kubeconfig_path, "get", "csr", "--no-headers")
    assert rc == 0 and out.split()[-1] == "Approved,Issued"


@needs_kubectl
async def test_approval_needs_rbac(fleet: Emulator) -> None:
    discovery = fleet.service_account_kubeconfig("monitoring", "kubescrape")
    rc, _, err = await kubectl(discovery, "certificate", "approve", csr_name("node-1"))
    assert rc != 0
    assert "forbidden" in err
    with pytest.raises(aiohttp.ClientSSLError):
        await _healthz(fleet, 0)


async def test_doctor_names_the_pending_serving_csr_and_the_two_commands(fleet: Emulator) -> None:
    d = await _diagnose(fleet)
    assert not d.ok and d.finding is not None
    assert d.steps[-1].name == "tls" and not d.steps[-1].ok
    assert "internal_error" in d.steps[-1].detail
    cause, fix = d.finding.cause, d.finding.fix
    assert "serverTLSBootstrap: true" in cause and "kubernetes.io/kubelet-serving" in cause
    assert "Pending" in cause
    assert "`kubectl get csr`" in fix and "`kubectl certificate approve <name>`" in fix
    assert "tls_cert" not in fix and "TLS version" not in fix
    # Approving through the apiserver, as the fix says, gets the node past TLS.
    assert fleet.apiserver is not None
    admin = ssl.create_default_context(cafile=str(fleet.ca_path))
    crt, key = fleet.admin_cert_paths()
    admin.load_cert_chain(crt, key)
    url = (f"{fleet.apiserver.url}/apis/certificates.k8s.io/v1/certificatesigningrequests/"
           f"{csr_name('node-1')}")
    async with aiohttp.ClientSession() as s:
        async with s.get(url, ssl=admin) as r:
            csr = await r.json()
        csr["status"] = {"conditions": [{"type": "Approved", "status": "True", "reason": "Test"}]}
        async with s.put(url + "/approval", json=csr, ssl=admin) as r:
            assert r.status == 200
            assert (await r.json())["status"]["certificate"]
    assert (await _diagnose(fleet)).ok


async def test_emulate_command_takes_the_option_and_explains_what_it_needs(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kubescrape", "emulate", "--state-dir", str(tmp_path), "--port", "0",
        "--pending-serving-csr", "node-1", "--print-config", cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    assert "--pending-serving-csr needs the stand-in apiserver" in err.decode()
    assert "add --apiserver-port" in err.decode()
