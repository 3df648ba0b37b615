"""The emulated node's pods: a deterministic catalog of realistic workloads and the pods drawn from it.

Each pod slot of a node holds one generation of a pod; churn moves a slot to its next generation
(new name, uid, container ids). Everything is drawn from ``random.Random`` seeded by
``(seed, node, slot, generation)``, so equal seeds give equal nodes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cached_property
from typing import Final

MI: Final = 1024 * 1024
PAUSE_IMAGE: Final = "registry.k8s.io/pause:3.9"
_RS_ALPHABET: Final = "bcdfghjklmnpqrstvwxz2456789"


@dataclass(frozen=True)
class ContainerSpec:
    """One container of a workload in the catalog (requests/limits in millicores and MiB; 0 = unset)."""

    name: str
    image: str
    cpu_req: int
    cpu_lim: int
    mem_req: int
    mem_lim: int
    cpu_use: float  # average cores
    mem_use: int  # average working set, MiB
    probes: tuple[str, ...] = ()
    port: int = 0


@dataclass(frozen=True)
class Workload:
    """A controller in the catalog and the containers of its pods."""

    namespace: str
    app: str
    kind: str  # DaemonSet, Deployment, StatefulSet, Job
    containers: tuple[ContainerSpec, ...]
    weight: int = 1
    pvc: str = ""


_ISTIO = ContainerSpec(
    "istio-proxy",
    "docker.io/istio/proxyv2:1.20.2",
    100,
    2000,
    128,
    1024,
    0.012,
    58,
    ("Readiness", "Startup"),
    15090,
)
_RBAC = ContainerSpec(
    "kube-rbac-proxy", "quay.io/brancz/kube-rbac-proxy:v0.15.0", 10, 20, 20, 40, 0.001, 17, ()
)

DAEMONSETS: Final[tuple[Workload, ...]] = (
    Workload(
        "kube-system",
        "kube-proxy",
        "DaemonSet",
        (ContainerSpec("kube-proxy", "registry.k8s.io/kube-proxy:v1.29.0", 0, 0, 0, 0, 0.004, 24),),
    ),
    Workload(
        "kube-system",
        "calico-node",
        "DaemonSet",
        (
            ContainerSpec(
                "calico-node",
                "docker.io/calico/node:v3.27.0",
                250,
                0,
                0,
                0,
                0.03,
                110,
                ("Liveness", "Readiness"),
            ),
        ),
    ),
    Workload(
        "monitoring",
        "node-exporter",
        "DaemonSet",
        (
            ContainerSpec(
                "node-exporter",
                "quay.io/prometheus/node-exporter:v1.7.0",
                102,
                250,
                180,
                180,
                0.006,
                21,
                ("Liveness", "Readiness"),
                9100,
            ),
            _RBAC,
        ),
    ),
    Workload(
        "logging",
        "fluent-bit",
        "DaemonSet",
        (
            ContainerSpec(
                "fluent-bit",
                "cr.fluentbit.io/fluent/fluent-bit:2.2.2",
                50,
                500,
                64,
                256,
                0.02,
                36,
                ("Liveness", "Readiness"),
                2020,
            ),
        ),
    ),
)

DEPLOYMENTS: Final[tuple[Workload, ...]] = (
    Workload(
        "kube-system",
        "coredns",
        "Deployment",
        (
            ContainerSpec(
                "coredns",
                "registry.k8s.io/coredns/coredns:v1.11.1",
                100,
                0,
                70,
                170,
                0.004,
                19,
                ("Liveness", "Readiness"),
                9153,
            ),
        ),
        2,
    ),
    Workload(
        "ingress-nginx",
        "ingress-nginx-controller",
        "Deployment",
        (
            ContainerSpec(
                "controller",
                "registry.k8s.io/ingress-nginx/controller:v1.9.5",
                100,
                0,
                90,
                0,
                0.02,
                140,
                ("Liveness", "Readiness"),
                10254,
            ),
        ),
        1,
    ),
    Workload(
        "default",
        "web-frontend",
        "Deployment",
        (
            ContainerSpec(
                "nginx",
                "docker.io/library/nginx:1.25.3",
                100,
                500,
                64,
                256,
                0.008,
                12,
                ("Liveness", "Readiness"),
                80,
            ),
            _ISTIO,
        ),
        4,
    ),
    Workload(
        "payments",
        "payments-api",
        "Deployment",
        (
            ContainerSpec(
                "payments-api",
                "ghcr.io/acme/payments-api:2.14.1",
                500,
                1000,
                512,
                1024,
                0.12,
                410,
                ("Liveness", "Readiness", "Startup"),
                8080,
            ),
            _ISTIO,
        ),
        4,
    ),
    Workload(
        "payments",
        "payments-worker",
        "Deployment",
        (
            ContainerSpec(
                "worker",
                "ghcr.io/acme/payments-worker:2.14.1",
                250,
                1000,
                256,
                512,
                0.08,
                230,
                ("Liveness",),
                8081,
            ),
        ),
        3,
    ),
    Workload(
        "shop",
        "cart-service",
        "Deployment",
        (
            ContainerSpec(
                "cart",
                "ghcr.io/acme/cart-service:1.8.0",
                200,
                800,
                256,
                512,
                0.05,
                180,
                ("Liveness", "Readiness"),
                8080,
            ),
            _ISTIO,
            ContainerSpec("cache-warmer", "ghcr.io/acme/cache-warmer:0.4.2", 10, 100, 32, 64, 0.002, 14),
        ),
        3,
    ),
    Workload(
        "shop",
        "catalog-service",
        "Deployment",
        (
            ContainerSpec(
                "catalog",
                "ghcr.io/acme/catalog:3.2.7",
                300,
                1500,
                384,
                768,
                0.09,
                300,
                ("Liveness", "Readiness"),
                8080,
            ),
        ),
        4,
    ),
    Workload(
        "shop",
        "search-api",
        "Deployment",
        (
            ContainerSpec(
                "search-api",
                "docker.io/acme/search-api:5.0.3",
                500,
                2000,
                1024,
                2048,
                0.2,
                820,
                ("Liveness", "Readiness"),
                9200,
            ),
            _ISTIO,
        ),
        2,
    ),
    Workload(
        "data",
        "redis",
        "StatefulSet",
        (
            ContainerSpec(
                "redis",
                "docker.io/library/redis:7.2.4",
                100,
                500,
                128,
                512,
                0.015,
                96,
                ("Liveness", "Readiness"),
                6379,
            ),
            ContainerSpec(
                "metrics", "docker.io/oliver006/redis_exporter:v1.56.0", 10, 100, 16, 64, 0.002, 11, (), 9121
            ),
        ),
        1,
        "redis-data",
    ),
    Workload(
        "data",
        "postgres",
        "StatefulSet",
        (
            ContainerSpec(
                "postgres",
                "docker.io/library/postgres:16.1",
                500,
                2000,
                1024,
                2048,
                0.15,
                640,
                ("Liveness", "Readiness"),
                5432,
            ),
            ContainerSpec(
                "exporter",
                "quay.io/prometheuscommunity/postgres-exporter:v0.15.0",
                10,
                100,
                32,
                64,
                0.003,
                19,
                (),
                9187,
            ),
        ),
        1,
        "pgdata",
    ),
    Workload(
        "monitoring",
        "kube-state-metrics",
        "Deployment",
        (
            ContainerSpec(
                "kube-state-metrics",
                "registry.k8s.io/kube-state-metrics/kube-state-metrics:v2.10.1",
                100,
                500,
                190,
                250,
                0.01,
                62,
                ("Liveness", "Readiness"),
                8080,
            ),
            _RBAC,
        ),
        1,
    ),
    Workload(
        "cert-manager",
        "cert-manager",
        "Deployment",
        (
            ContainerSpec(
                "cert-manager-controller",
                "quay.io/jetstack/cert-manager-controller:v1.13.3",
                10,
                0,
                32,
                0,
                0.002,
                33,
                ("Liveness",),
                9402,
            ),
        ),
        1,
    ),
    Workload(
        "default",
        "api-gateway",
        "Deployment",
        (
            ContainerSpec(
                "envoy",
                "docker.io/envoyproxy/envoy:v1.28.0",
                250,
                1000,
                128,
                512,
                0.04,
                75,
                ("Readiness",),
                8443,
            ),
        ),
        2,
    ),
    Workload(
        "batch",
        "report-generator",
        "Job",
        (ContainerSpec("report", "docker.io/library/python:3.12-slim", 0, 0, 0, 0, 0.05, 140),),
        1,
    ),
)


@dataclass(frozen=True)
class Container:
    """One running container on the node, with its drawn quantities."""

    spec: ContainerSpec
    container_id: str
    image_id: str
    start: float  # epoch seconds
    cpu: float  # average cores
    mem_ws: int  # bytes
    threads: int
    fds: int
    read_bps: float
    write_bps: float
    kernel: int
    restarts: int

    @property
    def name(self) -> str:
        """The container's name in the pod spec."""
        return self.spec.name


