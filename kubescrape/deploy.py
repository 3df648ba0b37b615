"""Kubernetes manifests for the agent, in one of two deployments (``kubescrape manifests --mode``):

* ``daemonset`` (default): one agent per node scraping the kubelet, cAdvisor and kube-proxy of its own
  node, plus the annotated pods of that node found through the kubelet's ``/pods`` (``kubelet_sd_configs``,
  a Prometheus file loaded by Categraf's ``[prometheus] scrape_config_file`` bridge). The RBAC is exactly
  what that needs: ``get`` on ``nodes/metrics``, ``nodes/stats``, ``nodes/proxy`` and ``nodes/pods`` — the
  subresources the kubelet maps ``/metrics*``, ``/stats/*`` and ``/pods`` to (``/pods`` is ``nodes/proxy``
  before kubelet 1.32, ``nodes/pods`` with fine-grained authorization) — and nothing broader (no list/watch,
  no ``pods``, no ``nodes/log``).
* ``cluster``: a StatefulSet of M shards, each running ``kubescrape run --config prometheus.yml
  --shard-count M`` with ``kubernetes_sd_configs`` (node and pod roles) through the apiserver, and the
  cluster-wide list/watch RBAC that discovery needs.

The objects are built as plain dicts and dumped with PyYAML; only the configuration files inside the
ConfigMaps are text.
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
    "MODES",
    "SA_CA_FILE",
    "SA_TOKEN_FILE",
    "build_manifests",
    "cluster_prometheus_yml",
    "config_toml",
    "dump_yaml",
    "node_pods_yml",
    "prometheus_toml",
    "run_command",
]

Manifest = dict[str, Any]

NAME = "kubescrape"
SA_DIR = str(SERVICEACCOUNT_DIR)
SA_TOKEN_FILE = str(IN_CLUSTER_TOKEN_FILE)
SA_CA_FILE = str(IN_CLUSTER_CA_FILE)
#: The kubelet authorizes every path the agent scrapes as ``get`` on one of these ``nodes`` subresources.
AGENT_SUBRESOURCES = ("metrics", "stats", "proxy", "pods")
MODES = ("daemonset", "cluster")

CONFIG_DIR = "/etc/categraf/conf"
#: The Prometheus file of the DaemonSet's node-local pod discovery, next to config.toml (same ConfigMap).
NODE_PODS_FILE = "node_pods.yml"
CLUSTER_CONFIG_DIR = "/etc/kubescrape"
CLUSTER_CONFIG = f"{CLUSTER_CONFIG_DIR}/prometheus.yml"
#: The apiserver as every pod reaches it; the cluster-mode kubelet jobs go through its nodes/proxy.
APISERVER = "kubernetes.default.svc:443"
SPOOL_DIR = "/var/lib/kubescrape/spool"
SELF_METRICS_PORT = 9101
SHUTDOWN_TIMEOUT = 10
# Time beyond the flush timeout for the last spool fsync and process exit before the kubelet's SIGKILL.
GRACE_MARGIN = 20
RUN_AS = 10001  # the non-root user created in the Dockerfile

_LABELS = {"app.kubernetes.io/name": NAME, "app.kubernetes.io/component": "node-agent"}


def config_toml(writer_url: str, scrape_config_file: str | None = None) -> str:
    """Categraf ``config.toml``: global settings and one remote-write writer; with ``scrape_config_file``,
    Categraf's ``[prometheus]`` bridge that runs that Prometheus file's jobs too."""
    bridge = (
        "\n"
        "# The Prometheus file's scrape_configs run next to input.prometheus (Categraf's bridge).\n"
        "[prometheus]\n"
        "enable = true\n"
        f"scrape_config_file = {_toml_string(scrape_config_file)}\n"
    ) if scrape_config_file else ""
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
        + bridge
    )


#: Comment and options of the cAdvisor instance: its stats samples carry cAdvisor's housekeeping time.
CADVISOR_TIMESTAMPS = (
    "# cAdvisor stamps its stats samples with the time it measured them (housekeeping, every ~10 s).\n"
    "# Honoring those timestamps keeps rate() exact, but a series with its own timestamp gets no\n"
    "# staleness marker: a stopped or OOM-killed container's usage series would stay in queries for the\n"
    "# 5 min lookback next to its replacement (its spec series vanish at once). kube-prometheus turns\n"
    "# honor_timestamps off instead, which stores each value up to ~10 s after it was measured, by a\n"
    "# varying lag (rate() over 1m then differs from the honored one by ~2% per step).\n"
    "# track_timestamps_staleness = true (Prometheus >= 2.48) gives both: honored timestamps and a\n"
    "# staleness marker at the next scrape (bench/results/2026-12-02-cadvisor-timestamps.md).\n"
    "honor_timestamps = true\n"
    "track_timestamps_staleness = true\n"
)


# prometheus.io/scrape|path|port|scheme on a pod, as Prometheus' example configuration reads them.
_POD_ANNOTATION_RULES: list[dict[str, Any]] = [
    {"source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"], "action": "keep",
     "regex": "true"},
    {"source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_scheme"], "target_label": "__scheme__",
     "regex": "(https?)"},
    {"source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_path"],
     "target_label": "__metrics_path__", "regex": "(.+)"},
    {"source_labels": ["__address__", "__meta_kubernetes_pod_annotation_prometheus_io_port"],
     "target_label": "__address__", "regex": r"([^:]+)(?::\d+)?;(\d+)", "replacement": "$1:$2"},
    {"action": "labelmap", "regex": "__meta_kubernetes_pod_label_(.+)"},
    {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
    {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
    {"source_labels": ["__meta_kubernetes_pod_node_name"], "target_label": "node"},
]


def _yaml_file(head: str, doc: dict[str, Any]) -> str:
    return "".join(f"# {line}\n" if line else "#\n" for line in head.splitlines()) + yaml.dump(
        doc, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=110)


def node_pods_yml(interval: str = "15s") -> str:
    """The DaemonSet's node-local discovery: a Prometheus file whose ``pods`` job finds this node's pods in
    the kubelet's ``/pods`` (``kubelet_sd_configs``) and keeps the ones annotated ``prometheus.io/scrape``."""
    doc = {
        "global": {"scrape_interval": interval, "scrape_timeout": "10s"},
        "scrape_configs": [{
            "job_name": "pods",
            "kubelet_sd_configs": [{
                # ${HOSTIP} is the node's IP (downward API status.hostIP); no credentials given means the
                # pod's ServiceAccount token and CA, so the kubelet authorizes get nodes/pods (1.32+) or
                # nodes/proxy (before).
                "url": "https://${HOSTIP}:10250",
                "refresh_interval": "30s",
            }],
            "relabel_configs": _POD_ANNOTATION_RULES,
        }],
    }
    return _yaml_file(
        "Annotated pods of this node, listed from the kubelet's /pods: no cluster-wide watch on every node\n"
        "(the memory cost of a DaemonSet of watchers). Pod IPs are scraped as the annotations say\n"
        "(prometheus.io/scrape: \"true\", prometheus.io/port, prometheus.io/path, prometheus.io/scheme).",
        doc)


