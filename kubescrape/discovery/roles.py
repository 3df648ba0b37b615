"""Kubernetes objects → target groups, with exactly the ``__meta_kubernetes_*`` labels Prometheus' roles
produce (``discovery/kubernetes/{node,pod,service,endpointslice}.go``; the label set documented under
``kubernetes_sd_config``).

Pure functions over the objects' JSON (as the apiserver or the kubelet's ``/pods`` serve them), so the
cluster-wide watcher and the node-local kubelet poller build identical labels.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from kubescrape.discovery.targetgroup import META_PREFIX, TargetGroup, sanitize_label_name

Json = dict[str, Any]

__all__ = [
    "endpointslice_group",
    "node_group",
    "object_meta_labels",
    "pod_group",
    "service_group",
]

# Prometheus' order of preference for a node's address (node.go: nodeAddress).
_NODE_ADDRESS_ORDER = ("InternalIP", "InternalDNS", "ExternalIP", "ExternalDNS", "LegacyHostIP", "Hostname")


def object_meta_labels(role: str, meta: Mapping[str, Any]) -> dict[str, str]:
    """``addObjectMetaLabels``: ``<role>_name`` and the sanitized labels/annotations with their
    ``…present_`` companions."""
    p = f"{META_PREFIX}{role}_"
    out = {f"{p}name": str(meta.get("name", ""))}
    for k, v in (meta.get("labels") or {}).items():
        ln = sanitize_label_name(k)
        out[f"{p}label_{ln}"] = str(v)
        out[f"{p}labelpresent_{ln}"] = "true"
    for k, v in (meta.get("annotations") or {}).items():
        ln = sanitize_label_name(k)
        out[f"{p}annotation_{ln}"] = str(v)
        out[f"{p}annotationpresent_{ln}"] = "true"
    return out


def _join_host_port(host: str, port: int | str) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def node_group(node: Json) -> TargetGroup:
    """The ``node`` role: one target per node at its preferred address and the kubelet's port."""
    meta = node["metadata"]
    name = meta["name"]
    source = f"node/{name}"
    status = node.get("status") or {}
    by_type: dict[str, list[str]] = {}
    for a in status.get("addresses") or ():
        by_type.setdefault(a.get("type", ""), []).append(a.get("address", ""))
    address = next((by_type[t][0] for t in _NODE_ADDRESS_ORDER if by_type.get(t)), None)
    if address is None:
        return TargetGroup(source)  # Prometheus logs "Cannot get node address" and skips the node
    port = ((status.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}).get("Port", 0)
    target = {
        "__address__": _join_host_port(address, port),
        "instance": name,
        f"{META_PREFIX}node_provider_id": str((node.get("spec") or {}).get("providerID", "")),
    }
    for kind, addrs in by_type.items():
        target[sanitize_label_name(f"{META_PREFIX}node_address_{kind}")] = addrs[0]
    return TargetGroup(source, (target,), object_meta_labels("node", meta))


def _pod_ready(pod: Json) -> str:
    for cond in (pod.get("status") or {}).get("conditions") or ():
        if cond.get("type") == "Ready":
            return str(cond.get("status", "Unknown")).lower()
    return "unknown"


def pod_labels(pod: Json) -> dict[str, str]:
    """``podLabels``: the labels every target of a pod carries (without the namespace)."""
    meta = pod["metadata"]
    status = pod.get("status") or {}
    labels = {
        f"{META_PREFIX}pod_ip": str(status.get("podIP", "")),
        f"{META_PREFIX}pod_ready": _pod_ready(pod),
        f"{META_PREFIX}pod_phase": str(status.get("phase", "")),
        f"{META_PREFIX}pod_node_name": str((pod.get("spec") or {}).get("nodeName", "")),
        f"{META_PREFIX}pod_host_ip": str(status.get("hostIP", "")),
        f"{META_PREFIX}pod_uid": str(meta.get("uid", "")),
    }
    for entry in status.get("podIPs") or ():
        ip_text = entry.get("ip", "")
        try:
            ip = ipaddress.ip_address(ip_text)
        except ValueError:
            continue
        key = f"{META_PREFIX}pod_ipv{ip.version}"
        labels.setdefault(key, ip_text)
    labels.update(object_meta_labels("pod", meta))
    controller = next((r for r in meta.get("ownerReferences") or () if r.get("controller")), None)
    if controller is not None:
        if controller.get("kind"):
            labels[f"{META_PREFIX}pod_controller_kind"] = controller["kind"]
        if controller.get("name"):
            labels[f"{META_PREFIX}pod_controller_name"] = controller["name"]
    return labels