@dataclass(frozen=True)
class Pod:
    """One pod on the node."""

    slot: int
    generation: int
    workload: Workload
    name: str
    uid: str
    sandbox_id: str
    ip: str
    veth: str
    start: float  # epoch seconds
    phase: int  # cAdvisor housekeeping phase shared by its cgroups
    kernel: int
    rx_bps: float
    tx_bps: float
    containers: tuple[Container, ...]
    scrape: tuple[int, str] | None = None  # (port, path) of its prometheus.io/* annotations

    @property
    def annotations(self) -> dict[str, str]:
        """The ``prometheus.io/*`` annotations of an application pod that asks to be scraped."""
        if self.scrape is None:
            return {}
        port, path = self.scrape
        return {"prometheus.io/scrape": "true", "prometheus.io/port": str(port), "prometheus.io/path": path}

    @property
    def namespace(self) -> str:
        """The pod's namespace."""
        return self.workload.namespace

    @cached_property
    def qos(self) -> str:
        """``Guaranteed``, ``Burstable`` or ``BestEffort`` from its containers' resources."""
        specs = [c.spec for c in self.containers]
        if all(s.cpu_req == 0 and s.cpu_lim == 0 and s.mem_req == 0 and s.mem_lim == 0 for s in specs):
            return "BestEffort"
        if all(
            s.cpu_lim and s.mem_lim and s.cpu_req in (0, s.cpu_lim) and s.mem_req in (0, s.mem_lim)
            for s in specs
        ):
            return "Guaranteed"
        return "Burstable"

    @cached_property
    def cgroup(self) -> str:
        """The pod's cgroup path under the cgroupfs driver."""
        tier = {"Guaranteed": "", "Burstable": "/burstable", "BestEffort": "/besteffort"}[self.qos]
        return f"/kubepods{tier}/pod{self.uid}"


