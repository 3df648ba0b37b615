"""What watching every pod of a cluster costs: kubescrape's discovery, the official Python client, vmagent.

The emulator (its own process; its CPU is not counted) serves N nodes × P pods through its stand-in
apiserver, with pod churn. Each watcher under test runs in its own process, lists the pods, then watches
them; we measure the time until it holds every pod, its CPU seconds for that initial sync, the CPU it
then spends per minute following churn, and its resident memory (peak and steady). Printed as markdown.

    python3 -m bench.discovery [--quick] [--nodes 100] [--pods 50] [--churn 6] [--window 30]

Watchers (one small protocol: a command line and a way to count the pods it holds):

* ``kubescrape``: :class:`kubescrape.discovery.KubernetesDiscovery`, role ``pod`` (plain aiohttp, objects
  kept as the JSON dicts the server sent, target groups built per pod);
* ``python-client``: the official ``kubernetes`` client, list + watch into a dict of ``V1Pod`` models
  (what ``kubernetes_asyncio`` also builds: the same generated models);
* ``vmagent``: ``kubernetes_sd_configs`` role ``pod`` with every target dropped by relabeling (so it only
  discovers), ``-promscrape.maxDroppedTargets`` large enough to list them all.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.procstat import RssSampler, cpu_seconds

RBAC = Path(__file__).resolve().parent.parent / "tests" / "data" / "discovery-rbac.yaml"


# --- the emulated cluster (child process) -----------------------------------------------------------------

def _serve_cluster(conn: Connection, state: str, nodes: int, pods: int, churn: float) -> None:
    from kubescrape.emulator.fleet import Emulator

    async def main() -> None:
        emu = Emulator(state, nodes=nodes, pods=pods, churn=churn, port=0, healthz_port=None,
                       proxy_port=None, rbac_files=[RBAC], apiserver_port=0, app_metrics=False,
                       sync_interval=0.5)
        async with emu:
            assert emu.store is not None
            conn.send((str(emu.kubeconfig_path), len(emu.store.items(emu.store.resource("", "pods")))))
            while not conn.poll():
                await asyncio.sleep(0.2)

    asyncio.run(main())


# --- watchers (child processes) -----------------------------------------------------------------------------

def _run_kubescrape(kubeconfig: str) -> None:
    from kubescrape.discovery import ApiClient, KubernetesDiscovery, load_kubeconfig

    async def main() -> None:
        client = ApiClient(load_kubeconfig(kubeconfig))
        d = KubernetesDiscovery(client, "pod", lambda groups: None)
        await d.start()
        while True:
            print(len(d.groups), flush=True)
            await asyncio.sleep(0.5)

    asyncio.run(main())


def _run_python_client(kubeconfig: str) -> None:
    import importlib
    import threading
    from typing import Any

    # Typed loosely: the generated client is the thing measured, not checked.
    client: Any = importlib.import_module("kubernetes.client")
    config: Any = importlib.import_module("kubernetes.config")
    watch: Any = importlib.import_module("kubernetes.watch")
    api = client.CoreV1Api(config.new_client_from_config(kubeconfig))
    pods: dict[str, object] = {}

    def report() -> None:
        while True:
            print(len(pods), flush=True)
            time.sleep(0.5)

    threading.Thread(target=report, daemon=True).start()
    listing: Any = api.list_pod_for_all_namespaces()
    for p in listing.items:
        pods[p.metadata.uid] = p
    rv = listing.metadata.resource_version
    while True:
        for ev in watch.Watch().stream(api.list_pod_for_all_namespaces, resource_version=rv,
                                       timeout_seconds=300):
            obj = ev["object"]
            rv = obj.metadata.resource_version
            if ev["type"] == "DELETED":
                pods.pop(obj.metadata.uid, None)
            else:
                pods[obj.metadata.uid] = obj


@dataclass
class Watcher:
    """A watcher under test: how to start it and how to read how many pods it holds."""

    name: str
    start: Callable[[str, Path], subprocess.Popen[str]]
    count: Callable[[subprocess.Popen[str]], int]


def _python_child(kind: str) -> Callable[[str, Path], subprocess.Popen[str]]:
    def start(kubeconfig: str, workdir: Path) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "bench.discovery", "--child", kind, kubeconfig], stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True, cwd=Path(__file__).resolve().parent.parent)
    return start


def _last_line_count(proc: subprocess.Popen[str]) -> int:
    """The last count the child printed (non-blocking read of what is buffered)."""
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    last = -1
    while True:
        line = proc.stdout.readline()
        if not line:
            break
        if line.strip().isdigit():
            last = int(line)
    _LAST[proc.pid] = max(_LAST.get(proc.pid, -1), last) if last >= 0 else _LAST.get(proc.pid, -1)
    return _LAST[proc.pid]


_LAST: dict[int, int] = {}
_VM_PORTS: dict[int, int] = {}


def _start_vmagent(kubeconfig: str, workdir: Path) -> subprocess.Popen[str]:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    config = workdir / "vmagent.yml"
    config.write_text(f"""scrape_configs:
- job_name: pods
  scrape_interval: 1h
  kubernetes_sd_configs: [{{role: pod, kubeconfig_file: {kubeconfig}}}]
  relabel_configs: [{{action: drop, source_labels: [__address__], regex: ".+"}}]
""")
    proc = subprocess.Popen(
        ["vmagent", f"-httpListenAddr=127.0.0.1:{port}", f"-promscrape.config={config}",
         "-remoteWrite.url=http://127.0.0.1:9/api/v1/write", f"-remoteWrite.tmpDataPath={workdir / 'vm'}",
         "-promscrape.maxDroppedTargets=1000000", "-promscrape.kubernetesSDCheckInterval=1s",
         "-loggerLevel=ERROR"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
    _VM_PORTS[proc.pid] = port
    return proc


def _vmagent_count(proc: subprocess.Popen[str]) -> int:
    try:
        url = f"http://127.0.0.1:{_VM_PORTS[proc.pid]}/api/v1/targets"
        with urllib.request.urlopen(url, timeout=10) as r:
            data = json.loads(r.read())["data"]
    except OSError:
        return -1
    return len({t["discoveredLabels"].get("__meta_kubernetes_pod_uid")
                for t in data.get("droppedTargets", ())})


WATCHERS = [
    Watcher("kubescrape", _python_child("kubescrape"), _last_line_count),
    Watcher("python-client", _python_child("python-client"), _last_line_count),
    Watcher("vmagent", _start_vmagent, _vmagent_count),
]


# --- measurement ---------------------------------------------------------------------------------------

@dataclass
class Result:
    name: str
    pods_seen: int
    sync_s: float
    sync_cpu_s: float
    cpu_per_min: float
    peak_mib: float
    steady_mib: float


def measure(w: Watcher, kubeconfig: str, expected: int, window: float, workdir: Path) -> Result | None:
    proc = w.start(kubeconfig, workdir)
    sampler = RssSampler(proc.pid, 0.25).start()
    t0 = time.monotonic()
    try:
        seen = -1
        while time.monotonic() - t0 < 120:
            time.sleep(0.25)
            if proc.poll() is not None:
                return None
            seen = w.count(proc)
            if seen >= expected:
                break
        sync_s = time.monotonic() - t0
        sync_cpu = cpu_seconds(proc.pid)
        sampler.mark()
        time.sleep(window)
        cpu = cpu_seconds(proc.pid) - sync_cpu
        seen = w.count(proc)
        steady = sampler.window()
        return Result(w.name, seen, sync_s, sync_cpu, cpu / window * 60, sampler.overall().peak / 2**20,
                      steady.steady / 2**20)
    finally:
        sampler.stop()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=100)
    ap.add_argument("--pods", type=int, default=50, help="pods per node")
    ap.add_argument("--churn", type=float, default=6.0, help="pods replaced per minute per node")
    ap.add_argument("--window", type=float, default=30.0, help="seconds of watching churn to measure")
    ap.add_argument("--quick", action="store_true", help="10 nodes x 20 pods, 5 s window")
    ap.add_argument("--child", nargs=2, metavar=("KIND", "KUBECONFIG"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        {"kubescrape": _run_kubescrape, "python-client": _run_python_client}[args.child[0]](args.child[1])
        return
    if args.quick:
        args.nodes, args.pods, args.window = 10, 20, 5.0
    watchers = [w for w in WATCHERS if w.name != "vmagent" or shutil.which("vmagent")]
    with tempfile.TemporaryDirectory(prefix="bench-discovery-") as tmp:
        parent, child = mp.Pipe()
        cluster = mp.get_context("spawn").Process(
            target=_serve_cluster, args=(child, f"{tmp}/state", args.nodes, args.pods, args.churn),
            daemon=True)
        cluster.start()
        if not parent.poll(300):
            raise SystemExit("the emulated cluster did not start within 300 s")
        kubeconfig, expected = parent.recv()
        results = []
        for w in watchers:
            workdir = Path(tmp) / w.name
            workdir.mkdir()
            r = measure(w, kubeconfig, expected, args.window, workdir)
            if r is not None:
                results.append(r)
        parent.send("stop")
        cluster.join(30)
    print(f"\n### Watching {expected} pods ({args.nodes} nodes × {args.pods}), churn {args.churn:g} "
          f"pods/min/node ({args.nodes * args.churn:g}/min), window {args.window:g} s — "
          f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}\n")
    print("| watcher | pods held | time to sync | CPU to sync | CPU s/min watching | peak RSS | steady RSS |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r.name} | {r.pods_seen} | {r.sync_s:.1f} s | {r.sync_cpu_s:.2f} s | {r.cpu_per_min:.2f} | "
              f"{r.peak_mib:.0f} MiB | {r.steady_mib:.0f} MiB |")


if __name__ == "__main__":
    main()
