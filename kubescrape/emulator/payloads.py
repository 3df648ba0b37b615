"""Bodies of everything one emulated node serves, for any pod count, moving with the clock.

:class:`NodePayloads` is the emulator server's only view of a node: each method returns the body of
one endpoint at the clock's current time. Counters grow, gauges wander and, with ``churn_per_min``,
pods are replaced (new names, uids, container ids; their series disappear and new ones appear).
Everything is a pure function of ``(node_name, seed, construction time, call time)``.

Rendering is cheap because the text of each endpoint is a template rebuilt only when pods churn
(see :mod:`kubescrape.emulator.payloads_render`); a call evaluates a few hundred time functions and
formats the numbers in one ``%`` operation.
"""

from __future__ import annotations

import math
import random
import re
import zlib
from collections.abc import Callable

from kubescrape.clock import SYSTEM_CLOCK, Clock
from kubescrape.emulator.payloads_cadvisor import Cgroup, Machine, build_cadvisor, node_cgroups, pod_cgroups
from kubescrape.emulator.payloads_json import configz, pod_list, stats_summary
from kubescrape.emulator.payloads_kubelet import build_kube_proxy, build_metrics, build_probes, build_resource
from kubescrape.emulator.payloads_pods import Pod, daemonset_count, make_pod
from kubescrape.emulator.payloads_render import PHASES, Fragment, Template, Timebase
from kubescrape.errors import EmulatorError

__all__ = ["NodePayloads"]

_MAX_PODS = 10_000


