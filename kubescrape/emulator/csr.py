"""Kubelet serving-certificate requests (``certificates.k8s.io/v1`` CertificateSigningRequests).

A kubelet with ``serverTLSBootstrap: true`` asks the apiserver for its serving certificate with a CSR of
signer ``kubernetes.io/kubelet-serving`` as ``system:node:<node>``; kube-controller-manager never approves
those by itself, so until someone runs ``kubectl certificate approve <name>`` the kubelet has no
serving certificate and refuses every handshake on 10250 with the alert ``internal_error``. The
emulator keeps one such CSR per node started with ``pending_serving_csr`` and, on approval, signs it
with the fleet's CA (``status.certificate``) and lets the node serve.
"""

from __future__ import annotations

import base64
import hashlib
import time

from kubescrape.emulator.apistore import Json

__all__ = ["KUBELET_SERVING_SIGNER", "approved", "condition_text", "csr_name", "issued", "serving_csr"]

KUBELET_SERVING_SIGNER = "kubernetes.io/kubelet-serving"
# apimachinery's utilrand alphabet, which generateName ("csr-") draws from.
_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_USAGES = ["digital signature", "key encipherment", "server auth"]


def csr_name(node: str) -> str:
    """``csr-xxxxx`` as generateName makes it; stable per node so restarts show the same name."""
    digest = hashlib.sha256(f"kubelet-serving/{node}".encode()).digest()
    return "csr-" + "".join(_ALPHABET[b % len(_ALPHABET)] for b in digest[:5])


def _timestamp(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


def serving_csr(node: str, request_pem: bytes, *, created: float) -> Json:
    """The Pending CSR the node's kubelet created (no conditions yet)."""
    name = csr_name(node)
    uid = hashlib.sha256(f"csr/{name}".encode()).hexdigest()
    return {
        "metadata": {"name": name, "uid": f"{uid[:8]}-{uid[8:12]}-{uid[12:16]}-{uid[16:20]}-{uid[20:32]}",
                     "creationTimestamp": _timestamp(created), "generateName": "csr-"},
        "spec": {"request": base64.b64encode(request_pem).decode(), "signerName": KUBELET_SERVING_SIGNER,
                 "usages": list(_USAGES), "username": f"system:node:{node}",
                 "groups": ["system:nodes", "system:authenticated"]},
        "status": {},
    }


def approved(obj: Json) -> bool:
    """True once an ``Approved`` condition is set (and no ``Denied`` one)."""
    types = {c.get("type") for c in (obj.get("status") or {}).get("conditions") or ()}
    return "Approved" in types and "Denied" not in types


def issued(obj: Json, cert_pem: bytes, *, now: float) -> Json:
    """``obj`` with ``status.certificate`` set, as the kubelet-serving signer leaves it."""
    status = dict(obj.get("status") or {})
    status["certificate"] = base64.b64encode(cert_pem).decode()
    conditions = [dict(c) for c in status.get("conditions") or ()]
    for c in conditions:
        if not c.get("lastTransitionTime"):
            c["lastTransitionTime"] = _timestamp(now)
    status["conditions"] = conditions
    return {**obj, "status": status}


def condition_text(obj: Json) -> str:
    """kubectl's CONDITION column: ``Pending``, ``Approved``, ``Approved,Issued``, ``Denied`` …"""
    status = obj.get("status") or {}
    types = [str(c.get("type")) for c in status.get("conditions") or () if c.get("type")]
    if status.get("certificate"):
        types.append("Issued")
    return ",".join(types) or "Pending"
