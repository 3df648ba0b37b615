"""What the agents scrape: scenarios, the kubelet emulator, and its Categraf config as scrape jobs.

``kubescrape emulate`` prints the Categraf ``prometheus.toml`` that scrapes its nodes; every contender is
configured from that one file (kubescrape reads it as is, the Prometheus agent and vmagent get the
equivalent ``scrape_configs`` built from :func:`jobs_from_categraf`).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import tomllib
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from bench.processes import Processes, child_env, free_port_on_all, kubescrape_cmd, node_addresses, wait_tcp


@dataclass(frozen=True)
class Scenario:
    """One measured configuration: ``nodes`` emulated kubelets with ``pods`` pods each."""

    name: str
    nodes: int
    pods: int
    interval: float
    warmup: float
    window: float


SCENARIOS: dict[str, Scenario] = {
    "1x100": Scenario("1x100", nodes=1, pods=100, interval=2.0, warmup=8.0, window=60.0),
    "1x250": Scenario("1x250", nodes=1, pods=250, interval=2.0, warmup=8.0, window=60.0),
    "20x100": Scenario("20x100", nodes=20, pods=100, interval=5.0, warmup=15.0, window=60.0),
    # Issue 14's "one 250-pod node at a 15 s interval under 3 % of a core": six scrapes per target.
    "1x250-15s": Scenario("1x250-15s", nodes=1, pods=250, interval=15.0, warmup=15.0, window=90.0),
}
# The window is not shorter than cAdvisor's housekeeping interval (10 s), so every container has a stats
# timestamp inside it whichever moment it starts: both agents then deliver the same series.
QUICK = Scenario("quick-1x50", nodes=1, pods=50, interval=1.0, warmup=1.0, window=10.0)


class ScrapeJob(NamedTuple):
    """Targets scraped the same way: one ``scrape_configs`` entry per Categraf instance and path."""

    job: str
    scheme: str
    metrics_path: str
    addresses: tuple[str, ...]
    bearer_token_file: str | None
    ca_file: str | None
    insecure_skip_verify: bool
    labels: tuple[tuple[str, str], ...]


def jobs_from_categraf(toml_text: str) -> list[ScrapeJob]:
    """Translate a Categraf ``prometheus.toml`` into scrape jobs (URLs of one instance sharing a path)."""
    doc = tomllib.loads(toml_text)
    jobs: list[ScrapeJob] = []
    for inst in doc.get("instances", []):
        labels = {str(k): str(v) for k, v in inst.get("labels", {}).items()}
        job = labels.pop("job", "prometheus")
        by_path: dict[tuple[str, str], list[str]] = {}
        for url in inst.get("urls", []):
            u = urllib.parse.urlsplit(url)
            by_path.setdefault((u.scheme, u.path or "/metrics"), []).append(u.netloc)
        for (scheme, path), addresses in by_path.items():
            jobs.append(
                ScrapeJob(
                    job=job,
                    scheme=scheme,
                    metrics_path=path,
                    addresses=tuple(addresses),
                    bearer_token_file=inst.get("bearer_token_file") or None,
                    ca_file=inst.get("tls_ca") or None,
                    insecure_skip_verify=bool(inst.get("insecure_skip_verify", False)),
                    labels=tuple(sorted(labels.items())),
                )
            )
    return jobs


@contextlib.contextmanager
def emulator(procs: Processes, workdir: Path, nodes: int, pods: int) -> Iterator[tuple[str, int]]:
    """Start ``kubescrape emulate``; yield its Categraf ``prometheus.toml`` and its secure port."""
    state = workdir / "emulator"
    hosts = node_addresses(nodes)
    port = free_port_on_all(hosts)
    log = workdir / "emulator.log"
    args = kubescrape_cmd(
        "emulate",
        "--state-dir",
        str(state),
        "--nodes",
        str(nodes),
        "--pods",
        str(pods),
        "--port",
        str(port),
        "--healthz-port",
        "0",
        "--proxy-port",
        "0",
    )
    if nodes == 1:
        args += ["--address", hosts[0]]
    proc = procs.start(args, log)
    try:
        for h in hosts:
            wait_tcp(h, port, 120, proc, log)
        printed = subprocess.run(
            kubescrape_cmd(
                "emulate",
                "--state-dir",
                str(state),
                "--nodes",
                str(nodes),
                "--port",
                str(port),
                "--address",
                hosts[0],
                "--print-config",
            ),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
            env=child_env(),
        ).stdout
        yield printed, port
    finally:
        Processes.stop(proc)


def bench_instances_toml(printed: str, port: int, interval: float) -> str:
    """The emulator's Categraf ``prometheus.toml``, made equivalent to the Prometheus agent's scrape config.

    Keeps only the [[instances]] on the secure port (healthz and kube-proxy are off in the bench), sets
    ``url_label_value = "{{.Host}}"`` so ``instance`` is ``host:port`` as in Prometheus (Categraf's default is
    the whole URL), and ``timeout`` to the interval, which is the Prometheus agent's ``scrape_timeout``.
    """
    doc = tomllib.loads(printed)
    kept: list[dict[str, Any]] = []
    for inst in doc.get("instances", []):
        if all(urllib.parse.urlsplit(u).port == port for u in inst.get("urls", [])):
            kept.append({**inst, "url_label_value": "{{.Host}}", "timeout": f"{interval:g}s"})
    return _dump_instances(kept)


def _dump_instances(instances: Sequence[Mapping[str, Any]]) -> str:
    out: list[str] = []
    for inst in instances:
        out.append("[[instances]]")
        for k, v in inst.items():
            out.append(f"{k} = {_toml_value(v)}")
        out.append("")
    return "\n".join(out)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")
