"""The kubelet's own registries (``/metrics``, ``/metrics/resource``, ``/metrics/probes``) and kube-proxy's.

Families, label names, buckets and the ``[ALPHA]``/``[BETA]``/``[STABLE]`` HELP prefixes follow
kubelet/kube-proxy v1.29 (component-base registries); process_* and go_* come from the Go client's
collectors and carry no stability prefix. Only ``/metrics/resource`` carries timestamps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from kubescrape.emulator.payloads_cadvisor import Cgroup
from kubescrape.emulator.payloads_pods import Pod
from kubescrape.emulator.payloads_render import (
    NOW_S,
    PHASES,
    Template,
    TextBuilder,
    Timebase,
    counter_slot,
    labels_text,
    ts_slot,
    wave_slot,
)

DEF_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


def exp_buckets(start: float, factor: float, count: int) -> list[float]:
    """Prometheus' ``ExponentialBuckets``."""
    return [start * factor**i for i in range(count)]


def lognormal_cdf(buckets: Sequence[float], median: float, sigma: float = 0.8) -> list[float]:
    """Fraction of observations at or below each bucket for a log-normal latency distribution."""
    out = []
    for le in buckets:
        if le <= 0:
            out.append(0.0)
            continue
        z = (math.log(le) - math.log(median)) / (sigma * math.sqrt(2))
        out.append(0.5 * (1 + math.erf(z)))
    return out


@dataclass(frozen=True)
class Process:
    """What the Go process collectors report for one binary."""

    start: float
    rss: float
    cpu: float  # cores
    goroutines: int
    kernel: int
    go_version: str = "go1.21.5"


def _ctr(tb: Timebase, rate: float, kernel: int, since: float, init: float = 0.0) -> tuple[float, float, int]:
    """A counter at scrape time: ``init`` at ``since``, growing by ``rate`` per second on average."""
    return (init - rate * tb.counter(kernel, since), rate, counter_slot(kernel))


def _hist(
    b: TextBuilder,
    tb: Timebase,
    fam: str,
    labels: dict[str, str],
    buckets: Sequence[float],
    rate: float,
    median: float,
    kernel: int,
    since: float,
    sigma: float = 0.8,
) -> None:
    b.histogram(
        fam,
        labels,
        buckets,
        lognormal_cdf(buckets, median, sigma),
        _ctr(tb, rate, kernel, since),
        median * math.exp(sigma * sigma / 2),
    )


