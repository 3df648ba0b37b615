"""Node-local discovery: the pods of this node from the kubelet's ``/pods``, polled (Grafana Alloy's
``discovery.kubelet`` is the model).

A DaemonSet that watches every pod of the cluster from every node pays for the whole cluster's pods on
each node (memory and apiserver load grow with nodes × pods); the kubelet already knows the pods of its
node. The groups carry exactly the ``pod`` role's labels (:func:`kubescrape.discovery.roles.pod_group`),
so the usual ``prometheus.io/scrape|port|path|scheme`` relabel rules work unchanged.

RBAC: ``get`` on ``nodes/proxy`` (kubelets before 1.32 map ``/pods`` to the ``proxy`` subresource), or
``nodes/pods`` where fine-grained kubelet authorization is on (1.33+ by default), which checks
``pods`` first and falls back to ``proxy``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from kubescrape.clock import SYSTEM_CLOCK, Backoff, Clock
from kubescrape.discovery.apiclient import ApiClient, DiscoveryError
from kubescrape.discovery.kubernetes import OnUpdate
from kubescrape.discovery.metrics import DiscoveryMetrics
from kubescrape.discovery.roles import pod_group
from kubescrape.discovery.targetgroup import TargetGroup

log = logging.getLogger(__name__)

__all__ = ["KubeletDiscovery"]


@dataclass
class KubeletDiscovery:
    """Polls ``/pods`` of one kubelet every ``refresh_interval`` seconds."""

    client: ApiClient
    on_update: OnUpdate
    namespaces: Sequence[str] = ()
    refresh_interval: float = 5.0
    clock: Clock = SYSTEM_CLOCK
    metrics: DiscoveryMetrics | None = None
    groups: dict[str, TargetGroup] = field(default_factory=dict)
    refreshes: int = 0
    errors: int = 0
    last_error: DiscoveryError | None = None
    _task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start polling as a task owned by this discovery."""
        if self._task is None:
            name = f"kubelet discovery {self.client.config.server}"
            self._task = asyncio.create_task(self.run(), name=name)

    async def stop(self) -> None:
        """Stop polling."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    @property
    def synced(self) -> bool:
        """True once ``/pods`` was read."""
        return self.refreshes > 0

    async def wait_synced(self, timeout: float) -> bool:
        """Wait until the first poll succeeded (or ``timeout``)."""
        deadline = self.clock.monotonic() + timeout
        while not self.synced and self.clock.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return self.synced

    async def refresh(self) -> list[TargetGroup]:
        """One poll: publish the groups that changed (and empty ones for pods that are gone)."""
        body = await self.client.get("/pods")
        self.refreshes += 1
        fresh: dict[str, TargetGroup] = {}
        for pod in body.get("items") or ():
            ns = (pod.get("metadata") or {}).get("namespace", "")
            if self.namespaces and ns not in self.namespaces:
                continue
            group = pod_group(pod)
            if group.targets:
                fresh[group.source] = group
        changed = [TargetGroup(src) for src in self.groups if src not in fresh]
        changed += [g for src, g in fresh.items() if self.groups.get(src) != g]
        self.groups = fresh
        if changed:
            self.on_update(changed)
        return changed

    async def run(self) -> None:
        """Poll forever (cancel to stop); errors are counted, logged and retried with backoff."""
        backoff = Backoff(min(1.0, self.refresh_interval), max(30.0, self.refresh_interval))
        while True:
            try:
                await self.refresh()
                backoff.reset()
                delay = self.refresh_interval
            except DiscoveryError as e:
                self.errors += 1
                self.last_error = e
                if self.metrics is not None:
                    self.metrics.failures.labels(mechanism="kubelet", reason=e.reason).inc()
                delay = backoff.next()
                log.warning("kubelet pod discovery: %s; retrying in %.1fs", e, delay)
            await self.clock.sleep(delay)

    def label_sets(self) -> list[dict[str, str]]:
        """Every discovered target's label set."""
        return [ls for g in self.groups.values() for ls in g.label_sets()]
