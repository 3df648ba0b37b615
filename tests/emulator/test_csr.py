"""Serving-certificate requests: names, kubectl's CONDITION column, the fleet's option checks, the refusing
listener and the stand-in's discovery of ``certificates.k8s.io``."""

from __future__ import annotations

import asyncio
import base64
import ssl
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509

from kubescrape.emulator.csr import (
    KUBELET_SERVING_SIGNER,
    approved,
    condition_text,
    csr_name,
    issued,
    serving_csr,
)
from kubescrape.emulator.fleet import Emulator
from kubescrape.emulator.pki import CertificateAuthority, certificate_request_pem
from kubescrape.errors import EmulatorError


def test_csr_names_look_generated_and_are_stable_per_node() -> None:
    names = {csr_name(f"node-{k}") for k in range(1, 50)}
    assert len(names) == 49
    for name in names:
        assert name.startswith("csr-") and len(name) == 9
        assert set(name[4:]) <= set("bcdfghjklmnpqrstvwxz2456789")
    assert csr_name("node-1") == csr_name("node-1")


def test_a_serving_csr_carries_a_request_for_the_node_and_moves_from_pending_to_issued() -> None:
    ca = CertificateAuthority.create()
    pair = ca.issue_server("node-1", ips=["127.0.1.1"], dns_names=["node-1"])
    obj = serving_csr("node-1", certificate_request_pem(pair, "system:node:node-1", ["system:nodes"],
                                                        ["127.0.1.1"], ["node-1"]), created=0.0)
    request = x509.load_pem_x509_csr(base64.b64decode(obj["spec"]["request"]))
    assert request.is_signature_valid
    assert request.subject.rfc4514_string() == "CN=system:node:node-1,O=system:nodes"
    assert obj["spec"]["signerName"] == KUBELET_SERVING_SIGNER == "kubernetes.io/kubelet-serving"
    assert obj["spec"]["username"] == "system:node:node-1"
    assert condition_text(obj) == "Pending" and not approved(obj)
    approval = {"type": "Approved", "status": "True", "lastTransitionTime": None}
    ok = {**obj, "status": {"conditions": [approval]}}
    assert approved(ok) and condition_text(ok) == "Approved"
    done = issued(ok, pair.cert_pem, now=0.0)
    assert condition_text(done) == "Approved,Issued"
    assert done["status"]["conditions"][0]["lastTransitionTime"] == "1970-01-01T00:00:00Z"
    denied = {**obj, "status": {"conditions": [{"type": "Denied", "status": "True"}]}}
    assert not approved(denied) and condition_text(denied) == "Denied"


def test_the_option_names_real_nodes_and_needs_the_apiserver(tmp_path: Path) -> None:
    with pytest.raises(EmulatorError) as e:
        Emulator(tmp_path, nodes=2, port=0, apiserver_port=0, pending_serving_csr=["node-9"])
    assert "node-9" in e.value.cause and "node-1" in (e.value.fix or "")
    with pytest.raises(EmulatorError) as e:
        Emulator(tmp_path, nodes=2, port=0, pending_serving_csr=["node-1"])
    assert "--apiserver-port" in (e.value.fix or "")
    emu = Emulator(tmp_path, nodes=3, port=0, apiserver_port=0, pending_serving_csr=["all"])
    assert emu.pending_serving_csr == {"node-1", "node-2", "node-3"}


async def test_the_pending_node_sends_the_alert_and_the_apiserver_serves_csrs(tmp_path: Path) -> None:
    emu = Emulator(tmp_path / "state", nodes=1, pods=1, port=0, healthz_port=None, proxy_port=None,
                   apiserver_port=0, pending_serving_csr=["node-1"])
    async with emu:
        node = emu.nodes[0]
        ctx = ssl.create_default_context(cafile=str(emu.ca_path))
        with pytest.raises(ssl.SSLError) as caught:
            await asyncio.wait_for(asyncio.open_connection(node.address, node.port, ssl=ctx), 10)
        assert caught.value.reason == "TLSV1_ALERT_INTERNAL_ERROR"
        assert emu.apiserver is not None
        admin = ssl.create_default_context(cafile=str(emu.ca_path))
        admin.load_cert_chain(*emu.admin_cert_paths())
        base = emu.apiserver.url
        async with aiohttp.ClientSession() as s:
            async with s.get(base + "/apis", ssl=admin) as r:
                listed = (await r.json())["groups"]
            groups = {g["name"]: g["preferredVersion"]["groupVersion"] for g in listed}
            assert groups["certificates.k8s.io"] == "certificates.k8s.io/v1"
            async with s.get(base + "/apis/certificates.k8s.io/v1", ssl=admin) as r:
                resources = {x["name"]: x["verbs"] for x in (await r.json())["resources"]}
            assert "list" in resources["certificatesigningrequests"]
            assert "update" in resources["certificatesigningrequests/approval"]
            url = base + "/apis/certificates.k8s.io/v1/certificatesigningrequests"
            async with s.put(url + "/csr-nope/approval", json={}, ssl=admin) as r:
                assert r.status == 404
            async with s.put(f"{url}/{csr_name('node-1')}/approval", data=b"[1]", ssl=admin) as r:
                assert r.status == 400
            async with s.get(url + "?fieldSelector=spec.signerName%3Dexample.com%2Fother", ssl=admin) as r:
                assert (await r.json())["items"] == []
            # A denial is recorded but issues nothing: the node keeps refusing.
            async with s.get(f"{url}/{csr_name('node-1')}", ssl=admin) as r:
                csr = await r.json()
            csr["status"] = {"conditions": [{"type": "Denied", "status": "True", "reason": "Test"}]}
            async with s.put(f"{url}/{csr_name('node-1')}/approval", json=csr, ssl=admin) as r:
                denied = await r.json()
            assert r.status == 200 and condition_text(denied) == "Denied"
            assert "certificate" not in denied["status"]
        with pytest.raises(ssl.SSLError):
            await asyncio.wait_for(asyncio.open_connection(node.address, node.port, ssl=ctx), 10)