class NodePayloads:
    """Realistic kubelet (and kube-proxy) response bodies for one node.

    ``pods`` pods run on the node; with ``churn_per_min > 0``, that many pods per minute (on average,
    evenly spaced) are replaced by new ones. Equal arguments and equal clock readings give
    byte-identical bodies.
    """

    def __init__(
        self,
        node_name: str,
        node_ip: str,
        pods: int,
        *,
        churn_per_min: float = 0.0,
        seed: int = 0,
        clock: Clock = SYSTEM_CLOCK,
        kubelet_version: str = "v1.29.0",
    ) -> None:
        if not 0 <= pods <= _MAX_PODS:
            raise EmulatorError(
                f"{pods} pods per node is out of range", f"use 0 to {_MAX_PODS} pods per node"
            )
        if churn_per_min < 0 or not math.isfinite(churn_per_min):
            raise EmulatorError(
                f"pod churn of {churn_per_min} per minute is not valid",
                "use a churn rate >= 0 pods per minute",
            )
        if not re.fullmatch(r"v?\d+\.\d+(\.\d+)?([-+].*)?", kubelet_version):
            raise EmulatorError(
                f"kubelet version {kubelet_version!r} is not a version like v1.29.0", "pass e.g. v1.29.0"
            )
        self.node_name = node_name
        self.node_ip = node_ip
        self.kubelet_version = kubelet_version
        self._clock = clock
        self._seed = seed
        self._n = pods
        self._churn = churn_per_min
        self._started = clock.time()
        self._latest = self._started
        rng = random.Random(f"{seed}/{node_name}/node")
        self.boot = self._started - rng.uniform(2 * 86400, 30 * 86400)
        self._tb = Timebase(self.boot, zlib.crc32(f"{seed}/{node_name}".encode()))
        self._kubelet_start = self.boot + 31.7
        self._proxy_start = self.boot + 48.2
        self.machine = Machine(
            cores=rng.choice((4, 8, 16)),
            memory=rng.choice((16, 32, 64)) * 1024**3 - 512 * 1024**2,
            boot_id=_uuid(rng),
            machine_id=_hex(rng, 32),
            system_uuid=_uuid(rng),
        )
        self._churned = 0
        self._gens = [0] * pods
        self._pods: list[Pod] = [self._make(slot, 0, None) for slot in range(pods)]
        self._initial = tuple(self._pods)
        self._templates: dict[str, Template] = {}
        self._fragments: dict[str, Fragment] = {}
        self._pods_body: bytes | None = None
        self._cgroups: list[Cgroup] | None = None
        self._table_at: float | None = None
        self._table: tuple[list[float], list[bytes]] = ([], [])

    # -- public API -----------------------------------------------------------------------------------------

    def metrics(self) -> bytes:
        """``/metrics``: the kubelet's own registry."""
        return self._render(
            "metrics",
            lambda: build_metrics(
                self._pods,
                self._tb,
                node=self.node_name,
                version=self.kubelet_version,
                start=self._kubelet_start,
                churned=self._churned,
            ),
        )

    def cadvisor(self) -> bytes:
        """``/metrics/cadvisor``."""
        return self._render(
            "cadvisor",
            # Without churn the template is built once: keeping per-cgroup fragments would only cost memory.
            lambda: build_cadvisor(
                self._all_cgroups(), self.machine, self._tb, self._fragments if self._churn > 0 else None
            ),
        )

    def resource(self) -> bytes:
        """``/metrics/resource``."""

        def build() -> Template:
            cgs = {cg.labels["id"]: cg for cg in self._all_cgroups()}
            groups: list[tuple[str, dict[str, str], Cgroup]] = []
            for p in self._pods:
                for c in p.containers:
                    groups.append(
                        (
                            "container",
                            {"container": c.name, "namespace": p.namespace, "pod": p.name},
                            cgs[f"{p.cgroup}/{c.container_id}"],
                        )
                    )
                groups.append(("pod", {"namespace": p.namespace, "pod": p.name}, cgs[p.cgroup]))
            return build_resource(groups, cgs["/"], self._tb)

        return self._render("resource", build)

    def probes(self) -> bytes:
        """``/metrics/probes``."""
        return self._render("probes", lambda: build_probes(self._pods, self._tb, start=self._kubelet_start))

    def kube_proxy_metrics(self) -> bytes:
        """kube-proxy's ``:10249/metrics`` (plain HTTP in a real cluster)."""
        return self._render(
            "kube_proxy",
            lambda: build_kube_proxy(
                self._pods, self._tb, version=self.kubelet_version, start=self._proxy_start
            ),
        )

    def stats_summary(self) -> bytes:
        """``/stats/summary``: the Summary API JSON."""
        now = self._now()
        cgs = {cg.labels["id"]: cg for cg in self._all_cgroups()}
        tb = self._tb

        def at(cg: Cgroup) -> float:
            return tb.stats_time(cg.phase % PHASES, now)

        def usage(cg: Cgroup) -> float:
            return max(0.0, cg.cpu * (tb.counter(cg.kernel, at(cg)) - tb.counter(cg.kernel, cg.start)))

        def ws(cg: Cgroup) -> float:
            return cg.mem_ws + 0.08 * cg.mem_ws * tb.wave(cg.kernel, at(cg))

        def net(rate: float, cg: Cgroup) -> float:
            k = cg.kernel + 7
            return max(0.0, rate * (tb.counter(k, at(cg)) - tb.counter(k, cg.start)))

        return stats_summary(
            node=self.node_name,
            machine=self.machine,
            boot=self.boot,
            now=now,
            pods=self._pods,
            cgroups=cgs,
            root=cgs["/"],
            usage=usage,
            ws=ws,
            net=net,
            stats_time=at,
        )

    def pods_json(self) -> bytes:
        """``/pods``: a v1 PodList."""
        self._now()
        if self._pods_body is None:
            self._pods_body = pod_list(node=self.node_name, node_ip=self.node_ip, pods=self._pods)
        return self._pods_body

    def configz(self) -> bytes:
        """``/configz``: ``{"kubeletconfig": {...}}``."""
        return configz(node_ip=self.node_ip, version=self.kubelet_version)

    def pod_count(self) -> int:
        """How many pods the node runs (constant: churn replaces pods one for one)."""
        return len(self._pods)

    def pods(self) -> list[Pod]:
        """The pods running now (after applying any churn due at the current time)."""
        self._now()
        return list(self._pods)

    @property
    def churned(self) -> int:
        """How many pod replacements have happened so far."""
        return self._churned

    # -- internals ------------------------------------------------------------------------------------------

    def _make(self, slot: int, gen: int, born: float | None) -> Pod:
        return make_pod(
            self.node_name, self._seed, slot, gen, self._n, boot=self.boot, started=self._started, born=born,
            node_ip=self.node_ip,
        )

    def _now(self) -> float:
        """Read the clock and apply the churn due by then.

        A wall clock that steps back (NTP) is held at its latest reading, so no counter ever
        decreases; the emulated node simply pauses until time catches up.
        """
        now = max(self._clock.time(), self._latest)
        self._latest = now
        if self._churn > 0:
            self._apply_churn(now)
        return now

    def _apply_churn(self, now: float) -> None:
        interval = 60.0 / self._churn
        due = math.floor((now - self._started) / interval)
        if due <= self._churned:
            return
        first = daemonset_count(self._n)
        if first >= self._n:
            self._churned = due
            return
        # Pick the slot of every due event first, then draw only each slot's final generation: the result
        # does not depend on how the calls were spaced, and a long clock jump stays cheap.
        last_event: dict[int, int] = {}
        for n in range(self._churned + 1, due + 1):
            slot = random.Random(f"{self._seed}/{self.node_name}/churn/{n}").randrange(first, self._n)
            self._gens[slot] += 1
            last_event[slot] = n
        for slot, n in last_event.items():
            event = self._started + n * interval
            # Start at the earliest housekeeping time at or before the event: every phase's stats time is
            # then at or after the start, so counters begin at zero and never go negative.
            born = min(self._tb.stats_time(p, event) for p in range(PHASES))
            self._pods[slot] = self._make(slot, self._gens[slot], born)
        self._churned = due
        self._templates.clear()
        self._pods_body = None
        self._cgroups = None

    def _all_cgroups(self) -> list[Cgroup]:
        if self._cgroups is None:
            cgs = node_cgroups(self._initial, self._pods, self.machine, self.boot)
            for p in self._pods:
                cgs.extend(pod_cgroups(p))
            self._cgroups = cgs
        return self._cgroups

    def _render(self, key: str, build: Callable[[], Template]) -> bytes:
        now = self._now()
        tpl = self._templates.get(key)
        if tpl is None:
            tpl = build()
            self._templates[key] = tpl
        if now != self._table_at:
            self._table = self._tb.table(now)
            self._table_at = now
        return tpl.render(*self._table)


def _hex(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789abcdef") for _ in range(n))


def _uuid(rng: random.Random) -> str:
    h = _hex(rng, 32)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