def cluster_prometheus_yml(writer_url: str, interval: str = "30s") -> str:
    """The StatefulSet's ``prometheus.yml``: kubelet and cAdvisor of every node through the apiserver's
    ``nodes/proxy`` (kube-prometheus' relabeling), annotated pods, and ``remote_write`` to ``writer_url``."""
    auth = {"scheme": "https", "tls_config": {"ca_file": SA_CA_FILE}, "bearer_token_file": SA_TOKEN_FILE}

    def via_apiserver(job: str, path: str) -> dict[str, Any]:
        return {
            "job_name": job, **auth,
            "kubernetes_sd_configs": [{"role": "node"}],
            "relabel_configs": [
                {"action": "labelmap", "regex": "__meta_kubernetes_node_label_(.+)"},
                {"target_label": "__address__", "replacement": APISERVER},
                {"source_labels": ["__meta_kubernetes_node_name"], "regex": "(.+)",
                 "target_label": "__metrics_path__", "replacement": f"/api/v1/nodes/$1/proxy{path}"},
            ],
        }

    doc = {
        "global": {"scrape_interval": interval, "scrape_timeout": "10s"},
        "scrape_configs": [
            via_apiserver("kubelet", "/metrics"),
            # Honored timestamps with staleness tracking, for the reason given in CADVISOR_TIMESTAMPS.
            {**via_apiserver("cadvisor", "/metrics/cadvisor"), "track_timestamps_staleness": True},
            {"job_name": "pods", "kubernetes_sd_configs": [{"role": "pod"}],
             "relabel_configs": _POD_ANNOTATION_RULES},
        ],
        "remote_write": [{"url": writer_url}],
    }
    return _yaml_file(
        "Every replica discovers every node and pod (kubernetes_sd_configs, in-cluster ServiceAccount) and\n"
        "scrapes the targets that hash to its shard (--shard-count, index from the pod name).\n"
        "The kubelets are reached through the apiserver (/api/v1/nodes/NODE/proxy/...; get nodes/proxy),\n"
        "which verifies against the cluster CA whatever certificate the kubelet serves. To scrape them\n"
        "directly instead (less apiserver traffic; needs nodes/metrics and kubelet serving certificates\n"
        "signed by the cluster CA), drop the __address__ and __metrics_path__ rules and set metrics_path.",
        doc)


