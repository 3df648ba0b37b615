"""``/metrics/cadvisor``: the container_* and machine_* families cAdvisor exposes inside the kubelet.

Shaped after cAdvisor v0.48 (vendored by kubelet v1.29) with the kubelet's metric set (cpu, memory,
cpu load, disk I/O, disk usage, network, process, OOM): base labels ``container, id, image, name,
namespace, pod`` (empty strings where unknown, as the kubelet supplies them), one cgroup per pod
(``/kubepods/<qos>/pod<uid>``), its containers and its sandbox (pause, containerd: ``container=""``,
the only cgroup with network series), plus the root ``/`` and the slices above the pods.
Stats samples carry the container's housekeeping timestamp; spec samples carry none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from kubescrape.emulator.payloads_pods import MI, PAUSE_IMAGE, Pod
from kubescrape.emulator.payloads_render import (
    NOW_MS,
    NOW_S,
    PHASES,
    Fragment,
    Template,
    TextBuilder,
    Timebase,
    counter_slot,
    labels_text,
    ts_slot,
    wave_slot,
)

_C: Final = "counter"
_G: Final = "gauge"

HELP: Final[dict[str, tuple[str, str]]] = {
    "cadvisor_version_info": (
        _G,
        "A metric with a constant '1' value labeled by kernel version, OS version, "
        "docker version, cadvisor version & cadvisor revision.",
    ),
    "container_blkio_device_usage_total": (_C, "Blkio Device bytes usage"),
    "container_cpu_cfs_periods_total": (_C, "Number of elapsed enforcement period intervals."),
    "container_cpu_cfs_throttled_periods_total": (_C, "Number of throttled period intervals."),
    "container_cpu_cfs_throttled_seconds_total": (
        _C,
        "Total time duration the container has been throttled.",
    ),
    "container_cpu_load_average_10s": (_G, "Value of container cpu load average over the last 10 seconds."),
    "container_cpu_system_seconds_total": (_C, "Cumulative system cpu time consumed in seconds."),
    "container_cpu_usage_seconds_total": (_C, "Cumulative cpu time consumed in seconds."),
    "container_cpu_user_seconds_total": (_C, "Cumulative user cpu time consumed in seconds."),
    "container_file_descriptors": (_G, "Number of open file descriptors for the container."),
    "container_fs_inodes_free": (_G, "Number of available Inodes"),
    "container_fs_inodes_total": (_G, "Number of Inodes"),
    "container_fs_io_current": (_G, "Number of I/Os currently in progress"),
    "container_fs_io_time_seconds_total": (_C, "Cumulative count of seconds spent doing I/Os"),
    "container_fs_io_time_weighted_seconds_total": (_C, "Cumulative weighted I/O time in seconds"),
    "container_fs_limit_bytes": (
        _G,
        "Number of bytes that can be consumed by the container on this filesystem.",
    ),
    "container_fs_read_seconds_total": (_C, "Cumulative count of seconds spent reading"),
    "container_fs_reads_bytes_total": (_C, "Cumulative count of bytes read"),
    "container_fs_reads_merged_total": (_C, "Cumulative count of reads merged"),
    "container_fs_reads_total": (_C, "Cumulative count of reads completed"),
    "container_fs_sector_reads_total": (_C, "Cumulative count of sector reads completed"),
    "container_fs_sector_writes_total": (_C, "Cumulative count of sector writes completed"),
    "container_fs_usage_bytes": (
        _G,
        "Number of bytes that are consumed by the container on this filesystem.",
    ),
    "container_fs_write_seconds_total": (_C, "Cumulative count of seconds spent writing"),
    "container_fs_writes_bytes_total": (_C, "Cumulative count of bytes written"),
    "container_fs_writes_merged_total": (_C, "Cumulative count of writes merged"),
    "container_fs_writes_total": (_C, "Cumulative count of writes completed"),
    "container_last_seen": (_G, "Last time a container was seen by the exporter"),
    "container_memory_cache": (_G, "Number of bytes of page cache memory."),
    "container_memory_failcnt": (_C, "Number of memory usage hits limits"),
    "container_memory_failures_total": (_C, "Cumulative count of memory allocation failures."),
    "container_memory_kernel_usage": (_G, "Size of kernel memory allocated in bytes."),
    "container_memory_mapped_file": (_G, "Size of memory mapped files in bytes."),
    "container_memory_max_usage_bytes": (_G, "Maximum memory usage recorded in bytes"),
    "container_memory_rss": (_G, "Size of RSS in bytes."),
    "container_memory_swap": (_G, "Container swap usage in bytes."),
    "container_memory_usage_bytes": (
        _G,
        "Current memory usage in bytes, including all memory regardless of when it was accessed",
    ),
    "container_memory_working_set_bytes": (_G, "Current working set in bytes."),
    "container_network_receive_bytes_total": (_C, "Cumulative count of bytes received"),
    "container_network_receive_errors_total": (_C, "Cumulative count of errors encountered while receiving"),
    "container_network_receive_packets_dropped_total": (
        _C,
        "Cumulative count of packets dropped while receiving",
    ),
    "container_network_receive_packets_total": (_C, "Cumulative count of packets received"),
    "container_network_transmit_bytes_total": (_C, "Cumulative count of bytes transmitted"),
    "container_network_transmit_errors_total": (
        _C,
        "Cumulative count of errors encountered while transmitting",
    ),
    "container_network_transmit_packets_dropped_total": (
        _C,
        "Cumulative count of packets dropped while transmitting",
    ),
    "container_network_transmit_packets_total": (_C, "Cumulative count of packets transmitted"),
    "container_oom_events_total": (_C, "Count of out of memory events observed for the container"),
    "container_processes": (_G, "Number of processes running inside the container."),
    "container_scrape_error": (_G, "1 if there was an error while getting container metrics, 0 otherwise"),
    "container_sockets": (_G, "Number of open sockets for the container."),
    "container_spec_cpu_period": (_G, "CPU period of the container."),
    "container_spec_cpu_quota": (_G, "CPU quota of the container."),
    "container_spec_cpu_shares": (_G, "CPU share of the container."),
    "container_spec_memory_limit_bytes": (_G, "Memory limit for the container."),
    "container_spec_memory_reservation_limit_bytes": (_G, "Memory reservation limit for the container."),
    "container_spec_memory_swap_limit_bytes": (_G, "Memory swap limit for the container."),
    "container_start_time_seconds": (_G, "Start time of the container since unix epoch in seconds."),
    "container_tasks_state": (_G, "Number of tasks in given state"),
    "container_threads": (_G, "Number of threads running inside the container"),
    "container_threads_max": (
        _G,
        "Maximum number of threads allowed inside the container, infinity if value is zero",
    ),
    "container_ulimits_soft": (
        _G,
        "Soft ulimit values for the container root process. Unlimited if -1, except priority and nice",
    ),
    "machine_cpu_cores": (_G, "Number of logical CPU cores."),
    "machine_cpu_physical_cores": (_G, "Number of physical CPU cores."),
    "machine_cpu_sockets": (_G, "Number of CPU sockets."),
    "machine_memory_bytes": (_G, "Amount of memory installed on the machine."),
    "machine_nvm_avg_power_budget_watts": (_G, "NVM power budget."),
    "machine_nvm_capacity": (_G, "NVM capacity value labeled by NVM mode (memory mode or app direct mode)."),
    "machine_scrape_error": (_G, "1 if there was an error while getting machine metrics, 0 otherwise."),
    "machine_swap_bytes": (_G, "Amount of swap memory available on the machine."),
}

DISK: Final = "/dev/nvme0n1"
ROOT_FS: Final = "/dev/nvme0n1p1"


@dataclass
class Cgroup:
    """One cgroup as cAdvisor reports it (rates are per second, sizes in bytes)."""

    labels: dict[str, str]
    phase: int
    kernel: int
    start: float
    cpu: float
    mem_ws: float
    cpu_quota: int = 0  # microseconds per 100 ms period; 0 = no quota
    cpu_shares: int = 2
    mem_limit: int = 0
    processes: int = 1
    threads: int = 8
    fds: int = 16
    read_bps: float = 0.0
    write_bps: float = 0.0
    # (interface, rx B/s, tx B/s, since): counters of an interface count from its creation.
    net: Sequence[tuple[str, float, float, float]] = field(default_factory=tuple)
    fs: Sequence[tuple[str, int, int]] = field(default_factory=tuple)  # (device, capacity, used) — root only


@dataclass(frozen=True)
class Machine:
    """The node's hardware as cAdvisor's machine collector reports it."""

    cores: int
    memory: int
    boot_id: str
    machine_id: str
    system_uuid: str
    kernel_version: str = "5.15.0-1051-aws"
    os_version: str = "Ubuntu 22.04.3 LTS"


def pod_cgroups(pod: Pod) -> list[Cgroup]:
    """The pod cgroup, its sandbox and its containers."""
    ns, pname = pod.namespace, pod.name
    out: list[Cgroup] = []
    quotas = [c.spec.cpu_lim for c in pod.containers]
    mem_lims = [c.spec.mem_lim for c in pod.containers]
    for c in pod.containers:
        s = c.spec
        out.append(
            Cgroup(
                labels={
                    "container": s.name,
                    "id": f"{pod.cgroup}/{c.container_id}",
                    "image": s.image,
                    "name": c.container_id,
                    "namespace": ns,
                    "pod": pname,
                },
                phase=pod.phase + 1 + len(out),
                kernel=c.kernel,
                start=c.start,
                cpu=c.cpu,
                mem_ws=c.mem_ws,
                cpu_quota=s.cpu_lim * 100,
                cpu_shares=max(2, (s.cpu_req or s.cpu_lim) * 1024 // 1000),
                mem_limit=s.mem_lim * MI,
                processes=1 + c.kernel % 3,
                threads=c.threads,
                fds=c.fds,
                read_bps=c.read_bps,
                write_bps=c.write_bps,
            )
        )
    sandbox = Cgroup(
        labels={
            "container": "",
            "id": f"{pod.cgroup}/{pod.sandbox_id}",
            "image": PAUSE_IMAGE,
            "name": pod.sandbox_id,
            "namespace": ns,
            "pod": pname,
        },
        phase=pod.phase,
        kernel=pod.kernel + 1,
        start=pod.start,
        cpu=0.00002,
        mem_ws=303104,
        cpu_shares=2,
        threads=1,
        fds=3,
        net=(("eth0", pod.rx_bps, pod.tx_bps, pod.start),),
    )
    pod_cg = Cgroup(
        labels={"container": "", "id": pod.cgroup, "image": "", "name": "", "namespace": ns, "pod": pname},
        phase=pod.phase,
        kernel=pod.kernel,
        start=pod.start,
        cpu=sum(c.cpu for c in out) + sandbox.cpu,
        mem_ws=sum(c.mem_ws for c in out) + sandbox.mem_ws,
        cpu_quota=sum(quotas) * 100 if all(quotas) else 0,
        cpu_shares=max(2, sum(c.cpu_shares for c in out)),
        mem_limit=sum(mem_lims) * MI if all(mem_lims) else 0,
        processes=sum(c.processes for c in out) + 1,
        threads=sum(c.threads for c in out) + 1,
        fds=sum(c.fds for c in out) + 3,
        read_bps=sum(c.read_bps for c in out),
        write_bps=sum(c.write_bps for c in out),
    )
    return [pod_cg, sandbox, *out]


def node_cgroups(pods: Sequence[Pod], current: Sequence[Pod], machine: Machine, boot: float) -> list[Cgroup]:
    """``/`` and the slices above the pods, aggregating what runs beneath them.

    Rates come from ``pods`` (the node's pods when the emulator started) and stay fixed for the
    node's life, so churn never makes a node-level counter step back; the root cgroup's host
    interfaces include one veth per ``current`` pod, as the host network namespace does.
    """

    def agg(path: str, members: Sequence[Pod], extra_cpu: float, extra_mem: float, kernel: int) -> Cgroup:
        groups = [pod_cgroups(p)[0] for p in members]
        return Cgroup(
            labels={"container": "", "id": path, "image": "", "name": "", "namespace": "", "pod": ""},
            phase=kernel,
            kernel=kernel,
            start=boot,
            cpu=sum(g.cpu for g in groups) + extra_cpu,
            mem_ws=sum(g.mem_ws for g in groups) + extra_mem,
            cpu_shares=max(2, sum(g.cpu_shares for g in groups)),
            processes=sum(g.processes for g in groups) + 1,
            threads=sum(g.threads for g in groups) + 1,
            fds=sum(g.fds for g in groups) + 8,
            read_bps=sum(g.read_bps for g in groups),
            write_bps=sum(g.write_bps for g in groups),
        )

    burst = [p for p in pods if p.qos == "Burstable"]
    best = [p for p in pods if p.qos == "BestEffort"]
    out = [
        agg("/kubepods", pods, 0.0, 8 * MI, 3),
        agg("/kubepods/burstable", burst, 0.0, 2 * MI, 4),
        agg("/kubepods/besteffort", best, 0.0, 1 * MI, 5),
        agg("/system.slice", [], 0.16, 900 * MI, 6),
        agg("/system.slice/containerd.service", [], 0.05, 480 * MI, 7),
        agg("/system.slice/kubelet.service", [], 0.08, 140 * MI, 8),
        agg("/user.slice", [], 0.001, 20 * MI, 9),
    ]
    root = agg("/", pods, 0.3, 1400 * MI, 10)
    root.net = (
        ("ens5", sum(p.rx_bps for p in pods) * 1.1 + 4e4, sum(p.tx_bps for p in pods) * 1.1 + 3e4, boot),
        ("tunl0", 500.0, 400.0, boot),
        *((p.veth, p.tx_bps, p.rx_bps, p.start) for p in current),
    )
    root.fs = (
        (ROOT_FS, 107_361_579_008, 31_742_541_824),
        ("/dev/shm", machine.memory // 2, 0),
        ("/run", machine.memory // 5, 3_620_864),
        ("/run/lock", 5_242_880, 0),
    )
    root.mem_limit = 0
    return [root, *out]


def build_cadvisor(
    cgroups: Sequence[Cgroup], machine: Machine, tb: Timebase, cache: dict[str, Fragment] | None = None
) -> Template:
    """The template of ``/metrics/cadvisor`` for these cgroups (node and pod cgroups).

    ``cache`` keeps each cgroup's rendered samples by cgroup path across rebuilds, so churn only
    renders the new pods' cgroups; entries of cgroups that are gone are dropped.
    """
    b = TextBuilder()
    for name, (mtype, help_text) in HELP.items():
        b.family(name, mtype, help_text)
    b.sample(
        "cadvisor_version_info",
        "cadvisor_version_info",
        labels_text(
            {
                "cadvisorRevision": "",
                "cadvisorVersion": "",
                "dockerVersion": "",
                "kernelVersion": machine.kernel_version,
                "osVersion": machine.os_version,
            }
        ),
        1,
    )
    b.sample("container_scrape_error", "container_scrape_error", "", 0)
    b.sample("machine_scrape_error", "machine_scrape_error", "", 0)
    mlab = {"boot_id": machine.boot_id, "machine_id": machine.machine_id, "system_uuid": machine.system_uuid}
    ml = labels_text(mlab)
    mts = ts_slot(0)
    for fam, val in (
        ("machine_cpu_cores", machine.cores),
        ("machine_cpu_physical_cores", machine.cores // 2),
        ("machine_cpu_sockets", 1),
        ("machine_memory_bytes", machine.memory),
        ("machine_nvm_avg_power_budget_watts", 0),
        ("machine_swap_bytes", 0),
    ):
        b.sample(fam, fam, ml, (float(val), 0.0, 0), ts=mts)
    for mode in ("app_direct_mode", "memory_mode"):
        b.sample(
            "machine_nvm_capacity",
            "machine_nvm_capacity",
            labels_text({**mlab, "mode": mode}),
            (0.0, 0.0, 0),
            ts=mts,
        )
    for cg in cgroups:
        path = cg.labels["id"]
        frag = cache.get(path) if cache is not None else None
        if frag is None:
            fb = TextBuilder(fragment=True)
            _emit(fb, cg, tb)
            frag = fb.fragment()
            # The root cgroup lists one veth per current pod: it changes with churn.
            if cache is not None and path != "/":
                cache[path] = frag
        b.add(frag)
    if cache is not None:
        live = {cg.labels["id"] for cg in cgroups}
        for path in [p for p in cache if p not in live]:
            del cache[path]
    return b.build()


def _emit(b: TextBuilder, cg: Cgroup, tb: Timebase) -> None:
    """Every series of one cgroup."""
    base = cg.labels
    lab0 = labels_text(base)
    phase = cg.phase % PHASES
    ts = ts_slot(phase)
    k = cg.kernel

    def ctr(rate: float, kern: int = 0) -> tuple[float, float, int]:
        # Counted from the cgroup's start: base chosen so the value at ``start`` is 0.
        kk = k + kern
        return (-rate * tb.counter(kk, cg.start), rate, counter_slot(kk, phase))

    def gauge(mean: float, amp: float, kern: int = 0) -> tuple[float, float, int]:
        return (mean, amp, wave_slot(k + kern, phase))

    def const(v: float) -> tuple[float, float, int]:
        return (float(v), 0.0, 0)

    def put(
        fam: str, value: tuple[float, float, int], extra: dict[str, str] | None = None, fmt: str = "%.12g"
    ) -> None:
        lab = labels_text({**base, **extra}) if extra else lab0
        b.sample(fam, fam, lab, value, fmt=fmt, ts=ts)

    def spec(fam: str, v: float) -> None:
        b.sample(fam, fam, lab0, v)

    # Spec: no timestamp, constant for the life of the container.
    spec("container_start_time_seconds", float(int(cg.start)))
    spec("container_spec_cpu_period", 100000)
    if cg.cpu_quota:
        spec("container_spec_cpu_quota", cg.cpu_quota)
    spec("container_spec_cpu_shares", cg.cpu_shares)
    spec("container_spec_memory_limit_bytes", cg.mem_limit)
    spec("container_spec_memory_reservation_limit_bytes", 0)
    spec("container_spec_memory_swap_limit_bytes", cg.mem_limit)

    b.sample("container_last_seen", "container_last_seen", lab0, (0.0, 1.0, NOW_S), fmt="%d", ts=NOW_MS)
    cpu = cg.cpu
    # Nanosecond counters in seconds, as cAdvisor divides them: nine decimals.
    put("container_cpu_usage_seconds_total", ctr(cpu), {"cpu": "total"}, fmt="%.9f")
    put("container_cpu_user_seconds_total", ctr(cpu * 0.68, 1), fmt="%.9f")
    put("container_cpu_system_seconds_total", ctr(cpu * 0.3, 2), fmt="%.9f")
    if cg.cpu_quota:
        limit = cg.cpu_quota / 100_000
        busy = min(1.0, 4 * cpu / limit)
        throttled = min(0.3, (cpu / limit) ** 2)
        put("container_cpu_cfs_periods_total", ctr(10 * busy, 3), fmt="%d")
        put("container_cpu_cfs_throttled_periods_total", ctr(10 * busy * throttled, 3), fmt="%d")
        put("container_cpu_cfs_throttled_seconds_total", ctr(10 * busy * throttled * 0.012, 3), fmt="%.9f")
    put("container_cpu_load_average_10s", const(0))
    for state, v in (
        ("iowaiting", 0),
        ("running", 0),
        ("sleeping", cg.processes),
        ("stopped", 0),
        ("uninterruptible", 0),
    ):
        put("container_tasks_state", const(v), {"state": state})

    ws = cg.mem_ws
    amp = 0.08 * ws
    put("container_memory_working_set_bytes", gauge(ws, amp), fmt="%d")
    put("container_memory_usage_bytes", gauge(ws * 1.3, amp), fmt="%d")
    put("container_memory_rss", gauge(ws * 0.82, amp * 0.82), fmt="%d")
    put("container_memory_cache", const(int(ws * 0.31)))
    put("container_memory_kernel_usage", const(int(ws * 0.03) // 4096 * 4096))
    put("container_memory_mapped_file", const(int(ws * 0.05) // 4096 * 4096))
    put("container_memory_swap", const(0))
    put("container_memory_max_usage_bytes", const(int(ws * 1.45)))
    put("container_memory_failcnt", const(0))
    for ftype, scope, rate in (
        ("pgfault", "container", 40.0),
        ("pgfault", "hierarchy", 40.0),
        ("pgmajfault", "container", 0.004),
        ("pgmajfault", "hierarchy", 0.004),
    ):
        put(
            "container_memory_failures_total",
            ctr(rate * (1 + 20 * cpu), 4),
            {"failure_type": ftype, "scope": scope},
            fmt="%d",
        )

    if cg.read_bps or cg.write_bps:
        dev = {"device": DISK}
        put("container_fs_reads_bytes_total", ctr(cg.read_bps, 5), dev, fmt="%d")
        put("container_fs_reads_total", ctr(cg.read_bps / 16384, 5), dev, fmt="%d")
        put("container_fs_writes_bytes_total", ctr(cg.write_bps, 6), dev, fmt="%d")
        put("container_fs_writes_total", ctr(cg.write_bps / 8192, 6), dev, fmt="%d")
        for op, rate, kern in (("Read", cg.read_bps, 5), ("Write", cg.write_bps, 6)):
            put(
                "container_blkio_device_usage_total",
                ctr(rate, kern),
                {"device": DISK, "major": "259", "minor": "0", "operation": op},
                fmt="%d",
            )
    for dev_name, cap, used in cg.fs:
        dev = {"device": dev_name}
        inodes = cap // 16384
        put("container_fs_limit_bytes", const(cap), dev)
        put("container_fs_usage_bytes", gauge(used, used * 0.002), dev, fmt="%d")
        put("container_fs_inodes_total", const(inodes), dev)
        put("container_fs_inodes_free", const(inodes - used // 65536), dev)
        if dev_name == ROOT_FS:
            put("container_fs_reads_merged_total", ctr(cg.read_bps / 65536, 5), dev, fmt="%d")
            put("container_fs_sector_reads_total", ctr(cg.read_bps / 512, 5), dev, fmt="%d")
            put("container_fs_read_seconds_total", ctr(cg.read_bps / 16384 * 0.0005, 5), dev)
            put("container_fs_writes_merged_total", ctr(cg.write_bps / 32768, 6), dev, fmt="%d")
            put("container_fs_sector_writes_total", ctr(cg.write_bps / 512, 6), dev, fmt="%d")
            put("container_fs_write_seconds_total", ctr(cg.write_bps / 8192 * 0.001, 6), dev)
            put("container_fs_io_current", const(0), dev)
            put("container_fs_io_time_seconds_total", ctr(0.02, 6), dev)
            put("container_fs_io_time_weighted_seconds_total", ctr(0.03, 6), dev)

    for iface, rx, tx, since in cg.net:
        i = {"interface": iface}

        def nctr(rate: float, kern: int, since: float = since) -> tuple[float, float, int]:
            kk = k + kern
            return (-rate * tb.counter(kk, since), rate, counter_slot(kk, phase))

        put("container_network_receive_bytes_total", nctr(rx, 7), i, fmt="%d")
        put("container_network_receive_packets_total", nctr(rx / 900, 7), i, fmt="%d")
        put("container_network_receive_errors_total", const(0), i)
        put("container_network_receive_packets_dropped_total", nctr(rx / 9e6, 7), i, fmt="%d")
        put("container_network_transmit_bytes_total", nctr(tx, 8), i, fmt="%d")
        put("container_network_transmit_packets_total", nctr(tx / 700, 8), i, fmt="%d")
        put("container_network_transmit_errors_total", const(0), i)
        put("container_network_transmit_packets_dropped_total", const(0), i)

    put("container_processes", const(cg.processes))
    put("container_threads", gauge(cg.threads, 1.4), fmt="%.0f")
    put("container_threads_max", const(0))
    put("container_file_descriptors", gauge(cg.fds, 1.4, 1), fmt="%.0f")
    put("container_sockets", gauge(max(1, cg.fds // 4), 0.9, 2), fmt="%.0f")
    put("container_ulimits_soft", const(1048576), {"ulimit": "max_open_files"})
    put("container_oom_events_total", const(0))