def go_and_process(b: TextBuilder, tb: Timebase, proc: Process) -> None:
    """process_* and go_* families of a Go binary."""
    k = proc.kernel
    s = proc.start
    fams = {
        "go_gc_duration_seconds": (
            "summary",
            "A summary of the pause duration of garbage collection cycles.",
        ),
        "go_goroutines": ("gauge", "Number of goroutines that currently exist."),
        "go_info": ("gauge", "Information about the Go environment."),
        "go_memstats_alloc_bytes": ("gauge", "Number of bytes allocated and still in use."),
        "go_memstats_alloc_bytes_total": ("counter", "Total number of bytes allocated, even if freed."),
        "go_memstats_frees_total": ("counter", "Total number of frees."),
        "go_memstats_gc_sys_bytes": ("gauge", "Number of bytes used for garbage collection system metadata."),
        "go_memstats_heap_alloc_bytes": ("gauge", "Number of heap bytes allocated and still in use."),
        "go_memstats_heap_idle_bytes": ("gauge", "Number of heap bytes waiting to be used."),
        "go_memstats_heap_inuse_bytes": ("gauge", "Number of heap bytes that are in use."),
        "go_memstats_heap_objects": ("gauge", "Number of allocated objects."),
        "go_memstats_heap_sys_bytes": ("gauge", "Number of heap bytes obtained from system."),
        "go_memstats_last_gc_time_seconds": (
            "gauge",
            "Number of seconds since 1970 of last garbage collection.",
        ),
        "go_memstats_mallocs_total": ("counter", "Total number of mallocs."),
        "go_memstats_next_gc_bytes": (
            "gauge",
            "Number of heap bytes when next garbage collection will take place.",
        ),
        "go_memstats_stack_inuse_bytes": ("gauge", "Number of bytes in use by the stack allocator."),
        "go_memstats_sys_bytes": ("gauge", "Number of bytes obtained from system."),
        "go_threads": ("gauge", "Number of OS threads created."),
        "process_cpu_seconds_total": ("counter", "Total user and system CPU time spent in seconds."),
        "process_max_fds": ("gauge", "Maximum number of open file descriptors."),
        "process_open_fds": ("gauge", "Number of open file descriptors."),
        "process_resident_memory_bytes": ("gauge", "Resident memory size in bytes."),
        "process_start_time_seconds": ("gauge", "Start time of the process since unix epoch in seconds."),
        "process_virtual_memory_bytes": ("gauge", "Virtual memory size in bytes."),
        "process_virtual_memory_max_bytes": ("gauge", "Maximum amount of virtual memory available in bytes."),
    }
    for name, (mtype, help_text) in fams.items():
        b.family(name, mtype, help_text)

    def one(fam: str, value: tuple[float, float, int] | float, fmt: str = "%.12g", labels: str = "") -> None:
        b.sample(fam, fam, labels, value, fmt=fmt)

    gc_rate = 0.05
    for i, q in enumerate(("0", "0.25", "0.5", "0.75", "1")):
        one(
            "go_gc_duration_seconds",
            (2.1e-05 * (1 + i) ** 1.6, 1e-06 * (1 + i), wave_slot(k + 3)),
            labels=labels_text({"quantile": q}),
        )
    b.sample("go_gc_duration_seconds", "go_gc_duration_seconds_sum", "", _ctr(tb, gc_rate * 9e-05, k, s))
    b.sample("go_gc_duration_seconds", "go_gc_duration_seconds_count", "", _ctr(tb, gc_rate, k, s), fmt="%d")
    one("go_goroutines", (proc.goroutines, 6.0, wave_slot(k + 1)), "%.0f")
    one("go_info", 1, labels=labels_text({"version": proc.go_version}))
    heap = proc.rss * 0.45
    one("go_memstats_alloc_bytes", (heap, heap * 0.2, wave_slot(k + 2)), "%d")
    one("go_memstats_alloc_bytes_total", _ctr(tb, 2.5e6, k, s), "%d")
    one("go_memstats_frees_total", _ctr(tb, 2.4e4, k, s), "%d")
    one("go_memstats_gc_sys_bytes", math.floor(proc.rss * 0.04))
    one("go_memstats_heap_alloc_bytes", (heap, heap * 0.2, wave_slot(k + 2)), "%d")
    one("go_memstats_heap_idle_bytes", (heap * 0.6, heap * 0.15, wave_slot(k + 4)), "%d")
    one("go_memstats_heap_inuse_bytes", (heap * 1.1, heap * 0.2, wave_slot(k + 2)), "%d")
    one("go_memstats_heap_objects", (heap / 180, heap / 900, wave_slot(k + 2)), "%d")
    one("go_memstats_heap_sys_bytes", math.floor(heap * 1.9))
    one("go_memstats_last_gc_time_seconds", (-9.5, 1.0, NOW_S))
    one("go_memstats_mallocs_total", _ctr(tb, 2.42e4, k, s, 50_000.0), "%d")
    one("go_memstats_next_gc_bytes", math.floor(heap * 1.6))
    one("go_memstats_stack_inuse_bytes", math.floor(proc.goroutines * 8192 * 1.3))
    one("go_memstats_sys_bytes", math.floor(proc.rss * 1.35))
    one("go_threads", 14 + k % 20)
    one("process_cpu_seconds_total", _ctr(tb, proc.cpu, k + 5, s), "%.2f")
    one("process_max_fds", 1048576)
    one("process_open_fds", (40 + k % 30, 3.0, wave_slot(k + 6)), "%.0f")
    one("process_resident_memory_bytes", (proc.rss, proc.rss * 0.06, wave_slot(k + 7)), "%d")
    one("process_start_time_seconds", round(proc.start, 2))
    one("process_virtual_memory_bytes", math.floor(proc.rss * 25))
    one("process_virtual_memory_max_bytes", 1.8446744073709552e19)


def build_info(b: TextBuilder, version: str) -> None:
    """``kubernetes_build_info`` for a component of ``version`` (``v1.29.0``)."""
    fam = "kubernetes_build_info"
    b.family(
        fam,
        "gauge",
        "[ALPHA] A metric with a constant '1' value labeled by major, minor, git version, "
        "git commit, git tree state, build date, Go version, and compiler from which "
        "Kubernetes was built, and platform on which it is running.",
    )
    major, minor = version.lstrip("v").split(".")[:2]
    b.sample(
        fam,
        fam,
        labels_text(
            {
                "build_date": "2023-12-13T08:43:32Z",
                "compiler": "gc",
                "git_commit": "3f7a50f38688eb332e2a1b013678c6435d539ae6",
                "git_tree_state": "clean",
                "git_version": version,
                "go_version": "go1.21.5",
                "major": major,
                "minor": minor,
                "platform": "linux/amd64",
            }
        ),
        1,
    )


def rest_client(
    b: TextBuilder, tb: Timebase, host: str, verbs: dict[str, float], since: float, k: int
) -> None:
    """rest_client_* families: the component talking to the apiserver at ``host``."""
    fam = "rest_client_requests_total"
    b.family(fam, "counter", "[ALPHA] Number of HTTP requests, partitioned by status code, method, and host.")
    methods = {
        "get": "GET",
        "list": "GET",
        "watch": "GET",
        "patch": "PATCH",
        "update": "PUT",
        "create": "POST",
    }
    per_method: dict[str, float] = {}
    for verb, rate in verbs.items():
        per_method[methods[verb]] = per_method.get(methods[verb], 0.0) + rate
    for i, (method, rate) in enumerate(sorted(per_method.items())):
        b.sample(
            fam,
            fam,
            labels_text({"code": "200", "host": host, "method": method}),
            _ctr(tb, rate, k + i, since, 3.0),
            fmt="%d",
        )
        if method in ("GET", "PATCH"):
            b.sample(
                fam,
                fam,
                labels_text({"code": "404" if method == "GET" else "409", "host": host, "method": method}),
                _ctr(tb, rate * 0.002, k + i, since, 1.0),
                fmt="%d",
            )
    b.sample(fam, fam, labels_text({"code": "<error>", "host": host, "method": "GET"}), 4.0)
    dur = "rest_client_request_duration_seconds"
    b.family(dur, "histogram", "[ALPHA] Request latency in seconds. Broken down by verb, and host.")
    size_buckets = (0.005, 0.025, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60)
    for i, (method, rate) in enumerate(sorted(per_method.items())):
        _hist(b, tb, dur, {"host": host, "verb": method}, size_buckets, rate, 0.009, k + i, since)