def prometheus_toml() -> str:
    """Categraf ``input.prometheus/prometheus.toml``: kube-proxy, kubelet and cAdvisor on this node.

    The cAdvisor instance honors cAdvisor's own timestamps *and* tracks them for staleness
    (``track_timestamps_staleness = true``). Measured with the emulator into a real Prometheus
    (``bench/cadvisor_timestamps.py``): honoring alone leaves a stopped container's usage series in
    instant queries for ~5 min (the lookback; its spec series disappear at the next scrape, so
    ``count by (pod)`` sees stopped pods next to their replacements); ``honor_timestamps = false`` (the
    kube-prometheus and VictoriaMetrics choice) removes them at the next scrape but stores each value at
    scrape time instead of when cAdvisor measured it, by a lag that varies up to the housekeeping interval
    (``rate(...[1m])`` differs from the honored one by ~2% per step on average); both settings together
    remove them at the next scrape and keep the measured times. The same holds for an OOM-killed
    container: it restarts with a new container id, so its old series disappear the same way.
    """
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
            + (CADVISOR_TIMESTAMPS if job == "cadvisor" else "")
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


def _binding(namespace: str) -> Manifest:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": _meta(NAME),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": NAME},
        "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": namespace}],
    }


def _identity(namespace: str) -> list[tuple[str, Manifest]]:
    return [
        ("The namespace the agent runs in.",
         {"apiVersion": "v1", "kind": "Namespace", "metadata": _meta(namespace)}),
        ("The agent's identity; its token is mounted at " + SA_TOKEN_FILE + ".",
         {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(NAME, namespace)}),
    ]


