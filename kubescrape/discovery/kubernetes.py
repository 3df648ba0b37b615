"""``kubernetes_sd_configs``: target groups for the ``node``, ``pod``, ``service``, ``endpointslice`` and
``endpoints`` roles, kept current by list + watch (:class:`~kubescrape.discovery.reflector.Reflector`).

One reflector per (resource, namespace), as Prometheus runs one informer per namespace; the
``endpointslice``/``endpoints`` roles also watch pods and services, because their targets carry the
pod's and the service's labels, and re-emit the groups a pod or service change touches.
Every change reaches ``on_update`` as the list of groups it changed; a group without targets means its
source is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from kubescrape.clock import SYSTEM_CLOCK, Clock
from kubescrape.discovery.apiclient import ApiClient
from kubescrape.discovery.metrics import DiscoveryMetrics
from kubescrape.discovery.reflector import Reflector
from kubescrape.discovery.roles import endpointslice_group, node_group, pod_group, service_group
from kubescrape.discovery.targetgroup import TargetGroup
from kubescrape.errors import ConfigError

Json = dict[str, Any]
OnUpdate = Callable[[list[TargetGroup]], None]

__all__ = ["ROLES", "KubernetesDiscovery", "RoleSelector"]

ROLES = ("node", "pod", "service", "endpointslice", "endpoints")
_PATHS = {
    "node": ("/api/v1", "nodes", False),
    "pod": ("/api/v1", "pods", True),
    "service": ("/api/v1", "services", True),
    "endpointslice": ("/apis/discovery.k8s.io/v1", "endpointslices", True),
    "endpoints": ("/api/v1", "endpoints", True),
}


@dataclass(frozen=True)
class RoleSelector:
    """Prometheus' ``selectors: [{role, label, field}]`` entry."""

    role: str
    label: str = ""
    field: str = ""


def _path(role: str, namespace: str) -> str:
    prefix, resource, namespaced = _PATHS[role]
    if namespaced and namespace:
        return f"{prefix}/namespaces/{namespace}/{resource}"
    return f"{prefix}/{resource}"


def _endpoints_as_slice(ep: Json) -> Json:
    """A v1 Endpoints object seen as an EndpointSlice, so both roles share one builder."""
    endpoints, ports = [], []
    for subset in ep.get("subsets") or ():
        ports = [{"name": p.get("name", ""), "port": p.get("port"), "protocol": p.get("protocol", "TCP")}
                 for p in subset.get("ports") or ()]
        for ready, key in ((True, "addresses"), (False, "notReadyAddresses")):
            for a in subset.get(key) or ():
                e: Json = {"addresses": [a.get("ip", "")], "conditions": {"ready": ready}}
                if a.get("nodeName"):
                    e["nodeName"] = a["nodeName"]
                if a.get("hostname"):
                    e["hostname"] = a["hostname"]
                if a.get("targetRef"):
                    e["targetRef"] = a["targetRef"]
                endpoints.append(e)
    meta = ep["metadata"]
    return {"metadata": {**meta, "labels": {**(meta.get("labels") or {}),
                                            "kubernetes.io/service-name": meta["name"]}},
            "addressType": "IPv4", "endpoints": endpoints, "ports": ports}


