"""The objects the stand-in apiserver serves, derived from the emulated kubelets themselves.

Pods are the very pods each emulated kubelet lists on ``/pods`` (its PodList, minus the annotations
only a kubelet adds), so the apiserver and the kubelets never disagree, and pod churn on a node shows
up as watch events. Nodes, Services (one per workload that has a port, selecting its pods by
``app.kubernetes.io/name``), Endpoints, EndpointSlices and Namespaces are built the way their
controllers would build them from those pods.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from kubescrape.emulator.apistore import Json, Store
from kubescrape.emulator.payloads_json import rfc3339

__all__ = ["ClusterSync", "NodeView", "node_object"]

# Annotations the kubelet adds to its own copy of a pod; the apiserver's copy does not have them.
_KUBELET_ONLY = ("kubernetes.io/config.seen", "kubernetes.io/config.source", "kubernetes.io/config.hash")
APP_LABEL = "app.kubernetes.io/name"


def _uid(*parts: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "kubescrape-emulator/" + "/".join(parts)))


@dataclass
class NodeView:
    """What the apiserver needs to know of one emulated node."""

    index: int
    name: str
    address: str
    port: int
    kubelet_version: str
    created: float
    pods_json: bytes  # the kubelet's /pods body


def node_object(view: NodeView, pod_count: int) -> Json:
    """A v1 Node as a kubeadm cluster's node registers itself (without resourceVersion)."""
    cores = 8 if pod_count <= 60 else 16
    memory_ki = cores * 4 * 1024 * 1024
    k = view.index
    return {
        "metadata": {
            "name": view.name,
            "uid": _uid("node", view.name),
            "creationTimestamp": rfc3339(view.created),
            "labels": {
                "beta.kubernetes.io/arch": "amd64",
                "beta.kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/hostname": view.name,
                "kubernetes.io/os": "linux",
                "node.kubernetes.io/instance-type": "emulated",
                "topology.kubernetes.io/zone": f"zone-{'abc'[k % 3]}",
            },
            "annotations": {
                "kubeadm.alpha.kubernetes.io/cri-socket": "unix:///var/run/containerd/containerd.sock",
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
            },
        },
        "spec": {
            "podCIDR": f"10.244.{k % 256}.0/24",
            "podCIDRs": [f"10.244.{k % 256}.0/24"],
            "providerID": f"kubescrape-emulator://{view.name}",
        },
        "status": {
            "capacity": {"cpu": str(cores), "ephemeral-storage": "104845292Ki", "memory": f"{memory_ki}Ki",
                         "pods": "110"},
            "allocatable": {"cpu": str(cores), "ephemeral-storage": "96625420948",
                            "memory": f"{memory_ki - 102400}Ki", "pods": "110"},
            "conditions": [
                {"type": t, "status": s, "lastHeartbeatTime": rfc3339(view.created),
                 "lastTransitionTime": rfc3339(view.created), "reason": r, "message": m}
                for t, s, r, m in (
                    ("MemoryPressure", "False", "KubeletHasSufficientMemory",
                     "kubelet has sufficient memory available"),
                    ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                    ("PIDPressure", "False", "KubeletHasSufficientPID",
                     "kubelet has sufficient PID available"),
                    ("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
                )
            ],
            "addresses": [{"type": "InternalIP", "address": view.address},
                          {"type": "Hostname", "address": view.name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": view.port}},
            "nodeInfo": {
                "machineID": f"{k:032x}",
                "systemUUID": f"ec2{k:05x}-0000-0000-0000-000000000000",
                "bootID": f"{k:08x}-b007-4000-8000-000000000000",
                "kernelVersion": "6.1.0-18-amd64",
                "osImage": "Debian GNU/Linux 12 (bookworm)",
                "containerRuntimeVersion": "containerd://1.7.13",
                "kubeletVersion": view.kubelet_version,
                "kubeProxyVersion": view.kubelet_version,
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        },
    }


def _api_pod(item: Json) -> Json:
    meta = dict(item["metadata"])
    meta.pop("resourceVersion", None)
    ann = {k: v for k, v in meta.get("annotations", {}).items() if k not in _KUBELET_ONLY}
    if ann:
        meta["annotations"] = ann
    else:
        meta.pop("annotations", None)
    return {**item, "metadata": meta}


def _service_ports(pod: Json) -> list[Json]:
    ports: list[Json] = []
    for c in pod["spec"]["containers"]:
        for p in c.get("ports", ()):
            ports.append({"name": "http" if not ports else c["name"][:15],
                          "protocol": p.get("protocol", "TCP"), "port": p["containerPort"],
                          "targetPort": p["containerPort"]})
    return ports


def _cluster_ip(namespace: str, name: str) -> str:
    h = hashlib.sha256(f"{namespace}/{name}".encode()).digest()
    return f"10.96.{h[0]}.{max(2, h[1])}"


class ClusterSync:
    """Keeps a :class:`Store` equal to what the emulated nodes run.

    :meth:`sync` is cheap when nothing changed: a node's PodList is parsed again only when its body
    changed (churn), and the derived objects are rebuilt only then.
    """

    def __init__(self, store: Store, *, created: float) -> None:
        self.store = store
        self.created = created
        self._parsed: dict[str, tuple[bytes, list[Json]]] = {}
        self._nodes: dict[str, NodeView] = {}

    def pods(self) -> list[Json]:
        """Every pod of every node, as the apiserver serves them."""
        return [p for _, items in self._parsed.values() for p in items]

    def sync(self, views: Sequence[NodeView]) -> int:
        """Reconcile the store with ``views``; returns the number of object changes."""
        changed = False
        current = {v.name: v for v in views}
        for name in [n for n in self._parsed if n not in current]:
            del self._parsed[name]
            changed = True
        for v in views:
            cached = self._parsed.get(v.name)
            if cached is None or cached[0] is not v.pods_json:
                items = [_api_pod(i) for i in json.loads(v.pods_json).get("items", ())]
                if cached is None or cached[1] != items:
                    changed = True
                self._parsed[v.name] = (v.pods_json, items)
        if not changed and current.keys() == self._nodes.keys():
            return 0
        self._nodes = current
        st = self.store
        pods = self.pods()
        n = st.replace_all(st.resource("", "nodes"), [
            node_object(v, len(self._parsed[v.name][1])) for v in views])
        n += st.replace_all(st.resource("", "pods"), pods)
        services, endpoints, slices = self._services(pods)
        n += st.replace_all(st.resource("", "services"), services)
        n += st.replace_all(st.resource("", "endpoints"), endpoints)
        n += st.replace_all(st.resource("discovery.k8s.io", "endpointslices"), slices)
        namespaces = sorted({p["metadata"]["namespace"] for p in pods} | {"default", "kube-system"})
        n += st.replace_all(st.resource("", "namespaces"), [self._namespace(ns) for ns in namespaces])
        return n

    def _namespace(self, name: str) -> Json:
        return {"metadata": {"name": name, "uid": _uid("namespace", name),
                             "creationTimestamp": rfc3339(self.created),
                             "labels": {"kubernetes.io/metadata.name": name}},
                "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}

    def _services(self, pods: list[Json]) -> tuple[list[Json], list[Json], list[Json]]:
        groups: dict[tuple[str, str], list[Json]] = {}
        for p in pods:
            app = p["metadata"].get("labels", {}).get(APP_LABEL)
            if app and p["metadata"].get("ownerReferences", [{}])[0].get("kind") != "Job":
                groups.setdefault((p["metadata"]["namespace"], app), []).append(p)
        services, endpoints, slices = [], [], []
        created = rfc3339(self.created)
        for (ns, app), members in sorted(groups.items()):
            ports = _service_ports(members[0])
            if not ports:
                continue
            svc_uid = _uid("service", ns, app)
            labels = {APP_LABEL: app}
            services.append({
                "metadata": {"name": app, "namespace": ns, "uid": svc_uid, "creationTimestamp": created,
                             "labels": labels},
                "spec": {"ports": ports, "selector": {APP_LABEL: app}, "clusterIP": _cluster_ip(ns, app),
                         "clusterIPs": [_cluster_ip(ns, app)], "type": "ClusterIP",
                         "sessionAffinity": "None", "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
                         "internalTrafficPolicy": "Cluster"},
                "status": {"loadBalancer": {}},
            })
            members = sorted(members, key=lambda p: (p["status"].get("podIP", ""), p["metadata"]["name"]))
            ep_ports = [{"name": p["name"], "port": p["port"], "protocol": p["protocol"]} for p in ports]

            def ref(p: Json) -> Json:
                return {"kind": "Pod", "namespace": p["metadata"]["namespace"], "name": p["metadata"]["name"],
                        "uid": p["metadata"]["uid"]}

            ep: Json = {"metadata": {"name": app, "namespace": ns, "uid": _uid("endpoints", ns, app),
                                     "creationTimestamp": created, "labels": labels}}
            addresses = [{"ip": p["status"]["podIP"], "nodeName": p["spec"]["nodeName"], "targetRef": ref(p)}
                         for p in members if p["status"].get("podIP")]
            if addresses:
                ep["subsets"] = [{"addresses": addresses, "ports": ep_ports}]
            endpoints.append(ep)
            suffix = hashlib.sha256(f"{ns}/{app}".encode()).hexdigest()[:5]
            slice_obj: Json = {
                "metadata": {
                    "name": f"{app}-{suffix}", "generateName": f"{app}-", "namespace": ns,
                    "uid": _uid("endpointslice", ns, app), "creationTimestamp": created,
                    "labels": {"endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
                               "kubernetes.io/service-name": app, **labels},
                    "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": app, "uid": svc_uid,
                                         "controller": True, "blockOwnerDeletion": True}],
                },
                "addressType": "IPv4",
                "endpoints": [
                    {"addresses": [p["status"]["podIP"]],
                     "conditions": {"ready": True, "serving": True, "terminating": False},
                     "targetRef": ref(p), "nodeName": p["spec"]["nodeName"]}
                    for p in members if p["status"].get("podIP")
                ],
                "ports": ep_ports,
            }
            slices.append(slice_obj)
        return services, endpoints, slices