def build_metrics(
    pods: Sequence[Pod], tb: Timebase, *, node: str, version: str, start: float, churned: int
) -> Template:
    """The template of the kubelet's ``/metrics`` for this set of pods."""
    b = TextBuilder()
    k0 = 11
    containers = sum(len(p.containers) for p in pods)
    b.family(
        "apiserver_audit_event_total",
        "counter",
        "[ALPHA] Counter of audit events generated and sent to the audit backend.",
    )
    b.sample("apiserver_audit_event_total", "apiserver_audit_event_total", "", 0)
    b.family(
        "apiserver_audit_requests_rejected_total",
        "counter",
        "[ALPHA] Counter of apiserver requests rejected due to an error in audit logging backend.",
    )
    b.sample("apiserver_audit_requests_rejected_total", "apiserver_audit_requests_rejected_total", "", 0)
    fam = "apiserver_client_certificate_expiration_seconds"
    b.family(
        fam,
        "histogram",
        "[ALPHA] Distribution of the remaining lifetime on the certificate used to authenticate a request.",
    )
    cert_buckets = (
        0,
        1800,
        3600,
        7200,
        21600,
        43200,
        86400,
        172800,
        345600,
        604800,
        2592000,
        7776000,
        15552000,
        31104000,
    )
    b.histogram(fam, {}, cert_buckets, [0.0] * 12 + [0.04, 1.0], _ctr(tb, 0.05, k0, start), 2.2e7)
    for kind in ("authn", "authz"):
        fam = f"apiserver_delegated_{kind}_request_duration_seconds"
        b.family(fam, "histogram", "[ALPHA] Request latency in seconds. Broken down by status code.")
        _hist(b, tb, fam, {"code": "201"}, (0.25, 0.5, 0.7, 1, 1.5, 3, 5, 10), 0.0012, 0.004, k0 + 1, start)
        fam = f"apiserver_delegated_{kind}_request_total"
        b.family(fam, "counter", "[ALPHA] Number of HTTP requests partitioned by status code.")
        b.sample(fam, fam, labels_text({"code": "201"}), _ctr(tb, 0.0012, k0 + 1, start, 1.0), fmt="%d")

    # Webhook token authentication caches TokenReview results: hits on most scrapes, a miss per TTL.
    for fam, mtype in (
        ("authentication_token_cache_active_fetch_count", "gauge"),
        ("authentication_token_cache_fetch_total", "counter"),
        ("authentication_token_cache_request_duration_seconds", "histogram"),
        ("authentication_token_cache_request_total", "counter"),
    ):
        b.family(fam, mtype, "[ALPHA] ")
    for status in ("blocked", "in_flight"):
        fam = "authentication_token_cache_active_fetch_count"
        b.sample(fam, fam, labels_text({"status": status}), 0)
    fam = "authentication_token_cache_fetch_total"
    b.sample(fam, fam, labels_text({"status": "ok"}), _ctr(tb, 1 / 120, k0 + 4, start, 1.0), fmt="%d")
    for status, rate, median in (("hit", 0.3, 0.00002), ("miss", 1 / 120, 0.008)):
        _hist(
            b,
            tb,
            "authentication_token_cache_request_duration_seconds",
            {"status": status},
            DEF_BUCKETS,
            rate,
            median,
            k0 + 4,
            start,
        )
        fam = "authentication_token_cache_request_total"
        b.sample(fam, fam, labels_text({"status": status}), _ctr(tb, rate, k0 + 4, start), fmt="%d")
    fam = "kubelet_certificate_manager_client_expiration_renew_errors"
    b.family(fam, "counter", "[ALPHA] Counter of certificate renewal errors.")
    b.sample(fam, fam, "", 0)
    fam = "kubelet_certificate_manager_client_ttl_seconds"
    b.family(
        fam,
        "gauge",
        "[ALPHA] Gauge of the TTL (time-to-live) of the Kubelet's client certificate. The "
        "value is in seconds until certificate expiry (negative if already expired). If client "
        "certificate is invalid or unused, the value will be +INF.",
    )
    b.sample(fam, fam, "", (start + 3.1e7, -1.0, NOW_S), fmt="%d")
    fam = "kubelet_certificate_manager_server_ttl_seconds"
    b.family(
        fam,
        "gauge",
        "[ALPHA] Gauge of the shortest TTL (time-to-live) of the Kubelet's serving "
        "certificate. The value is in seconds until certificate expiry (negative if already "
        "expired). If serving certificate is invalid or unused, the value will be +INF.",
    )
    b.sample(fam, fam, "", (start + 2.9e7, -1.0, NOW_S), fmt="%d")
    fam = "kubelet_cgroup_manager_duration_seconds"
    b.family(
        fam, "histogram", "[ALPHA] Duration in seconds for cgroup manager operations. Broken down by method."
    )
    for i, (op, rate) in enumerate((("create", 0.0004), ("destroy", 0.0002), ("update", 0.017))):
        _hist(b, tb, fam, {"operation_type": op}, DEF_BUCKETS, rate, 0.012, k0 + i, start)
    fam = "kubelet_container_log_filesystem_used_bytes"
    b.family(fam, "gauge", "[ALPHA] Bytes used by the container's logs on the filesystem.")
    for p in pods:
        for c in p.containers:
            b.sample(
                fam,
                fam,
                labels_text({"container": c.name, "namespace": p.namespace, "pod": p.name, "uid": p.uid}),
                (4096.0 + (c.kernel % 97) * 24576, 0.0, 0),
                fmt="%d",
            )
    fam = "kubelet_containers_per_pod_count"
    b.family(fam, "histogram", "[ALPHA] The number of containers per pod.")
    n = max(1, len(pods))
    cdf = [sum(1 for p in pods if len(p.containers) <= le) / n for le in (1, 2, 4, 8, 16)]
    b.histogram(fam, {}, (1, 2, 4, 8, 16), cdf, (float(len(pods) + churned), 0.0, 0), containers / n)
    paths = ("metrics", "metrics/cadvisor", "metrics/probes", "metrics/resource", "pods", "stats")
    fam = "kubelet_http_inflight_requests"
    b.family(fam, "gauge", "[ALPHA] Number of the inflight http requests")
    fam2 = "kubelet_http_requests_total"
    b.family(fam2, "counter", "[ALPHA] Number of the http requests received since the server started")
    fam3 = "kubelet_http_requests_duration_seconds"
    b.family(fam3, "histogram", "[ALPHA] Duration in seconds to serve http requests")
    for i, path in enumerate(paths):
        lab = {"long_running": "false", "method": "GET", "path": path, "server_type": "readwrite"}
        b.sample(fam, fam, labels_text(lab), 0)
        rate = 0.2 if path != "pods" else 0.05
        b.sample(fam2, fam2, labels_text(lab), _ctr(tb, rate, k0 + i, start), fmt="%d")
        _hist(
            b, tb, fam3, lab, DEF_BUCKETS, rate, 0.03 if path == "metrics/cadvisor" else 0.006, k0 + i, start
        )
    fam = "kubelet_node_name"
    b.family(fam, "gauge", "[ALPHA] The node's name. The count is always 1.")
    b.sample(fam, fam, labels_text({"node": node}), 1)
    for fam, help_text in (
        ("kubelet_pleg_discard_events", "The number of discard events in PLEG."),
        (
            "kubelet_managed_ephemeral_containers",
            "Current number of ephemeral containers in pods managed by this kubelet.",
        ),
    ):
        b.family(fam, "counter" if "events" in fam else "gauge", f"[ALPHA] {help_text}")
        b.sample(fam, fam, "", 0)
    fam = "kubelet_pleg_last_seen_seconds"
    b.family(fam, "gauge", "[ALPHA] Timestamp in seconds when PLEG was last seen active.")
    b.sample(fam, fam, "", (-0.4, 1.0, NOW_S), fmt="%.9f")
    pleg_buckets = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
    fam = "kubelet_pleg_relist_duration_seconds"
    b.family(fam, "histogram", "[ALPHA] Duration in seconds for relisting pods in PLEG.")
    _hist(b, tb, fam, {}, pleg_buckets, 1.0, 0.004 + 0.0001 * len(pods), k0, start, 0.5)
    fam = "kubelet_pleg_relist_interval_seconds"
    b.family(fam, "histogram", "[ALPHA] Interval in seconds between relisting in PLEG.")
    _hist(b, tb, fam, {}, pleg_buckets, 1.0, 1.006, k0, start, 0.01)
    pod_buckets = (
        0.5,
        1,
        2,
        3,
        4,
        5,
        6,
        8,
        10,
        20,
        30,
        45,
        60,
        120,
        180,
        240,
        300,
        360,
        480,
        600,
        900,
        1200,
        1800,
        2700,
        3600,
    )
    started = float(len(pods) + churned)
    for fam, help_text, median in (
        (
            "kubelet_pod_start_duration_seconds",
            "Duration in seconds from kubelet seeing a pod for the first time to the pod starting to run",
            2.6,
        ),
        (
            "kubelet_pod_start_sli_duration_seconds",
            "Duration in seconds to start a pod, excluding time to "
            "pull images and run init containers, measured from pod "
            "creation timestamp to when all its containers are "
            "reported as started and observed via watch",
            1.9,
        ),
    ):
        b.family(fam, "histogram", f"[ALPHA] {help_text}")
        b.histogram(fam, {}, pod_buckets, lognormal_cdf(pod_buckets, median), (started, 0.0, 0), median * 1.4)
    fam = "kubelet_pod_worker_duration_seconds"
    b.family(
        fam,
        "histogram",
        "[ALPHA] Duration in seconds to sync a single pod. Broken down by operation type: "
        "create, update, or sync",
    )
    for i, (op, rate) in enumerate((("create", 0.0), ("sync", 0.1 * len(pods) / 10 + 0.01), ("update", 0.0))):
        if rate:
            _hist(b, tb, fam, {"operation_type": op}, DEF_BUCKETS, rate, 0.03, k0 + i, start)
        else:
            b.histogram(
                fam,
                {"operation_type": op},
                DEF_BUCKETS,
                lognormal_cdf(DEF_BUCKETS, 0.8),
                (started if op == "create" else started * 2, 0.0, 0),
                1.1,
            )
    fam = "kubelet_pod_worker_start_duration_seconds"
    b.family(fam, "histogram", "[ALPHA] Duration in seconds from kubelet seeing a pod to starting a worker.")
    b.histogram(fam, {}, DEF_BUCKETS, lognormal_cdf(DEF_BUCKETS, 0.00004), (started, 0.0, 0), 0.00005)
    fam = "kubelet_running_containers"
    b.family(fam, "gauge", "[ALPHA] Number of containers currently running")
    restarted = sum(c.restarts > 0 for p in pods for c in p.containers)
    for state, v in (("created", 0), ("exited", restarted), ("running", containers), ("unknown", 0)):
        b.sample(fam, fam, labels_text({"container_state": state}), v)
    fam = "kubelet_running_pods"
    b.family(fam, "gauge", "[ALPHA] Number of pods that have a running pod sandbox")
    b.sample(fam, fam, "", len(pods))
    ops = {
        "container_status": 0.3,
        "create_container": 0.0,
        "exec_sync": 0.02,
        "image_status": 0.001,
        "list_containers": 1.1,
        "list_images": 0.2,
        "list_podsandbox": 1.2,
        "list_podsandbox_stats": 0.07,
        "podsandbox_status": 0.4,
        "pull_image": 0.0,
        "remove_container": 0.0,
        "run_podsandbox": 0.0,
        "start_container": 0.0,
        "status": 0.2,
        "stop_podsandbox": 0.0,
        "version": 0.2,
    }
    rt_buckets = exp_buckets(0.005, 2.5, 14)
    fam = "kubelet_runtime_operations_duration_seconds"
    b.family(
        fam, "histogram", "[ALPHA] Duration in seconds of runtime operations. Broken down by operation type."
    )
    fam2 = "kubelet_runtime_operations_errors_total"
    b.family(fam2, "counter", "[ALPHA] Cumulative number of runtime operation errors by operation type.")
    fam3 = "kubelet_runtime_operations_total"
    b.family(fam3, "counter", "[ALPHA] Cumulative number of runtime operations by operation type.")
    for i, (op, rate) in enumerate(ops.items()):
        lab = {"operation_type": op}
        if rate:
            _hist(b, tb, fam, lab, rt_buckets, rate, 0.004 if op != "exec_sync" else 0.03, k0 + i, start)
            b.sample(fam3, fam3, labels_text(lab), _ctr(tb, rate, k0 + i, start), fmt="%d")
        else:
            count = started * (1 + len(pods and pods[0].containers)) if op != "pull_image" else 7.0
            b.histogram(
                fam,
                lab,
                rt_buckets,
                lognormal_cdf(rt_buckets, 0.05 if op != "pull_image" else 6.0),
                (count, 0.0, 0),
                0.07 if op != "pull_image" else 8.0,
            )
            b.sample(fam3, fam3, labels_text(lab), count)
    b.sample(fam2, fam2, labels_text({"operation_type": "container_status"}), 3)
    b.sample(fam2, fam2, labels_text({"operation_type": "exec_sync"}), 11)
    fam = "kubelet_started_containers_total"
    b.family(fam, "counter", "[ALPHA] Cumulative number of containers started")
    b.sample(
        fam, fam, labels_text({"container_type": "container"}), float(containers + restarted + churned * 2)
    )
    b.sample(fam, fam, labels_text({"container_type": "podsandbox"}), started)
    fam = "kubelet_started_pods_total"
    b.family(fam, "counter", "[ALPHA] Cumulative number of pods started")
    b.sample(fam, fam, "", started)
    vols = [
        ("kubelet_volume_stats_available_bytes", "Number of available bytes in the volume"),
        ("kubelet_volume_stats_capacity_bytes", "Capacity in bytes of the volume"),
        ("kubelet_volume_stats_inodes", "Maximum number of inodes in the volume"),
        ("kubelet_volume_stats_inodes_free", "Number of free inodes in the volume"),
        ("kubelet_volume_stats_inodes_used", "Number of used inodes in the volume"),
        ("kubelet_volume_stats_used_bytes", "Number of used bytes in the volume"),
    ]
    for fam, help_text in vols:
        b.family(fam, "gauge", f"[ALPHA] {help_text}")
    for p in pods:
        if not p.workload.pvc:
            continue
        vlab = labels_text({"namespace": p.namespace, "persistentvolumeclaim": f"{p.workload.pvc}-{p.name}"})
        cap = 10_464_022_528.0
        used = 1.2e9 + (p.kernel % 50) * 1e8
        w = wave_slot(p.kernel)
        b.sample(vols[0][0], vols[0][0], vlab, (cap - used, -2e5, w), fmt="%d")
        b.sample(vols[1][0], vols[1][0], vlab, cap)
        b.sample(vols[2][0], vols[2][0], vlab, 655360)
        b.sample(vols[3][0], vols[3][0], vlab, 655360 - 1200 - p.kernel % 800)
        b.sample(vols[4][0], vols[4][0], vlab, 1200 + p.kernel % 800)
        b.sample(vols[5][0], vols[5][0], vlab, (used, 2e5, w), fmt="%d")
    fam = "kubernetes_feature_enabled"
    b.family(
        fam, "gauge", "[BETA] This metric records the data about the stage and enablement of a k8s feature."
    )
    for name, stage, on in FEATURES:
        b.sample(fam, fam, labels_text({"name": name, "stage": stage}), int(on))
    build_info(b, version)
    fam = "registered_metrics_total"
    b.family(
        fam,
        "counter",
        "[BETA] The count of registered metrics broken by stability level and deprecation version.",
    )
    for lvl, v in (("ALPHA", 179), ("BETA", 4), ("STABLE", 11)):
        b.sample(fam, fam, labels_text({"deprecated_version": "", "stability_level": lvl}), v)
    rest_client(
        b,
        tb,
        "10.0.0.1:443",
        {"get": 0.15, "list": 0.01, "watch": 0.004, "patch": 0.08, "create": 0.002},
        start,
        k0 + 2,
    )
    fam = "storage_operation_duration_seconds"
    b.family(fam, "histogram", "[ALPHA] Storage operation duration")
    st_buckets = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 25, 50, 120, 300, 600)
    for plugin, ops_ in (
        ("kubernetes.io/configmap", ("volume_mount",)),
        ("kubernetes.io/projected", ("volume_mount", "volume_unmount")),
        ("kubernetes.io/csi:ebs.csi.aws.com", ("volume_attach", "volume_mount")),
    ):
        for op in ops_:
            lab = {"migrated": "false", "operation_name": op, "status": "success", "volume_plugin": plugin}
            b.histogram(
                fam,
                lab,
                st_buckets,
                lognormal_cdf(st_buckets, 0.04 if "csi" not in plugin else 1.5),
                (started * (2 if "projected" in plugin else 1), 0.0, 0),
                0.05,
            )
    fam = "volume_manager_total_volumes"
    b.family(fam, "gauge", "[ALPHA] Number of volumes in Volume Manager")
    pvcs = sum(1 for p in pods if p.workload.pvc)
    for plugin, v in (
        ("kubernetes.io/configmap", len(pods) // 2),
        ("kubernetes.io/csi", pvcs),
        ("kubernetes.io/empty-dir", len(pods) // 3),
        ("kubernetes.io/projected", len(pods)),
    ):
        for state in ("actual_state_of_world", "desired_state_of_world"):
            b.sample(fam, fam, labels_text({"plugin_name": plugin, "state": state}), v)
    go_and_process(
        b,
        tb,
        Process(
            start=start,
            rss=90e6 + 4e5 * len(pods),
            cpu=0.03 + 0.0005 * len(pods),
            goroutines=300 + 6 * len(pods),
            kernel=k0 + 3,
        ),
    )
    return b.build()


FEATURES: tuple[tuple[str, str, bool], ...] = (
    ("APIListChunking", "", True),
    ("APIPriorityAndFairness", "", True),
    ("AllAlpha", "ALPHA", False),
    ("AllBeta", "BETA", False),
    ("CPUManager", "", True),
    ("CPUManagerPolicyAlphaOptions", "ALPHA", False),
    ("CPUManagerPolicyBetaOptions", "BETA", True),
    ("CloudDualStackNodeIPs", "ALPHA", False),
    ("ContainerCheckpoint", "ALPHA", False),
    ("CronJobsScheduledAnnotation", "BETA", True),
    ("DevicePluginCDIDevices", "BETA", True),
    ("DisableCloudProviders", "BETA", True),
    ("DisableKubeletCloudCredentialProviders", "BETA", True),
    ("DownwardAPIHugePages", "", True),
    ("EventedPLEG", "BETA", False),
    ("GracefulNodeShutdown", "BETA", True),
    ("GracefulNodeShutdownBasedOnPodPriority", "BETA", True),
    ("HPAContainerMetrics", "BETA", True),
    ("InPlacePodVerticalScaling", "ALPHA", False),
    ("KubeletInUserNamespace", "ALPHA", False),
    ("KubeletPodResourcesDynamicResources", "ALPHA", False),
    ("KubeletPodResourcesGet", "ALPHA", False),
    ("KubeletTracing", "BETA", True),
    ("LegacyServiceAccountTokenCleanUp", "BETA", True),
    ("LocalStorageCapacityIsolationFSQuotaMonitoring", "ALPHA", False),
    ("MemoryManager", "BETA", True),
    ("MemoryQoS", "ALPHA", False),
    ("NodeInclusionPolicyInPodTopologySpread", "BETA", True),
    ("NodeSwap", "BETA", False),
    ("PodAndContainerStatsFromCRI", "ALPHA", False),
    ("PodDisruptionConditions", "BETA", True),
    ("PodHostIPs", "ALPHA", False),
    ("PodReadyToStartContainersCondition", "BETA", True),
    ("PodSchedulingReadiness", "BETA", True),
    ("ProcMountType", "ALPHA", False),
    ("RotateKubeletServerCertificate", "BETA", True),
    ("SidecarContainers", "BETA", True),
    ("SizeMemoryBackedVolumes", "BETA", True),
    ("TopologyManagerPolicyAlphaOptions", "ALPHA", False),
    ("TopologyManagerPolicyBetaOptions", "BETA", True),
    ("UnknownVersionInteroperabilityProxy", "ALPHA", False),
    ("UserNamespacesSupport", "ALPHA", False),
    ("WatchList", "ALPHA", False),
    ("WinDSR", "ALPHA", False),
    ("WinOverlay", "BETA", True),
)


def build_resource(
    groups: Sequence[tuple[str, dict[str, str], Cgroup]], root: Cgroup, tb: Timebase
) -> Template:
    """The template of ``/metrics/resource``; ``groups`` are ``("container"|"pod", labels, cgroup)``."""
    b = TextBuilder()
    fams = (
        (
            "container_cpu_usage_seconds_total",
            "counter",
            "[STABLE] Cumulative cpu time consumed by the container in core-seconds",
        ),
        (
            "container_memory_working_set_bytes",
            "gauge",
            "[STABLE] Current working set of the container in bytes",
        ),
        (
            "container_start_time_seconds",
            "gauge",
            "[STABLE] Start time of the container since unix epoch in seconds",
        ),
        (
            "node_cpu_usage_seconds_total",
            "counter",
            "[STABLE] Cumulative cpu time consumed by the node in core-seconds",
        ),
        ("node_memory_working_set_bytes", "gauge", "[STABLE] Current working set of the node in bytes"),
        (
            "pod_cpu_usage_seconds_total",
            "counter",
            "[STABLE] Cumulative cpu time consumed by the pod in core-seconds",
        ),
        ("pod_memory_working_set_bytes", "gauge", "[STABLE] Current working set of the pod in bytes"),
        (
            "resource_scrape_error",
            "gauge",
            "[STABLE] 1 if there was an error while getting container metrics, 0 otherwise",
        ),
    )
    for name, mtype, help_text in fams:
        b.family(name, mtype, help_text)
    b.sample("resource_scrape_error", "resource_scrape_error", "", 0)
    for kind, labels, cg in [*groups, ("node", {}, root)]:
        lab = labels_text(labels)
        phase = cg.phase % PHASES
        ts = ts_slot(phase)
        cpu = (-cg.cpu * tb.counter(cg.kernel, cg.start), cg.cpu, counter_slot(cg.kernel, phase))
        ws = (cg.mem_ws, 0.08 * cg.mem_ws, wave_slot(cg.kernel, phase))
        b.sample(
            f"{kind}_cpu_usage_seconds_total", f"{kind}_cpu_usage_seconds_total", lab, cpu, fmt="%.9f", ts=ts
        )
        b.sample(
            f"{kind}_memory_working_set_bytes", f"{kind}_memory_working_set_bytes", lab, ws, fmt="%d", ts=ts
        )
        if kind == "container":
            # No timestamp here: the value is the start time in seconds with its nanoseconds.
            b.sample("container_start_time_seconds", "container_start_time_seconds", lab, cg.start)
    return b.build()


def build_probes(pods: Sequence[Pod], tb: Timebase, *, start: float) -> Template:
    """The template of ``/metrics/probes``."""
    b = TextBuilder()
    fam = "process_start_time_seconds"
    b.family(fam, "gauge", "[ALPHA] Start time of the process since unix epoch in seconds.")
    b.sample(fam, fam, "", round(start, 2))
    dur = "prober_probe_duration_seconds"
    b.family(dur, "histogram", "[ALPHA] Duration in seconds for a probe response.")
    fam = "prober_probe_total"
    b.family(
        fam,
        "counter",
        "[ALPHA] Cumulative number of a liveness, readiness or startup probe for a container by result.",
    )
    for p in pods:
        for c in p.containers:
            for i, ptype in enumerate(c.spec.probes):
                lab = {
                    "container": c.name,
                    "namespace": p.namespace,
                    "pod": p.name,
                    "pod_uid": p.uid,
                    "probe_type": ptype,
                }
                since = max(c.start, start)
                k = c.kernel + i
                if ptype == "Startup":
                    b.sample(fam, fam, labels_text({**lab, "result": "successful"}), 1 + k % 3)
                    continue
                # Probes run every 10 s; the counters start with the kubelet (its registry is in memory).
                # Only successful probes are timed.
                _hist(
                    b,
                    tb,
                    dur,
                    {"container": c.name, "namespace": p.namespace, "pod": p.name, "probe_type": ptype},
                    DEF_BUCKETS,
                    0.1,
                    0.0015,
                    k,
                    since,
                )
                b.sample(
                    fam,
                    fam,
                    labels_text({**lab, "result": "successful"}),
                    (-0.1 * tb.counter(k, since), 0.1, counter_slot(k)),
                    fmt="%d",
                )
                if k % 7 == 0:
                    b.sample(fam, fam, labels_text({**lab, "result": "failed"}), 1 + k % 4)
    return b.build()


def build_kube_proxy(pods: Sequence[Pod], tb: Timebase, *, version: str, start: float) -> Template:
    """The template of kube-proxy's ``:10249/metrics``."""
    b = TextBuilder()
    k0 = 41
    services = 40 + len(pods)
    net_buckets = (
        [0.25, 0.5]
        + [float(i) for i in range(1, 60)]
        + [60.0 + 5 * i for i in range(12)]
        + [120.0 + 30 * i for i in range(7)]
    )
    fam = "kubeproxy_network_programming_duration_seconds"
    b.family(fam, "histogram", "[ALPHA] In Cluster Network Programming Latency in seconds")
    _hist(b, tb, fam, {}, net_buckets, 0.05, 1.4, k0, start)
    sync_buckets = exp_buckets(0.001, 2, 15)
    for fam, help_text, rate in (
        (
            "kubeproxy_sync_full_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for full resyncs",
            1 / 3600,
        ),
        (
            "kubeproxy_sync_partial_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for partial resyncs",
            0.06,
        ),
        ("kubeproxy_sync_proxy_rules_duration_seconds", "SyncProxyRules latency in seconds", 0.06 + 1 / 3600),
    ):
        b.family(fam, "histogram", f"[ALPHA] {help_text}")
        _hist(b, tb, fam, {}, sync_buckets, rate, 0.02 + services * 0.0002, k0 + 1, start)
    for fam, help_text, mtype, value in (
        (
            "kubeproxy_sync_proxy_rules_endpoint_changes_pending",
            "Pending proxy rules Endpoint changes",
            "gauge",
            0.0,
        ),
        (
            "kubeproxy_sync_proxy_rules_endpoint_changes_total",
            "Cumulative proxy rules Endpoint changes",
            "counter",
            0.04,
        ),
        (
            "kubeproxy_sync_proxy_rules_iptables_partial_restore_failures_total",
            "Cumulative proxy iptables partial restore failures",
            "counter",
            0.0,
        ),
        (
            "kubeproxy_sync_proxy_rules_iptables_restore_failures_total",
            "Cumulative proxy iptables restore failures",
            "counter",
            0.0,
        ),
        (
            "kubeproxy_sync_proxy_rules_service_changes_pending",
            "Pending proxy rules Service changes",
            "gauge",
            0.0,
        ),
        (
            "kubeproxy_sync_proxy_rules_service_changes_total",
            "Cumulative proxy rules Service changes",
            "counter",
            0.003,
        ),
    ):
        b.family(fam, mtype, f"[ALPHA] {help_text}")
        b.sample(fam, fam, "", _ctr(tb, value, k0 + 2, start) if value else 0.0, fmt="%d")
    for fam, help_text in (
        (
            "kubeproxy_sync_proxy_rules_iptables_last",
            "Number of iptables rules written by kube-proxy in last sync",
        ),
        ("kubeproxy_sync_proxy_rules_iptables_total", "Total number of iptables rules owned by kube-proxy"),
    ):
        b.family(fam, "gauge", f"[ALPHA] {help_text}")
        last = fam.endswith("_last")
        b.sample(fam, fam, labels_text({"table": "filter"}), 4 if last else 9)
        b.sample(fam, fam, labels_text({"table": "nat"}), 18 if last else 34 + services * 7)
    for fam, help_text, lag in (
        (
            "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
            "The last time a sync of proxy rules was queued",
            4.9,
        ),
        (
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
            "The last time proxy rules were successfully synced",
            4.8,
        ),
    ):
        b.family(fam, "gauge", f"[ALPHA] {help_text}")
        b.sample(fam, fam, "", (-lag, 1.0, NOW_S), fmt="%.9f")
    fam = "kubeproxy_sync_proxy_rules_no_local_endpoints_total"
    b.family(fam, "gauge", "[ALPHA] Number of services with a Local traffic policy and no endpoints")
    b.sample(fam, fam, labels_text({"traffic_policy": "external"}), 0)
    b.sample(fam, fam, labels_text({"traffic_policy": "internal"}), 0)
    build_info(b, version)
    rest_client(
        b, tb, "10.0.0.1:443", {"get": 0.002, "list": 0.001, "watch": 0.01, "create": 0.0005}, start, k0 + 3
    )
    go_and_process(b, tb, Process(start=start, rss=48e6, cpu=0.002, goroutines=90, kernel=k0 + 4))
    return b.build()