@dataclass
class KubernetesDiscovery:
    """One ``kubernetes_sd_configs`` entry."""

    client: ApiClient
    role: str
    on_update: OnUpdate
    namespaces: Sequence[str] = ()
    selectors: Sequence[RoleSelector] = ()
    clock: Clock = SYSTEM_CLOCK
    watch_timeout: int = 300
    metrics: DiscoveryMetrics | None = None
    groups: dict[str, TargetGroup] = field(default_factory=dict)
    reflectors: list[Reflector] = field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _pods: dict[tuple[str, str], Json] = field(default_factory=dict)
    _services: dict[tuple[str, str], Json] = field(default_factory=dict)
    _slices: dict[tuple[str, str], Json] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ConfigError(f"unknown kubernetes_sd_configs role {self.role!r}",
                              f"use one of {', '.join(ROLES)}", key="role")
        watched = {"node": ["node"], "pod": ["pod"], "service": ["service"],
                   "endpointslice": ["endpointslice", "pod", "service"],
                   "endpoints": ["endpoints", "pod", "service"]}[self.role]
        for role in watched:
            sel = next((s for s in self.selectors if s.role == role), RoleSelector(role))
            params = {"labelSelector": sel.label, "fieldSelector": sel.field}
            spaces = [""] if role == "node" or not self.namespaces else list(self.namespaces)
            for ns in spaces:
                self.reflectors.append(Reflector(self.client, _path(role, ns), self._handler(role),
                                                 params=params, clock=self.clock,
                                                 watch_timeout=self.watch_timeout, metrics=self.metrics,
                                                 role=role))

    def _handler(self, role: str) -> Callable[[str, Json], None]:
        return lambda kind, obj: self._on_event(role, kind, obj)

    @property
    def synced(self) -> bool:
        """True once every reflector has listed."""
        return all(r.synced for r in self.reflectors)

    def _publish(self, changed: list[TargetGroup]) -> None:
        for g in changed:
            if g.targets:
                self.groups[g.source] = g
            else:
                self.groups.pop(g.source, None)
        if changed:
            self.on_update(changed)

    def _on_event(self, role: str, kind: str, obj: Json) -> None:
        meta = obj.get("metadata") or {}
        key = (meta.get("namespace", ""), meta.get("name", ""))
        if role == self.role and role in ("node", "pod", "service"):
            build = {"node": node_group, "pod": pod_group, "service": service_group}[role]
            group = build(obj)
            self._publish([TargetGroup(group.source) if kind == "DELETED" else group])
            return
        store = {"pod": self._pods, "service": self._services}.get(role, self._slices)
        if kind == "DELETED":
            store.pop(key, None)
        else:
            store[key] = obj if role != "endpoints" else _endpoints_as_slice(obj)
        if role in ("endpointslice", "endpoints"):
            self._publish([self._slice_group(key, deleted=kind == "DELETED")])
        else:
            self._publish([self._slice_group(k) for k in self._affected(role, key)])

    def _source(self, key: tuple[str, str]) -> str:
        return f"{self.role}/{key[0]}/{key[1]}"

    def _slice_group(self, key: tuple[str, str], *, deleted: bool = False) -> TargetGroup:
        eps = self._slices.get(key)
        if deleted or eps is None:
            return TargetGroup(self._source(key))
        group = endpointslice_group(eps, self._pods, self._services)
        if self.role == "endpoints":
            group = _as_endpoints_group(group, self._source(key))
        return group

    def _affected(self, role: str, key: tuple[str, str]) -> list[tuple[str, str]]:
        """The slices that refer to pod ``key`` or belong to service ``key``."""
        out = []
        for k, eps in self._slices.items():
            if k[0] != key[0]:
                continue
            if role == "service":
                if (eps["metadata"].get("labels") or {}).get("kubernetes.io/service-name") == key[1]:
                    out.append(k)
            elif any((e.get("targetRef") or {}).get("name") == key[1] for e in eps.get("endpoints") or ()):
                out.append(k)
        return out

    async def start(self) -> None:
        """Start every reflector as a task owned by this discovery."""
        for r in self.reflectors:
            self._tasks.append(asyncio.create_task(r.run(), name=f"discovery {r.path}"))

    async def wait_synced(self, timeout: float) -> bool:
        """Wait until every reflector listed once (or ``timeout``); True when synced."""
        deadline = self.clock.monotonic() + timeout
        while not self.synced and self.clock.monotonic() < deadline:
            for t in self._tasks:
                if t.done() and not t.cancelled() and t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
            await asyncio.sleep(0.02)
        return self.synced

    async def stop(self) -> None:
        """Cancel the reflectors."""
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks.clear()

    def label_sets(self) -> list[dict[str, str]]:
        """Every discovered target's label set."""
        return [ls for g in self.groups.values() for ls in g.label_sets()]


_ENDPOINTS_NAMES = {
    "endpoint_conditions_ready": "endpoint_ready",
    "endpoint_node_name": "endpoint_node_name",
    "endpoint_hostname": "endpoint_hostname",
    "address_target_kind": "endpoint_address_target_kind",
    "address_target_name": "endpoint_address_target_name",
    "port_name": "endpoint_port_name",
    "port_protocol": "endpoint_port_protocol",
}
_SLICE = "__meta_kubernetes_endpointslice_"


def _as_endpoints_group(group: TargetGroup, source: str) -> TargetGroup:
    """Rename the ``endpointslice`` role's labels to the ``endpoints`` role's (``endpoints.go``)."""
    def rename(labels: Any) -> dict[str, str]:
        out = {}
        for k, v in labels.items():
            if k.startswith(_SLICE):
                rest = k[len(_SLICE):]
                if rest == "name" or rest.startswith(("label", "annotation")):
                    k = f"__meta_kubernetes_endpoints_{rest}"
                elif rest in _ENDPOINTS_NAMES:
                    k = f"__meta_kubernetes_{_ENDPOINTS_NAMES[rest]}"
                else:
                    continue
            out[k] = v
        return out
    return TargetGroup(source, tuple(rename(t) for t in group.targets), rename(group.labels))