def _hex(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789abcdef") for _ in range(n))


def _uid(rng: random.Random) -> str:
    h = _hex(rng, 32)
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) % 4]}{h[17:20]}-{h[20:]}"


def _suffix(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(_RS_ALPHABET) for _ in range(n))


def scrape_endpoint(wl: Workload) -> tuple[int, str] | None:
    """The metrics port and path an annotated pod of ``wl`` would advertise (its first port >= 1024)."""
    for c in wl.containers:
        if c.port >= 1024:
            return c.port, "/stats/prometheus" if c.name == "istio-proxy" else "/metrics"
    return None


def app_pod_ip(node_ip: str, slot: int) -> str | None:
    """A loopback pod IP for slot ``slot`` of the node at ``127.0.a.b``: ``127.(64+a).b.(slot+1)``.

    Annotated pods get one so that their metrics endpoints can really answer on this machine; ``None``
    when the node is not on loopback or the slot does not fit.
    """
    parts = node_ip.split(".")
    if len(parts) != 4 or parts[0] != "127" or parts[1] != "0" or slot >= 254 or int(parts[2]) > 191:
        return None
    return f"127.{64 + int(parts[2])}.{parts[3]}.{slot + 1}"


def daemonset_count(pods: int) -> int:
    """How many of a node's pod slots run the node's DaemonSets (never replaced by churn)."""
    return min(len(DAEMONSETS), pods // 3)


def make_pod(
    node: str,
    seed: int,
    slot: int,
    generation: int,
    pods: int,
    *,
    boot: float,
    started: float,
    born: float | None,
    node_ip: str = "",
) -> Pod:
    """Draw the pod in ``slot`` at ``generation``.

    ``born`` is its start time for pods created by churn; ``None`` means it was already running
    when the emulator started (at ``started``), having started at some point after ``boot``.
    Every third slot whose workload has a metrics port is annotated for scraping when ``node_ip`` is on
    loopback (see :func:`app_pod_ip`).
    """
    rng = random.Random(f"{seed}/{node}/{slot}/{generation}")
    if slot < daemonset_count(pods):
        wl = DAEMONSETS[slot]
        name = f"{wl.app}-{_suffix(rng, 5)}"
    else:
        wl = rng.choices(DEPLOYMENTS, weights=[w.weight for w in DEPLOYMENTS])[0]
        if wl.kind == "StatefulSet":
            # Ordinals unique across a fleet (node k's seed is k): two nodes never run the same pod name.
            name = f"{wl.app}-{max(seed - 1, 0) * pods + slot}"
        elif wl.kind == "Job":
            name = f"{wl.app}-{rng.randrange(28_000_000, 29_000_000)}-{_suffix(rng, 5)}"
        else:
            # The ReplicaSet hash is per workload and node epoch, the pod suffix per pod.
            rs = random.Random(f"{seed}/{node}/{wl.app}").choice(range(10**6))
            name = f"{wl.app}-{_suffix(random.Random(rs), 10)}-{_suffix(rng, 5)}"
    start = born if born is not None else boot + 120 + rng.random() * max(60.0, 0.9 * (started - boot - 120))
    containers = []
    for i, spec in enumerate(wl.containers):
        jitter = 0.5 + rng.random()
        containers.append(
            Container(
                spec=spec,
                container_id=_hex(rng, 64),
                image_id=f"sha256:{_hex(rng, 64)}",
                # Churned pods start their containers with the sandbox so no sample predates a start.
                start=start if born is not None else start + 1.0 + i * 0.4 + rng.random(),
                cpu=spec.cpu_use * jitter,
                mem_ws=int(spec.mem_use * MI * (0.8 + 0.4 * rng.random())),
                threads=rng.randint(4, 60),
                fds=rng.randint(8, 120),
                read_bps=rng.choice((0.0, 0.0, 512.0, 4096.0)) * jitter,
                write_bps=rng.choice((0.0, 1024.0, 8192.0, 65536.0)) * jitter,
                kernel=rng.randrange(1 << 16),
                restarts=rng.choice((0, 0, 0, 0, 0, 1, 2)) if born is None else 0,
            )
        )
    uid = _uid(rng)
    ip = f"10.{rng.randrange(32, 64)}.{rng.randrange(256)}.{rng.randrange(2, 254)}"
    scrape = scrape_endpoint(wl) if slot % 3 == 2 else None
    app_ip = app_pod_ip(node_ip, slot) if scrape is not None else None
    if app_ip is None:
        scrape = None
    return Pod(
        slot=slot,
        generation=generation,
        workload=wl,
        name=name,
        uid=uid,
        sandbox_id=_hex(rng, 64),
        ip=app_ip or ip,
        veth=f"cali{_hex(rng, 11)}",
        start=start,
        phase=rng.randrange(1 << 16),
        kernel=rng.randrange(1 << 16),
        rx_bps=rng.choice((2e3, 2e4, 1.5e5)) * (0.5 + rng.random()),
        tx_bps=rng.choice((1e3, 1.5e4, 1e5)) * (0.5 + rng.random()),
        containers=tuple(containers),
        scrape=scrape,
    )
