"""Kubernetes manifests for running the agent as a DaemonSet, scraping the kubelet of its own node.

The objects are built as plain dicts and dumped with PyYAML; only the Categraf TOML inside the ConfigMaps
is text. The RBAC is exactly what the agent needs: ``get`` on ``nodes/metrics``, ``nodes/stats`` and
``nodes/proxy`` — the subresources the kubelet maps ``/metrics*``, ``/stats/*`` and ``/pods`` to — and
nothing broader (no ``nodes`` list/watch, no ``pods``, no ``nodes/log``).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import yaml

from kubescrape.auth import IN_CLUSTER_CA_FILE, IN_CLUSTER_TOKEN_FILE, SERVICEACCOUNT_DIR

__all__ = [
    "AGENT_SUBRESOURCES",
    "SA_CA_FILE",
    "SA_TOKEN_FILE",
    "build_manifests",
    "config_toml",
    "dump_yaml",
    "prometheus_toml",
    "run_command",
]

Manifest = dict[str, Any]

NAME = "kubescrape"
SA_DIR = str(SERVICEACCOUNT_DIR)
SA_TOKEN_FILE = str(IN_CLUSTER_TOKEN_FILE)
SA_CA_FILE = str(IN_CLUSTER_CA_FILE)
#: The kubelet authorizes every path the agent scrapes as ``get`` on one of these ``nodes`` subresources.
AGENT_SUBRESOURCES = ("metrics", "stats", "proxy")

CONFIG_DIR = "/etc/categraf/conf"
SPOOL_DIR = "/var/lib/kubescrape/spool"
SELF_METRICS_PORT = 9101
SHUTDOWN_TIMEOUT = 10
# Time beyond the flush timeout for the last spool fsync and process exit before the kubelet's SIGKILL.
GRACE_MARGIN = 20
RUN_AS = 10001  # the non-root user created in the Dockerfile

_LABELS = {"app.kubernetes.io/name": NAME, "app.kubernetes.io/component": "node-agent"}


def config_toml(writer_url: str) -> str:
    """Categraf ``config.toml``: global settings and one remote-write writer."""
    return (
        "[global]\n"
        "# Set from the downward API (spec.nodeName) in the DaemonSet.\n"
        'hostname = "$HOSTNAME"\n'
        "interval = 15\n"
        'providers = ["local"]\n'
        "\n"
        "[writer_opt]\n"
        "batch = 2000\n"
        "chan_size = 10000\n"
        "\n"
        "[[writers]]\n"
        f"url = {_toml_string(writer_url)}\n"
        "timeout = 5000\n"
        "dial_timeout = 2500\n"
    )


def prometheus_toml() -> str:
    """Categraf ``input.prometheus/prometheus.toml``: kube-proxy, kubelet and cAdvisor on this node."""
    kubelet = []
    for path, job in (("/metrics", "kubelet"), ("/metrics/cadvisor", "cadvisor")):
        kubelet.append(
            "[[instances]]\n"
            f'urls = ["https://$HOSTIP:10250{path}"]\n'
            f'bearer_token_file = "{SA_TOKEN_FILE}"\n'
            "use_tls = true\n"
            f'tls_ca = "{SA_CA_FILE}"\n'
            "enable_compression = false\n"
            f'labels = {{ job = "{job}" }}\n'
        )
    return (
        "# kube-proxy serves plain HTTP without authentication on the node's loopback; with hostNetwork\n"
        "# the pod's 127.0.0.1 is the node's. Every target here is on this node: enable_compression = false\n"
        "# asks for an uncompressed body: gzip would only cost CPU on both sides, with no network to save.\n"
        "[[instances]]\n"
        'urls = ["http://127.0.0.1:10249/metrics"]\n'
        "enable_compression = false\n"
        'labels = { job = "kube-proxy" }\n'
        "\n"
        "# The kubelet (HTTPS :10250) authenticates the ServiceAccount token and authorizes it with RBAC\n"
        "# (get nodes/metrics). $HOSTIP is the node IP from the downward API.\n"
        "#\n"
        "# The server certificate is verified against the cluster CA (tls_ca). That only works when the\n"
        "# kubelet's serving certificate is signed by the cluster CA, i.e. with `serverTLSBootstrap: true`\n"
        "# in the KubeletConfiguration and its kubelet-serving CSRs approved (`kubectl get csr`,\n"
        "# `kubectl certificate approve <name>`). By default the kubelet serves a SELF-SIGNED certificate\n"
        "# (/var/lib/kubelet/pki/kubelet.crt) and the scrape fails with an unknown-authority error. Then\n"
        "# either enable serverTLSBootstrap (preferred), or mount the kubelet's CA bundle and point tls_ca\n"
        "# at it, or - knowingly giving up server authentication - set insecure_skip_verify = true.\n"
        "# `kubescrape doctor --config-dir /etc/categraf/conf` tells which case you are in.\n"
        + "\n".join(kubelet)
    )


def _toml_string(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _meta(name: str, namespace: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    meta["labels"] = dict(_LABELS)
    return meta


def _daemonset(namespace: str, image: str) -> Manifest:
    restricted = {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    env = [
        {"name": "HOSTNAME", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "spec.nodeName"}}},
        {"name": "HOSTIP", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "status.hostIP"}}},
    ]
    probe_get = {"path": "/healthz", "port": "self-metrics"}
    # /healthz is 503 while a backend is down; restarting the pod cannot fix that, so liveness asks /livez.
    live_get = {"path": "/livez", "port": "self-metrics"}
    agent = {
        "name": "agent",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        # The image's ENTRYPOINT is `kubescrape run --config-dir /etc/categraf/conf`.
        "args": [
            # Probes reach the pod IP, which with hostNetwork is the node IP: listen beyond loopback.
            "--listen", f"0.0.0.0:{SELF_METRICS_PORT}",
            "--spool-dir", SPOOL_DIR,
            "--shutdown-timeout", str(SHUTDOWN_TIMEOUT),
        ],
        "env": env,
        "ports": [{"name": "self-metrics", "containerPort": SELF_METRICS_PORT, "protocol": "TCP"}],
        # From bench/results/2026-11-25.md: steady RSS 81 MiB at 100 pods and 151 MiB at 250 pods; about
        # 6-7 µs of CPU per sample, i.e. ~10m of CPU for a 100-pod node at a 15 s interval, and a cold
        # first scrape (every series new) of ~0.5 s of CPU that the limit must let through.
        "resources": {
            "requests": {"cpu": "50m", "memory": "128Mi"},
            "limits": {"cpu": "500m", "memory": "384Mi"},
        },
        "livenessProbe": {
            "httpGet": live_get, "initialDelaySeconds": 10, "periodSeconds": 20, "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
        "readinessProbe": {
            "httpGet": probe_get, "initialDelaySeconds": 3, "periodSeconds": 10, "timeoutSeconds": 5,
        },
        "securityContext": {**restricted, "runAsNonRoot": True, "runAsUser": RUN_AS, "runAsGroup": RUN_AS},
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "input-prometheus", "mountPath": f"{CONFIG_DIR}/input.prometheus", "readOnly": True},
            {"name": "spool", "mountPath": SPOOL_DIR},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    # hostPath directories are created root-owned; hand the spool to the agent's user, with CHOWN only.
    spool_owner = {
        "name": "spool-owner",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["chown", f"{RUN_AS}:{RUN_AS}", SPOOL_DIR],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsUser": 0,
            "runAsNonRoot": False,
            "capabilities": {"drop": ["ALL"], "add": ["CHOWN"]},
        },
        "resources": {
            "requests": {"cpu": "10m", "memory": "16Mi"},
            "limits": {"cpu": "100m", "memory": "32Mi"},
        },
        "volumeMounts": [{"name": "spool", "mountPath": SPOOL_DIR}],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": _meta(NAME, namespace),
        "spec": {
            "selector": {"matchLabels": {"app.kubernetes.io/name": NAME}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            "template": {
                "metadata": {"labels": dict(_LABELS)},
                "spec": {
                    "serviceAccountName": NAME,
                    "hostNetwork": True,
                    # hostNetwork pods get the node's resolv.conf unless asked for cluster DNS.
                    "dnsPolicy": "ClusterFirstWithHostNet",
                    # One toleration with operator Exists and no key tolerates every taint: control-plane
                    # NoSchedule, NotReady/unreachable NoExecute, dedicated pools.
                    "tolerations": [{"operator": "Exists"}],
                    "terminationGracePeriodSeconds": math.ceil(SHUTDOWN_TIMEOUT) + GRACE_MARGIN,
                    "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
                    "initContainers": [spool_owner],
                    "containers": [agent],
                    "volumes": [
                        {"name": "config", "configMap": {"name": f"{NAME}-config"}},
                        {"name": "input-prometheus", "configMap": {"name": f"{NAME}-input-prometheus"}},
                        # On the node, so a restarted or upgraded pod resends what the old one spooled.
                        {"name": "spool", "hostPath": {"path": SPOOL_DIR, "type": "DirectoryOrCreate"}},
                        {"name": "tmp", "emptyDir": {"sizeLimit": "16Mi"}},
                    ],
                },
            },
        },
    }


def build_manifests(namespace: str, writer_url: str, image: str) -> list[tuple[str, Manifest]]:
    """All objects, in apply order, each with a short comment saying why it is shaped the way it is."""
    role: Manifest = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": _meta(NAME),
        "rules": [{
            "apiGroups": [""],
            "resources": [f"nodes/{s}" for s in AGENT_SUBRESOURCES],
            "verbs": ["get"],
        }],
    }
    binding: Manifest = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": _meta(NAME),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": NAME},
        "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": namespace}],
    }
    return [
        ("The namespace the agent runs in.",
         {"apiVersion": "v1", "kind": "Namespace", "metadata": _meta(namespace)}),
        ("The agent's identity; its token is mounted at " + SA_TOKEN_FILE + ".",
         {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(NAME, namespace)}),
        ("Read-only kubelet access: /metrics* → nodes/metrics, /stats/* → nodes/stats,\n"
         "/pods → nodes/proxy (nodes/pods on kubelets with fine-grained authorization).\n"
         "nodes/proxy is the broad one: the kubelet maps every path without a subresource of its own\n"
         "to it, so bind this role to this ServiceAccount only.",
         role),
        ("Grants the ClusterRole to the ServiceAccount on every node.", binding),
        ("Categraf config.toml: where to remote-write.",
         {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(f"{NAME}-config", namespace),
          "data": {"config.toml": config_toml(writer_url)}}),
        ("Categraf input.prometheus/prometheus.toml: kube-proxy, kubelet and cAdvisor of this node.",
         {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(f"{NAME}-input-prometheus", namespace),
          "data": {"prometheus.toml": prometheus_toml()}}),
        ("One agent per node, every node including the control plane. Requests/limits are sized from\n"
         "bench/results (up to ~250 pods per node); re-run bench/ and adjust for nodes with many more pods.\n"
         f"terminationGracePeriodSeconds = shutdown timeout ({SHUTDOWN_TIMEOUT}s) + {GRACE_MARGIN}s margin.",
         _daemonset(namespace, image)),
    ]


class _Dumper(yaml.SafeDumper):
    """Block style for multi-line strings, so the TOML in ConfigMaps stays readable."""


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str_representer)


def dump_yaml(obj: Manifest, comment: str = "") -> str:
    """One YAML document, preceded by ``comment`` as ``#`` lines."""
    head = "".join(f"# {line}\n" for line in comment.splitlines())
    return head + yaml.dump(obj, Dumper=_Dumper, sort_keys=False, default_flow_style=False)


def _file_name(index: int, obj: Manifest) -> str:
    return f"{index:02d}-{obj['kind'].lower()}-{obj['metadata']['name']}.yaml"


def run_command(namespace: str, writer_url: str, image: str, output_dir: Path | None) -> int:
    """``kubescrape manifests``: print the manifests as one multi-document YAML, or write one file each."""
    manifests = build_manifests(namespace, writer_url, image)
    if output_dir is None:
        sys.stdout.write("---\n".join(dump_yaml(obj, comment) for comment, obj in manifests))
        return 0
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        for i, (comment, obj) in enumerate(manifests):
            (output_dir / _file_name(i, obj)).write_text(dump_yaml(obj, comment))
    except OSError as e:
        sys.stderr.write(f"cannot write manifests to {output_dir}: {e}; fix: choose a writable directory\n")
        return 2
    sys.stderr.write(f"wrote {len(manifests)} manifests to {output_dir}; apply with: "
                     f"kubectl apply -f {output_dir}\n")
    return 0