def build_manifests(namespace: str, writer_url: str, image: str, *, mode: str = "daemonset",
                    replicas: int = 2) -> list[tuple[str, Manifest]]:
    """All objects of ``mode`` (``daemonset`` or ``cluster`` with ``replicas`` shards), in apply order, each
    with a short comment saying why it is shaped the way it is."""
    if mode == "cluster":
        return _cluster_manifests(namespace, writer_url, image, replicas)
    if mode != "daemonset":
        raise ValueError(f"mode {mode!r} is not one of {', '.join(MODES)}")
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
    return [
        *_identity(namespace),
        ("Read-only kubelet access: /metrics* → nodes/metrics, /stats/* → nodes/stats,\n"
         "/pods → nodes/proxy before kubelet 1.32, nodes/pods with fine-grained authorization (1.32+).\n"
         "nodes/proxy is the broad one: the kubelet maps every path without a subresource of its own\n"
         "to it, so bind this role to this ServiceAccount only; drop it once every kubelet is 1.32+.",
         role),
        ("Grants the ClusterRole to the ServiceAccount on every node.", _binding(namespace)),
        ("Categraf config.toml: where to remote-write; " + NODE_PODS_FILE + ": this node's annotated pods\n"
         "(kubelet_sd_configs), run through config.toml's [prometheus] scrape_config_file.",
         {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(f"{NAME}-config", namespace),
          "data": {"config.toml": config_toml(writer_url, f"{CONFIG_DIR}/{NODE_PODS_FILE}"),
                   NODE_PODS_FILE: node_pods_yml()}}),
        ("Categraf input.prometheus/prometheus.toml: kube-proxy, kubelet and cAdvisor of this node.",
         {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(f"{NAME}-input-prometheus", namespace),
          "data": {"prometheus.toml": prometheus_toml()}}),
        ("One agent per node, every node including the control plane. Requests/limits are sized from\n"
         "bench/results (up to ~250 pods per node); re-run bench/ and adjust for nodes with many more pods.\n"
         f"terminationGracePeriodSeconds = shutdown timeout ({SHUTDOWN_TIMEOUT}s) + {GRACE_MARGIN}s margin.",
         _daemonset(namespace, image)),
    ]


_CLUSTER_LABELS = {"app.kubernetes.io/name": NAME, "app.kubernetes.io/component": "cluster-agent"}


