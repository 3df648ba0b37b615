"""Benchmark of the hot path: exposition text -> remote-write bytes, against prometheus_client's parser.

Builds a cadvisor-like payload (pods x containers x container_* families, explicit ms timestamps as the
kubelet's /metrics/cadvisor serves them) and prints a markdown table measured in one run::

    python3 -m bench.parse            # full run
    python3 -m bench.parse --quick    # fewer repetitions (CI smoke)
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from kubescrape.remote_write.encode import clear_label_cache, compress
from kubescrape.scrape.cache import SeriesCache
from kubescrape.scrape.parser import parse

# (family, type, help, extra label sets per container, integer-valued)
_FAMILIES: list[tuple[str, str, str, list[dict[str, str]], bool]] = []


def _families() -> list[tuple[str, str, str, list[dict[str, str]], bool]]:
    if _FAMILIES:
        return _FAMILIES
    plain: list[dict[str, str]] = [{}]
    cpus = [{"cpu": "total"}]
    devices = [{"device": "/dev/nvme0n1"}, {"device": "/dev/nvme1n1"}]
    blkio = [
        {"device": "/dev/nvme0n1", "major": "259", "minor": "0", "operation": op}
        for op in ("Read", "Write", "Sync", "Async", "Discard", "Total")
    ]
    interfaces = [{"interface": "eth0"}, {"interface": "tunl0"}]
    failures = [
        {"failure_type": t, "scope": s} for t in ("pgfault", "pgmajfault") for s in ("container", "hierarchy")
    ]
    states = [{"state": s} for s in ("iowaiting", "running", "sleeping", "stopped", "uninterruptible")]
    ulimits = [{"ulimit": "max_open_files"}]
    spec = [
        (
            "container_cpu_usage_seconds_total",
            "counter",
            "Cumulative cpu time consumed in seconds.",
            cpus,
            False,
        ),
        (
            "container_cpu_user_seconds_total",
            "counter",
            "Cumulative user cpu time consumed in seconds.",
            plain,
            False,
        ),
        (
            "container_cpu_system_seconds_total",
            "counter",
            "Cumulative system cpu time consumed.",
            plain,
            False,
        ),
        (
            "container_cpu_cfs_periods_total",
            "counter",
            "Number of elapsed enforcement period intervals.",
            plain,
            True,
        ),
        (
            "container_cpu_cfs_throttled_periods_total",
            "counter",
            "Number of throttled period intervals.",
            plain,
            True,
        ),
        (
            "container_cpu_cfs_throttled_seconds_total",
            "counter",
            "Total time duration throttled.",
            plain,
            False,
        ),
        ("container_cpu_load_average_10s", "gauge", "Value of container cpu load average.", plain, True),
        ("container_memory_cache", "gauge", "Number of bytes of page cache memory.", plain, True),
        ("container_memory_failcnt", "counter", "Number of memory usage hits limits", plain, True),
        (
            "container_memory_failures_total",
            "counter",
            "Cumulative count of memory allocation failures.",
            failures,
            True,
        ),
        ("container_memory_mapped_file", "gauge", "Size of memory mapped files in bytes.", plain, True),
        ("container_memory_max_usage_bytes", "gauge", "Maximum memory usage recorded in bytes", plain, True),
        ("container_memory_rss", "gauge", "Size of RSS in bytes.", plain, True),
        ("container_memory_swap", "gauge", "Container swap usage in bytes.", plain, True),
        ("container_memory_usage_bytes", "gauge", "Current memory usage in bytes.", plain, True),
        ("container_memory_working_set_bytes", "gauge", "Current working set in bytes.", plain, True),
        ("container_fs_inodes_free", "gauge", "Number of available Inodes", devices, True),
        ("container_fs_inodes_total", "gauge", "Number of Inodes", devices, True),
        (
            "container_fs_limit_bytes",
            "gauge",
            "Number of bytes that can be consumed by the container.",
            devices,
            True,
        ),
        (
            "container_fs_usage_bytes",
            "gauge",
            "Number of bytes that are consumed by the container.",
            devices,
            True,
        ),
        ("container_fs_reads_bytes_total", "counter", "Cumulative count of bytes read", devices, True),
        ("container_fs_reads_total", "counter", "Cumulative count of reads completed", devices, True),
        ("container_fs_writes_bytes_total", "counter", "Cumulative count of bytes written", devices, True),
        ("container_fs_writes_total", "counter", "Cumulative count of writes completed", devices, True),
        (
            "container_fs_io_time_seconds_total",
            "counter",
            "Cumulative count of seconds spent doing I/Os",
            devices,
            False,
        ),
        ("container_blkio_device_usage_total", "counter", "Blkio Device bytes usage", blkio, True),
        (
            "container_network_receive_bytes_total",
            "counter",
            "Cumulative count of bytes received",
            interfaces,
            True,
        ),
        ("container_network_receive_errors_total", "counter", "Cumulative count of errors", interfaces, True),
        ("container_network_receive_packets_dropped_total", "counter", "Packets dropped", interfaces, True),
        ("container_network_receive_packets_total", "counter", "Packets received", interfaces, True),
        (
            "container_network_transmit_bytes_total",
            "counter",
            "Cumulative count of bytes transmitted",
            interfaces,
            True,
        ),
        ("container_network_transmit_errors_total", "counter", "Errors while transmitting", interfaces, True),
        ("container_network_transmit_packets_dropped_total", "counter", "Packets dropped", interfaces, True),
        ("container_network_transmit_packets_total", "counter", "Packets transmitted", interfaces, True),
        (
            "container_file_descriptors",
            "gauge",
            "Number of open file descriptors for the container.",
            plain,
            True,
        ),
        ("container_last_seen", "gauge", "Last time a container was seen by the exporter", plain, True),
        ("container_oom_events_total", "counter", "Count of out of memory events observed", plain, True),
        ("container_processes", "gauge", "Number of processes running inside the container.", plain, True),
        ("container_sockets", "gauge", "Number of open sockets for the container.", plain, True),
        ("container_spec_cpu_period", "gauge", "CPU period of the container.", plain, True),
        ("container_spec_cpu_quota", "gauge", "CPU quota of the container.", plain, True),
        ("container_spec_cpu_shares", "gauge", "CPU share of the container.", plain, True),
        ("container_spec_memory_limit_bytes", "gauge", "Memory limit for the container.", plain, True),
        ("container_spec_memory_reservation_limit_bytes", "gauge", "Memory reservation limit.", plain, True),
        (
            "container_spec_memory_swap_limit_bytes",
            "gauge",
            "Memory swap limit for the container.",
            plain,
            True,
        ),
        (
            "container_start_time_seconds",
            "gauge",
            "Start time of the container since unix epoch in seconds.",
            plain,
            False,
        ),
        ("container_tasks_state", "gauge", "Number of tasks in given state", states, True),
        ("container_threads", "gauge", "Number of threads running inside the container", plain, True),
        (
            "container_threads_max",
            "gauge",
            "Maximum number of threads allowed inside the container",
            plain,
            True,
        ),
        (
            "container_ulimits_soft",
            "gauge",
            "Soft ulimit values for the container root process.",
            ulimits,
            True,
        ),
    ]
    _FAMILIES.extend(spec)
    return _FAMILIES


_CONSTANT = (
    "container_spec_",
    "container_start_time_seconds",
    "container_threads_max",
    "container_ulimits_soft",
    "container_fs_inodes_total",
    "container_fs_limit_bytes",
    "container_last_seen",
)


def cadvisor_scrapes(pods: int = 120, scrapes: int = 1, seed: int = 7) -> list[str]:
    """Successive /metrics/cadvisor-like expositions of one node, 15 s apart.

    Per pod: a pod cgroup, a pause container and one or two app containers, each with the container_*
    families of the kubelet's cAdvisor endpoint and an explicit millisecond timestamp. Between scrapes
    counters grow and gauges move (about 60% of the values change), specs and limits stay.
    """
    rng = random.Random(seed)
    now_ms = 1_764_000_000_000
    containers: list[dict[str, str]] = []
    for p in range(pods):
        namespace = rng.choice(["default", "kube-system", "monitoring", "payments", "web"])
        app = rng.choice(["nginx", "api", "worker", "redis", "envoy", "billing"])
        pod = f"{app}-{rng.getrandbits(36):09x}-{rng.getrandbits(24):05x}"
        uid = f"{rng.getrandbits(32):08x}_{rng.getrandbits(16):04x}_{rng.getrandbits(16):04x}_" + (
            f"{rng.getrandbits(16):04x}_{rng.getrandbits(48):012x}"
        )
        pod_cgroup = f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid}.slice"
        base = {"namespace": namespace, "pod": pod}
        containers.append({"container": "", "id": pod_cgroup, "image": "", "name": "", **base})
        for name in ["POD", app] + (["istio-proxy"] if p % 3 == 0 else []):
            cid = f"{rng.getrandbits(128):032x}{rng.getrandbits(128):032x}"
            image = (
                "registry.k8s.io/pause:3.9"
                if name == "POD"
                else f"docker.io/library/{name}:1.{p % 9}.{p % 5}"
            )
            containers.append(
                {
                    "container": "" if name == "POD" else name,
                    "id": f"{pod_cgroup}/cri-containerd-{cid}.scope",
                    "image": image,
                    "name": cid,
                    **base,
                }
            )
    stamps = [now_ms - rng.randrange(0, 15_000) for _ in containers]
    # (series text, base value, growth per scrape, integral, container index) in exposition order.
    series: list[tuple[str, float, float, bool, int]] = []
    headers: dict[int, list[str]] = {}
    for family, mtype, help_text, extras, integral in _families():
        headers[len(series)] = [f"# HELP {family} {help_text}", f"# TYPE {family} {mtype}"]
        constant = family.startswith(_CONSTANT)
        for c, labels in enumerate(containers):
            for extra in extras:
                merged = dict(sorted({**labels, **extra}.items()))
                text = family + "{" + ",".join(f'{k}="{v}"' for k, v in merged.items()) + "}"
                zero = integral and rng.random() < 0.3
                base_value = 0.0 if zero else (rng.randrange(1, 10**9) if integral else rng.random() * 10**4)
                changes = not zero and not constant and rng.random() < 0.85
                growth = (rng.randrange(1, 10**5) if integral else rng.random() * 15) if changes else 0.0
                series.append((text, base_value, growth, integral, c))
    out: list[str] = []
    for k in range(scrapes):
        lines: list[str] = []
        for i, (text, base_value, growth, integral, c) in enumerate(series):
            if i in headers:
                lines.extend(headers[i])
            value = base_value + k * growth
            shown = str(int(value)) if integral else repr(value)
            lines.append(f"{text} {shown} {stamps[c] + 15_000 * k}")
        out.append("\n".join(lines) + "\n")
    return out


def cadvisor_payload(pods: int = 120, seed: int = 7) -> str:
    """One /metrics/cadvisor-like exposition (see :func:`cadvisor_scrapes`)."""
    return cadvisor_scrapes(pods, 1, seed)[0]


def _labeler(name: str, labels: list[tuple[str, str]]) -> list[tuple[str, str]] | None:
    return [("__name__", name), *labels, ("instance", "node-1:10250"), ("job", "kubelet")]


def _best(fn: Callable[[], object], repeat: int) -> float:
    """Best CPU time of this thread over ``repeat`` runs (one core; not inflated when other processes
    share the machine), garbage collection disabled during each run.
    """
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        gc.disable()
        try:
            start = time.thread_time()
            fn()
            best = min(best, time.thread_time() - start)
        finally:
            gc.enable()
    return best


def run(quick: bool = False, pods: int = 120) -> tuple[list[tuple[str, int, float]], int]:
    """Measure every contender; return ``(name, samples, seconds)`` rows and the payload size."""
    repeat = 4 if quick else 12
    bodies = [text.encode() for text in cadvisor_scrapes(pods, repeat + 2)]
    text = bodies[0].decode()
    samples = len(parse(text))
    ts = 1_764_000_015_000

    def client() -> None:
        for _ in text_string_to_metric_families(text):
            pass

    def cold() -> None:
        clear_label_cache()
        SeriesCache(_labeler).process(bodies[0], ts)

    # Steady state: each timed run is the next scrape of the same node (new values and timestamps).
    warm_cache = SeriesCache(_labeler)
    warm_cache.process(bodies[0], ts)
    warm_bodies = iter(bodies[1:])
    warm_compress_cache = SeriesCache(_labeler)
    warm_compress_cache.process(bodies[0], ts)
    compress_bodies = iter(bodies[1:])

    def warm() -> None:
        warm_cache.process(next(warm_bodies), ts)

    def warm_compress() -> None:
        result = warm_compress_cache.process(next(compress_bodies), ts)
        for chunk in result.chunks:
            compress(chunk.data)

    return [
        ("prometheus_client text_string_to_metric_families", samples, _best(client, max(1, repeat // 3))),
        ("kubescrape parse() (validating, to Sample tuples)", samples, _best(lambda: parse(text), repeat)),
        ("SeriesCache.process cold (first scrape: parse, labeler, encode)", samples, _best(cold, repeat)),
        ("SeriesCache.process warm (next scrapes, encoded chunks)", samples, _best(warm, repeat)),
        ("SeriesCache.process warm + snappy compress", samples, _best(warm_compress, repeat)),
    ], len(bodies[0])


def table(rows: list[tuple[str, int, float]]) -> str:
    """Markdown table with µs/sample, samples/s and the speed-up against the first row."""
    baseline = rows[0][2] / rows[0][1]
    out = [
        "| contender | samples | µs/sample | samples/s | speed-up vs prometheus_client |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, samples, seconds in rows:
        per = seconds / samples
        out.append(
            f"| {name} | {samples} | {per * 1e6:.3f} | {samples / seconds:,.0f} | {baseline / per:.1f}× |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python3 -m bench.parse [--quick] [--pods N]``."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--pods", type=int, default=120, help="pods in the payload (default 120)")
    args = parser.parse_args(argv)
    rows, size = run(quick=args.quick, pods=args.pods)
    print(
        f"cadvisor-like payload: {args.pods} pods, {rows[0][1]} samples, {size >> 10} KiB; "
        f"Python {sys.version.split()[0]}; best CPU time of one thread\n"
    )
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