def _container_ids(statuses: Any) -> dict[str, str]:
    return {s.get("name", ""): s.get("containerID", "") for s in statuses or ()}


def pod_group(pod: Json) -> TargetGroup:
    """The ``pod`` role: one target per container port (or per container without ports) at the pod IP."""
    meta = pod["metadata"]
    source = f"pod/{meta.get('namespace', '')}/{meta['name']}"
    status = pod.get("status") or {}
    ip = status.get("podIP", "")
    if not ip:
        return TargetGroup(source)  # a pod that is starting or was evicted has no IP yet
    labels = pod_labels(pod)
    labels[f"{META_PREFIX}namespace"] = str(meta.get("namespace", ""))
    spec = pod.get("spec") or {}
    main = spec.get("containers") or []
    init = spec.get("initContainers") or []
    ids = _container_ids(status.get("containerStatuses"))
    init_ids = _container_ids(status.get("initContainerStatuses"))
    targets: list[dict[str, str]] = []
    for i, c in enumerate([*main, *init]):
        is_init = i >= len(main)
        common = {
            f"{META_PREFIX}pod_container_name": str(c.get("name", "")),
            f"{META_PREFIX}pod_container_id": (init_ids if is_init else ids).get(c.get("name", ""), ""),
            f"{META_PREFIX}pod_container_image": str(c.get("image", "")),
            f"{META_PREFIX}pod_container_init": "true" if is_init else "false",
        }
        ports = c.get("ports") or []
        if not ports:
            host = f"[{ip}]" if ":" in ip else ip
            targets.append({"__address__": host, **common})
            continue
        for port in ports:
            number = str(port.get("containerPort", ""))
            targets.append({
                "__address__": _join_host_port(ip, number),
                **common,
                f"{META_PREFIX}pod_container_port_number": number,
                f"{META_PREFIX}pod_container_port_name": str(port.get("name", "")),
                f"{META_PREFIX}pod_container_port_protocol": str(port.get("protocol", "TCP")),
            })
    return TargetGroup(source, tuple(targets), labels)


def service_labels(svc: Json) -> dict[str, str]:
    """``serviceLabels``: name, namespace, labels and annotations of a Service."""
    meta = svc["metadata"]
    labels = object_meta_labels("service", meta)
    labels[f"{META_PREFIX}namespace"] = str(meta.get("namespace", ""))
    return labels


def service_group(svc: Json) -> TargetGroup:
    """The ``service`` role: one target per service port at ``<name>.<namespace>.svc:<port>``."""
    meta = svc["metadata"]
    ns, name = meta.get("namespace", ""), meta["name"]
    spec = svc.get("spec") or {}
    kind = spec.get("type", "ClusterIP")
    targets = []
    for port in spec.get("ports") or ():
        t = {
            "__address__": f"{name}.{ns}.svc:{port.get('port', '')}",
            f"{META_PREFIX}service_port_name": str(port.get("name", "")),
            f"{META_PREFIX}service_port_number": str(port.get("port", "")),
            f"{META_PREFIX}service_port_protocol": str(port.get("protocol", "TCP")),
            f"{META_PREFIX}service_type": str(kind),
        }
        if kind == "ExternalName":
            t[f"{META_PREFIX}service_external_name"] = str(spec.get("externalName", ""))
        else:
            t[f"{META_PREFIX}service_cluster_ip"] = str(spec.get("clusterIP", ""))
        if kind == "LoadBalancer":
            ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
            if ingress and ingress[0].get("ip"):
                t[f"{META_PREFIX}service_loadbalancer_ip"] = ingress[0]["ip"]
        targets.append(t)
    return TargetGroup(f"svc/{ns}/{name}", tuple(targets), service_labels(svc))


