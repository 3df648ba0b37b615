"""Server-side printing: the ``meta.k8s.io/v1`` Table the apiserver answers when a client (kubectl) asks
for ``application/json;as=Table;v=v1;g=meta.k8s.io``, with the columns of the built-in printers
(pkg/printers/internalversion) for nodes and pods and the default Name/Created At for the rest."""

from __future__ import annotations

import calendar
import time
from collections.abc import Callable, Iterable
from typing import Any

from kubescrape.emulator.apistore import Json, Resource

__all__ = ["human_duration", "table", "wants_table"]

_NAME_DESC = "Name must be unique within a namespace. More info: http://kubernetes.io/docs/user-guide/identifiers#names"
_ADDR_DESC = "List of addresses reachable to the node. Queried from cloud provider, if available."
_AGE_DESC = "CreationTimestamp is a timestamp representing the server time when this object was created."


def wants_table(accept: str) -> bool:
    """True when the Accept header asks for a Table first."""
    first = accept.split(",")[0]
    return "as=Table" in first and "g=meta.k8s.io" in first


def human_duration(seconds: float) -> str:
    """``duration.HumanDuration`` (k8s.io/apimachinery): ``45s``, ``5m2s``, ``3h10m``, ``2d5h``, ``1y20d``."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m" if s % 60 == 0 else f"{m}m{s % 60}s"
    if m < 180:
        return f"{m}m"
    h = m // 60
    if h < 8:
        return f"{h}h" if m % 60 == 0 else f"{h}h{m % 60}m"
    if h < 48:
        return f"{h}h"
    if h < 24 * 8:
        return f"{h // 24}d" if h % 24 == 0 else f"{h // 24}d{h % 24}h"
    if h < 24 * 365 * 2:
        return f"{h // 24}d"
    d = h // 24
    if h < 24 * 365 * 8:
        return f"{d // 365}y" if d % 365 == 0 else f"{d // 365}y{d % 365}d"
    return f"{d // 365}y"


def _age(obj: Json, now: float) -> str:
    ts = (obj.get("metadata") or {}).get("creationTimestamp")
    if not ts:
        return "<unknown>"
    return human_duration(now - calendar.timegm(time.strptime(ts, "%Y-%m-%dT%H:%M:%SZ")))


def _col(name: str, desc: str, priority: int = 0, kind: str = "string", fmt: str = "") -> Json:
    return {"name": name, "type": kind, "format": fmt, "description": desc, "priority": priority}


def _node_row(n: Json, now: float) -> list[Any]:
    st = n.get("status") or {}
    ready = next((c for c in st.get("conditions") or () if c.get("type") == "Ready"), None)
    status = "Ready" if ready and ready.get("status") == "True" else "NotReady"
    if (n.get("spec") or {}).get("unschedulable"):
        status += ",SchedulingDisabled"
    roles = sorted(k.split("/", 1)[1] for k in (n["metadata"].get("labels") or {})
                   if k.startswith("node-role.kubernetes.io/"))
    addr = {a.get("type"): a.get("address") for a in st.get("addresses") or ()}
    info = st.get("nodeInfo") or {}
    return [n["metadata"]["name"], status, ",".join(roles) or "<none>", _age(n, now),
            info.get("kubeletVersion", ""), addr.get("InternalIP", "<none>"),
            addr.get("ExternalIP", "<none>"), info.get("osImage", ""), info.get("kernelVersion", ""),
            info.get("containerRuntimeVersion", "")]


_NODE_COLUMNS = [
    _col("Name", _NAME_DESC, fmt="name"), _col("Status", "The status of the node"),
    _col("Roles", "The roles of the node"), _col("Age", _AGE_DESC),
    _col("Version", "Kubelet Version reported by the node."),
    _col("Internal-IP", _ADDR_DESC, 1),
    _col("External-IP", _ADDR_DESC, 1),
    _col("OS-Image", "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 "
         "(wheezy)).", 1),
    _col("Kernel-Version", "Kernel Version reported by the node from 'uname -r' (e.g. "
         "3.16.0-0.bpo.4-amd64).", 1),
    _col("Container-Runtime", "Container runtime version reported by the node through runtime remote API "
         "(e.g. containerd://1.4.2).", 1),
]


def _pod_row(p: Json, now: float) -> list[Any]:
    st = p.get("status") or {}
    statuses = st.get("containerStatuses") or []
    containers = (p.get("spec") or {}).get("containers") or []
    ready = sum(1 for c in statuses if c.get("ready"))
    restarts = sum(int(c.get("restartCount", 0)) for c in statuses)
    return [p["metadata"]["name"], f"{ready}/{len(containers)}", st.get("phase", ""), str(restarts),
            _age(p, now), st.get("podIP") or "<none>", (p.get("spec") or {}).get("nodeName") or "<none>",
            "<none>", "<none>"]


_POD_COLUMNS = [
    _col("Name", _NAME_DESC, fmt="name"),
    _col("Ready", "The aggregate readiness state of this pod for accepting traffic."),
    _col("Status", "The aggregate status of the containers in this pod."),
    _col("Restarts", "The number of times the containers in this pod have been restarted and when the last "
         "container in this pod has restarted."),
    _col("Age", _AGE_DESC),
    _col("IP", "IP address allocated to the pod. Routable at least within the cluster. Empty if not yet "
         "allocated.", 1),
    _col("Node", "NodeName is a request to schedule this pod onto a specific node.", 1),
    _col("Nominated Node", "nominatedNodeName is set only when this pod preempts other pods on the node.", 1),
    _col("Readiness Gates", "If specified, all readiness gates will be evaluated for pod readiness.", 1),
]
_DEFAULT_COLUMNS = [_col("Name", _NAME_DESC, fmt="name"),
                    _col("Created At", _AGE_DESC, kind="date")]


def _default_row(o: Json, now: float) -> list[Any]:
    return [o["metadata"]["name"], o["metadata"].get("creationTimestamp")]


_PRINTERS: dict[str, tuple[list[Json], Callable[[Json, float], list[Any]]]] = {
    "nodes": (_NODE_COLUMNS, _node_row),
    "pods": (_POD_COLUMNS, _pod_row),
}


def table(resource: Resource, objects: Iterable[Json], *, now: float, resource_version: str,
          headers: bool = True, extra_meta: Json | None = None) -> Json:
    """A Table of ``objects``; each row carries the object's metadata as PartialObjectMetadata."""
    columns, row = _PRINTERS.get(resource.name, (_DEFAULT_COLUMNS, _default_row))
    out: Json = {"kind": "Table", "apiVersion": "meta.k8s.io/v1",
                 "metadata": {"resourceVersion": resource_version, **(extra_meta or {})}}
    if headers:
        out["columnDefinitions"] = columns
    out["rows"] = [{"cells": row(o, now), "object": {
        "kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]}}
        for o in objects]
    return out