def _statefulset(namespace: str, image: str, replicas: int) -> Manifest:
    agent = {
        "name": "agent",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        # Replaces the image's Categraf-layout ENTRYPOINT; the shard index is the ordinal of $POD_NAME.
        "command": [
            "kubescrape", "run",
            "--config", CLUSTER_CONFIG,
            "--shard-count", str(replicas),
            "--listen", f"0.0.0.0:{SELF_METRICS_PORT}",
            "--spool-dir", SPOOL_DIR,
            "--shutdown-timeout", str(SHUTDOWN_TIMEOUT),
        ],
        "env": [{"name": "POD_NAME",
                 "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}}],
        "ports": [{"name": "self-metrics", "containerPort": SELF_METRICS_PORT, "protocol": "TCP"}],
        # Not measured for this mode: a shard scrapes (targets / M) × samples per target. Start here,
        # watch the self-metrics and re-size; adding replicas is the other lever.
        "resources": {
            "requests": {"cpu": "100m", "memory": "256Mi"},
            "limits": {"cpu": "1", "memory": "1Gi"},
        },
        "livenessProbe": {
            "httpGet": {"path": "/livez", "port": "self-metrics"}, "initialDelaySeconds": 10,
            "periodSeconds": 20, "timeoutSeconds": 5, "failureThreshold": 3,
        },
        "readinessProbe": {
            "httpGet": {"path": "/healthz", "port": "self-metrics"}, "initialDelaySeconds": 3,
            "periodSeconds": 10, "timeoutSeconds": 5,
        },
        "securityContext": {
            "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True, "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
        },
        "volumeMounts": [
            {"name": "config", "mountPath": CLUSTER_CONFIG_DIR, "readOnly": True},
            {"name": "spool", "mountPath": SPOOL_DIR},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    claim = {
        "metadata": {"name": "spool", "labels": dict(_CLUSTER_LABELS)},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "2Gi"}}},
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": _meta(NAME, namespace) | {"labels": dict(_CLUSTER_LABELS)},
        "spec": {
            "serviceName": NAME,
            "replicas": replicas,
            # Shards are independent: start and replace them all at once, not one by one.
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": dict(_CLUSTER_LABELS)},
            "template": {
                "metadata": {"labels": dict(_CLUSTER_LABELS)},
                "spec": {
                    "serviceAccountName": NAME,
                    "terminationGracePeriodSeconds": math.ceil(SHUTDOWN_TIMEOUT) + GRACE_MARGIN,
                    # fsGroup makes the claimed volume writable by the non-root user; no chown step.
                    "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}, "fsGroup": RUN_AS},
                    "containers": [agent],
                    "volumes": [
                        {"name": "config", "configMap": {"name": f"{NAME}-prometheus"}},
                        {"name": "tmp", "emptyDir": {"sizeLimit": "16Mi"}},
                    ],
                },
            },
            "volumeClaimTemplates": [claim],
        },
    }


def _cluster_manifests(namespace: str, writer_url: str, image: str,
                       replicas: int) -> list[tuple[str, Manifest]]:
    if replicas < 1:
        raise ValueError(f"replicas {replicas} must be at least 1")
    role: Manifest = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": _meta(NAME),
        "rules": [
            {"apiGroups": [""], "resources": ["nodes", "pods", "services", "endpoints"],
             "verbs": ["list", "watch"]},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
            {"apiGroups": [""], "resources": ["nodes/proxy", "nodes/metrics"], "verbs": ["get"]},
        ],
    }
    service: Manifest = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(NAME, namespace),
        "spec": {
            "clusterIP": "None",
            "selector": dict(_CLUSTER_LABELS),
            "ports": [{"name": "self-metrics", "port": SELF_METRICS_PORT, "targetPort": "self-metrics"}],
        },
    }
    return [
        *_identity(namespace),
        ("Cluster discovery: list/watch nodes, pods, services, endpoints and endpointslices (the roles\n"
         "kubernetes_sd_configs can use), and get nodes/proxy for the kubelets behind the apiserver's\n"
         "/api/v1/nodes/NODE/proxy/... (nodes/metrics for scraping them directly instead).",
         role),
        ("Grants the ClusterRole to the ServiceAccount.", _binding(namespace)),
        ("prometheus.yml for `kubescrape run --config`: node and pod discovery, remote_write.",
         {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(f"{NAME}-prometheus", namespace),
          "data": {"prometheus.yml": cluster_prometheus_yml(writer_url)}}),
        ("Headless Service: the StatefulSet's stable pod names (kubescrape-0 …) and DNS, and one place\n"
         "to scrape every shard's self-metrics.",
         service),
        (f"{replicas} shards; each keeps the targets whose label-set hash falls to its ordinal. Changing\n"
         "replicas changes --shard-count: during the rollout some targets are scraped twice or not at all.\n"
         "The spool is a PersistentVolumeClaim per replica (volumeClaimTemplates), not an emptyDir: a\n"
         "rescheduled or upgraded shard comes back with the same claim and resends what it had spooled;\n"
         "an emptyDir would lose it with the pod. Needs a default StorageClass (or set storageClassName).",
         _statefulset(namespace, image, replicas)),
    ]


class _Dumper(yaml.SafeDumper):
    """Block style for multi-line strings, so the TOML in ConfigMaps stays readable; no anchors/aliases
    for shared sub-objects, which a reader of a config file should not have to resolve."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


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


def run_command(namespace: str, writer_url: str, image: str, output_dir: Path | None, *,
                mode: str = "daemonset", replicas: int = 2) -> int:
    """``kubescrape manifests``: print the manifests as one multi-document YAML, or write one file each."""
    if mode not in MODES:
        sys.stderr.write(f"--mode {mode!r} is not one of {', '.join(MODES)}; fix: --mode daemonset or "
                         "--mode cluster\n")
        return 2
    if replicas < 1:
        sys.stderr.write(f"--replicas {replicas} must be at least 1; fix: --replicas 2 (or more)\n")
        return 2
    manifests = build_manifests(namespace, writer_url, image, mode=mode, replicas=replicas)
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