def endpointslice_group(eps: Json, pods: Mapping[tuple[str, str], Json],
                        services: Mapping[tuple[str, str], Json]) -> TargetGroup:
    """The ``endpointslice`` role: one target per endpoint address and port, with the pod's and the
    service's labels when they are known, then one target per container port of those pods that no
    endpoint port covered (``endpointslice.go: buildEndpointSlice``)."""
    meta = eps["metadata"]
    ns = meta.get("namespace", "")
    source = f"endpointslice/{ns}/{meta['name']}"
    p = f"{META_PREFIX}endpointslice_"
    labels = {f"{META_PREFIX}namespace": ns, **object_meta_labels("endpointslice", meta)}
    labels[f"{p}address_type"] = str(eps.get("addressType", ""))
    svc_name = (meta.get("labels") or {}).get("kubernetes.io/service-name")
    if svc_name and (ns, svc_name) in services:
        labels.update(service_labels(services[(ns, svc_name)]))
    ports = eps.get("ports") or [{}]
    targets: list[dict[str, str]] = []
    seen_ports: dict[tuple[str, str], set[int]] = {}
    seen_pods: dict[tuple[str, str], Json] = {}
    for ep in eps.get("endpoints") or ():
        for port in ports:
            for addr in ep.get("addresses") or ():
                number = port.get("port")
                t = {
                    "__address__": _join_host_port(addr, number) if number is not None else addr,
                    f"{p}port_name": str(port.get("name", "")),
                    f"{p}port_protocol": str(port.get("protocol", "")),
                    f"{p}port": str(number) if number is not None else "",
                }
                if port.get("appProtocol") is not None:
                    t[f"{p}port_app_protocol"] = str(port["appProtocol"])
                cond = ep.get("conditions") or {}
                for cond_name in ("ready", "serving", "terminating"):
                    if cond.get(cond_name) is not None:
                        t[f"{p}endpoint_conditions_{cond_name}"] = "true" if cond[cond_name] else "false"
                if ep.get("hostname") is not None:
                    t[f"{p}endpoint_hostname"] = str(ep["hostname"])
                if ep.get("nodeName") is not None:
                    t[f"{p}endpoint_node_name"] = str(ep["nodeName"])
                if ep.get("zone") is not None:
                    t[f"{p}endpoint_zone"] = str(ep["zone"])
                for k, v in (ep.get("deprecatedTopology") or {}).items():
                    ln = sanitize_label_name(k)
                    t[f"{p}endpoint_topology_{ln}"] = str(v)
                    t[f"{p}endpoint_topology_present_{ln}"] = "true"
                ref = ep.get("targetRef") or {}
                if ref.get("kind"):
                    t[f"{p}address_target_kind"] = str(ref["kind"])
                    t[f"{p}address_target_name"] = str(ref.get("name", ""))
                pod = pods.get((ref.get("namespace", ns), ref.get("name", ""))) if ref.get("kind") == "Pod" \
                    else None
                if pod is not None:
                    pod_key = (pod["metadata"].get("namespace", ""), pod["metadata"]["name"])
                    seen_pods[pod_key] = pod
                    t.update(pod_labels(pod))
                    for c, is_init in _containers(pod):
                        match = next((cp for cp in c.get("ports") or () if cp.get("containerPort") == number),
                                     None)
                        if match is not None and number is not None:
                            t.update(_container_port_labels(c, match, is_init))
                            break
                    if number is not None:
                        seen_ports.setdefault(pod_key, set()).add(int(number))
                targets.append(t)
    for pod_key, pod in seen_pods.items():
        ip = (pod.get("status") or {}).get("podIP", "")
        if not ip:
            continue
        for c, is_init in _containers(pod):
            for cp in c.get("ports") or ():
                if cp.get("containerPort") in seen_ports.get(pod_key, set()):
                    continue
                t = {"__address__": _join_host_port(ip, cp.get("containerPort", "")), **pod_labels(pod),
                     **_container_port_labels(c, cp, is_init)}
                targets.append(t)
    return TargetGroup(source, tuple(targets), labels)


def _containers(pod: Json) -> list[tuple[Json, bool]]:
    spec = pod.get("spec") or {}
    return [(c, False) for c in spec.get("containers") or ()] + [
        (c, True) for c in spec.get("initContainers") or ()]


def _container_port_labels(c: Json, port: Json, is_init: bool) -> dict[str, str]:
    return {
        f"{META_PREFIX}pod_container_name": str(c.get("name", "")),
        f"{META_PREFIX}pod_container_image": str(c.get("image", "")),
        f"{META_PREFIX}pod_container_port_name": str(port.get("name", "")),
        f"{META_PREFIX}pod_container_port_number": str(port.get("containerPort", "")),
        f"{META_PREFIX}pod_container_port_protocol": str(port.get("protocol", "TCP")),
        f"{META_PREFIX}pod_container_init": "true" if is_init else "false",
    }
