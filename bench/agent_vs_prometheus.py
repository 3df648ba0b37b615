"""kubescrape versus the Prometheus agent on the kubelet job: CPU, memory, throughput, same series delivered.

Per scenario: start the kubelet emulator (``kubescrape emulate``, its CPU is not counted) and a real
Prometheus server as the remote-write receiver; then, in turn, on the same targets and the same interval, run
the Prometheus agent (``prometheus --enable-feature=agent``) and ``kubescrape run``; measure each over a
window after a warm-up; print one markdown table per scenario with the ratio kubescrape/Prometheus, and
compare the series sets each agent delivered. ``bench/README.md`` explains every figure.

    python3 -m bench.agent_vs_prometheus --quick
    python3 -m bench.agent_vs_prometheus --scenario 1x100 --scenario 20x100 --output bench/results/x.md
    python3 -m bench.agent_vs_prometheus --scenario 1x250 --profile /tmp/prof   # py-spy on kubescrape
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make `bench` and `kubescrape` importable
    sys.path.insert(0, str(ROOT))

from bench.procstat import RssSampler, RssSummary, cpu_seconds  # noqa: E402
from kubescrape.prometheus import PROMETHEUS_BIN, Prometheus, free_port  # noqa: E402

AGENT_LABEL = "bench_agent"
# Labels one agent adds by design and the other does not: never part of the equivalence check.
AGENT_SPECIFIC_LABELS = frozenset({AGENT_LABEL, "agent_hostname"})
# Series Prometheus synthesises for every scrape (not exposed by the target).
PROMETHEUS_SYNTHETIC = frozenset(
    {
        "up",
        "scrape_duration_seconds",
        "scrape_samples_scraped",
        "scrape_samples_post_metric_relabeling",
        "scrape_series_added",
    }
)
PROMETHEUS = "prometheus"
KUBESCRAPE = "kubescrape"
# Each agent's own counter of samples sent to remote write.
SENT_METRIC = {
    PROMETHEUS: "prometheus_remote_storage_samples_total",
    KUBESCRAPE: "kubescrape_samples_sent_total",
}
# Each agent's own counter of samples it queued for remote write (Prometheus: synthetic series included).
APPENDED_METRIC = {
    PROMETHEUS: "prometheus_agent_samples_appended_total",
    KUBESCRAPE: "kubescrape_samples_scraped_total",
}


# ----------------------------------------------------------------------------------------------------------
# Scenarios and targets


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


def prometheus_agent_yaml(jobs: Sequence[ScrapeJob], interval: float, write_url: str) -> str:
    """The Prometheus agent configuration equivalent to the Categraf one: same targets, interval, labels."""
    scrape_configs: list[dict[str, Any]] = []
    for i, j in enumerate(jobs):
        cfg: dict[str, Any] = {
            # job_name must be unique; the `job` target label below is what the series carry
            "job_name": f"{j.job}-{i}",
            "scheme": j.scheme,
            "metrics_path": j.metrics_path,
            "static_configs": [{"targets": list(j.addresses), "labels": {"job": j.job, **dict(j.labels)}}],
        }
        if j.bearer_token_file:
            cfg["authorization"] = {"credentials_file": j.bearer_token_file}
        if j.scheme == "https":
            tls: dict[str, Any] = {"insecure_skip_verify": j.insecure_skip_verify}
            if j.ca_file:
                tls["ca_file"] = j.ca_file
            cfg["tls_config"] = tls
        scrape_configs.append(cfg)
    seconds = f"{interval:g}s"
    doc = {
        "global": {
            "scrape_interval": seconds,
            "scrape_timeout": seconds,
            "external_labels": {AGENT_LABEL: PROMETHEUS},
        },
        "scrape_configs": scrape_configs,
        "remote_write": [{"url": write_url}],
    }
    return yaml.safe_dump(doc, sort_keys=False)


def kubescrape_config_toml(interval: float, write_url: str) -> str:
    """``config.toml`` for ``kubescrape run``: Categraf's [global] and [[writers]] with the bench label."""
    return (
        "[global]\n"
        'hostname = "bench"\n'
        f"interval = {max(1, round(interval))}\n"
        f'labels = {{ {AGENT_LABEL} = "{KUBESCRAPE}" }}\n'
        "\n[writer_opt]\nbatch = 2000\n"
        f'\n[[writers]]\nurl = "{write_url}"\n'
    )


# ----------------------------------------------------------------------------------------------------------
# Pure helpers: percentiles, histograms, exposition parsing, series sets


def percentile(values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) of ``values`` with linear interpolation between closest ranks."""
    if not values:
        return float("nan")
    s = sorted(values)
    pos = q * (len(s) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def histogram_quantile(q: float, buckets: Mapping[float, float]) -> float:
    """Prometheus' ``histogram_quantile``: cumulative ``{le: count}`` → q-quantile, linear within a bucket.

    A quantile that falls in the +Inf bucket is the upper bound of the last finite bucket, as in Prometheus.
    """
    items = sorted(buckets.items())
    if not items or items[-1][1] <= 0:
        return float("nan")
    total = items[-1][1]
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for le, count in items:
        if count >= rank:
            if le == float("inf"):
                return prev_le
            if count == prev_count:
                return le
            return prev_le + (le - prev_le) * (rank - prev_count) / (count - prev_count)
        prev_le, prev_count = le, count
    return prev_le


def parse_exposition(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Samples of a text exposition, by sample name (``x_bucket``, ``x_total`` ... as written)."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((dict(s.labels), float(s.value)))
    return out


def metric_sum(
    samples: Mapping[str, list[tuple[dict[str, str], float]]],
    name: str,
    where: Mapping[str, str] | None = None,
) -> float:
    """Sum of one metric's samples over all label sets (optionally only those matching ``where``)."""
    total = 0.0
    for labels, value in samples.get(name, []):
        if where is None or all(labels.get(k) == v for k, v in where.items()):
            total += value
    return total


def histogram_buckets(
    samples: Mapping[str, list[tuple[dict[str, str], float]]], name: str
) -> dict[float, float]:
    """Cumulative buckets of histogram ``name`` summed over every label set except ``le``."""
    out: dict[float, float] = {}
    for labels, value in samples.get(name + "_bucket", []):
        le = float(labels["le"])
        out[le] = out.get(le, 0.0) + value
    return out


def bucket_delta(after: Mapping[float, float], before: Mapping[float, float]) -> dict[float, float]:
    return {le: count - before.get(le, 0.0) for le, count in after.items()}


SeriesKey = tuple[tuple[str, str], ...]


@dataclass
class SeriesDiff:
    """How two delivered series sets differ once agent-specific labels are set aside."""

    a: str
    b: str
    count_a: int
    count_b: int
    ignored_labels: list[str]
    labels_only_a: list[str]
    labels_only_b: list[str]
    names_only_a: list[str]
    names_only_b: list[str]
    only_a: list[SeriesKey] = field(default_factory=list)
    only_b: list[SeriesKey] = field(default_factory=list)

    @property
    def same(self) -> bool:
        return not (self.names_only_a or self.names_only_b or self.only_a or self.only_b)


def compare_series_sets(
    a_name: str,
    a: Iterable[Mapping[str, str]],
    b_name: str,
    b: Iterable[Mapping[str, str]],
    ignore: Iterable[str] = AGENT_SPECIFIC_LABELS,
) -> SeriesDiff:
    """Compare two series sets (each a list of label maps with ``__name__``).

    Labels in ``ignore``, and label names that only one side uses at all, are dropped before comparing (and
    listed). Metric names only one side delivered are listed apart and not compared series by series. The
    comparison is of multisets, so two series that collapse into one after dropping labels still show.
    """
    a_list, b_list = list(a), list(b)
    ignored = set(ignore)
    names_a = {k for s in a_list for k in s} - ignored
    names_b = {k for s in b_list for k in s} - ignored
    only_labels_a, only_labels_b = sorted(names_a - names_b), sorted(names_b - names_a)
    drop = ignored | set(only_labels_a) | set(only_labels_b)

    def key(s: Mapping[str, str]) -> SeriesKey:
        return tuple(sorted((k, v) for k, v in s.items() if k not in drop))

    metric_a = {s.get("__name__", "") for s in a_list}
    metric_b = {s.get("__name__", "") for s in b_list}
    common = metric_a & metric_b
    count_a = Counter(key(s) for s in a_list if s.get("__name__", "") in common)
    count_b = Counter(key(s) for s in b_list if s.get("__name__", "") in common)
    return SeriesDiff(
        a=a_name,
        b=b_name,
        count_a=len(a_list),
        count_b=len(b_list),
        ignored_labels=sorted(ignored),
        labels_only_a=only_labels_a,
        labels_only_b=only_labels_b,
        names_only_a=sorted(metric_a - metric_b),
        names_only_b=sorted(metric_b - metric_a),
        only_a=sorted((count_a - count_b).elements()),
        only_b=sorted((count_b - count_a).elements()),
    )


def render_series_key(key: SeriesKey) -> str:
    labels = dict(key)
    name = labels.pop("__name__", "")
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def _name_list(names: Sequence[str], limit: int = 12) -> str:
    """Names for a report line; ``*`` marks the series Prometheus synthesises for every scrape."""
    if not names:
        return "none"
    shown = [n + ("*" if n in PROMETHEUS_SYNTHETIC else "") for n in names[:limit]]
    return ", ".join(shown) + (" …" if len(names) > limit else "")


def render_diff(diff: SeriesDiff, examples: int = 5) -> str:
    """Markdown summary of a series-set comparison."""
    lines = [
        f"Series delivered: {diff.a} {diff.count_a}, {diff.b} {diff.count_b}. "
        f"Ignored labels: {', '.join(diff.ignored_labels) or 'none'}.",
        f"- labels only {diff.a} adds (dropped before comparing): {', '.join(diff.labels_only_a) or 'none'}",
        f"- labels only {diff.b} adds (dropped before comparing): {', '.join(diff.labels_only_b) or 'none'}",
        f"- metric names only from {diff.a} ({len(diff.names_only_a)}): {_name_list(diff.names_only_a)}",
        f"- metric names only from {diff.b} ({len(diff.names_only_b)}): {_name_list(diff.names_only_b)}",
        f"- series of common names only from {diff.a}: {len(diff.only_a)}; "
        f"only from {diff.b}: {len(diff.only_b)}",
    ]
    for side, keys in ((diff.a, diff.only_a), (diff.b, diff.only_b)):
        if keys:
            by_name = Counter(dict(k).get("__name__", "") for k in keys)
            lines.append(
                f"  - only {side}, by metric name: "
                + ", ".join(f"{n} {c}" for n, c in by_name.most_common(8))
                + (" …" if len(by_name) > 8 else "")
            )
        for k in keys[:examples]:
            lines.append(f"  - only {side}: `{render_series_key(k)}`")
    verdict = "SAME series set" if diff.same else "DIFFERENT series sets"
    if not diff.only_a and not diff.only_b and not diff.same:
        verdict += " (only whole metric names differ)"
    lines.append(f"- verdict: **{verdict}**")
    if any(n in PROMETHEUS_SYNTHETIC for n in (*diff.names_only_a, *diff.names_only_b)):
        lines.append(
            "- `*`: a series Prometheus synthesises for every scrape (the target does not expose it)"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------
# Results and tables


@dataclass
class AgentResult:
    """What one agent did during the measurement window."""

    agent: str
    window: float
    cpu_seconds: float
    rss: RssSummary
    rss_overall: RssSummary
    samples_scraped: float
    samples_received: float
    samples_sent: float
    scrapes: float
    failed_scrapes: float
    scrape_p50: float
    scrape_p90: float
    scrape_p99: float
    scrape_p99_histogram: float = float("nan")
    t_start: float = 0.0
    t_end: float = 0.0
    series: list[dict[str, str]] = field(default_factory=list, repr=False)

    @property
    def cpu_us_per_sample(self) -> float:
        return 1e6 * self.cpu_seconds / self.samples_scraped if self.samples_scraped else float("nan")

    @property
    def cpu_us_per_received(self) -> float:
        return 1e6 * self.cpu_seconds / self.samples_received if self.samples_received else float("nan")

    @property
    def samples_per_second(self) -> float:
        return self.samples_scraped / self.window if self.window else float("nan")


MIB = 1024 * 1024


def table_rows(r: AgentResult) -> list[tuple[str, float, str]]:
    """(figure, value, format) rows of one agent, in table order."""
    return [
        ("CPU seconds (user+sys) in window", r.cpu_seconds, ".2f"),
        ("CPU % of one core", 100 * r.cpu_seconds / r.window if r.window else float("nan"), ".1f"),
        ("CPU µs per sample scraped", r.cpu_us_per_sample, ".2f"),
        ("CPU µs per sample stored", r.cpu_us_per_received, ".2f"),
        ("RSS peak (MiB, whole run)", r.rss_overall.peak / MIB, ".1f"),
        ("RSS steady (MiB, median 2nd half)", r.rss.steady / MIB, ".1f"),
        ("samples scraped in window", r.samples_scraped, ".0f"),
        ("samples sent (agent's own count)", r.samples_sent, ".0f"),
        ("samples stored by receiver", r.samples_received, ".0f"),
        ("samples scraped per second", r.samples_per_second, ".0f"),
        ("scrapes in window", r.scrapes, ".0f"),
        ("failed scrapes in window", r.failed_scrapes, ".0f"),
        ("scrape duration p50 (ms)", 1000 * r.scrape_p50, ".1f"),
        ("scrape duration p90 (ms)", 1000 * r.scrape_p90, ".1f"),
        ("scrape duration p99 (ms)", 1000 * r.scrape_p99, ".1f"),
        ("scrape duration p99 (ms), self-metrics histogram", 1000 * r.scrape_p99_histogram, ".1f"),
    ]


def _fmt(value: float, spec: str) -> str:
    if value != value:  # NaN
        return "n/a"
    return format(value, spec)


def ratio(a: float, b: float) -> str:
    """``a / b`` as text (``n/a`` when undefined)."""
    if a != a or b != b or b == 0:
        return "n/a"
    return f"{a / b:.2f}"


def render_table(scenario: Scenario, results: Mapping[str, AgentResult]) -> str:
    """One markdown table: a row per figure, a column per agent, and kubescrape/Prometheus."""
    agents = [a for a in (PROMETHEUS, KUBESCRAPE) if a in results]
    head = (
        f"### {scenario.name}: {scenario.nodes} node(s) × {scenario.pods} pods, "
        f"interval {scenario.interval:g} s, "
        f"window {scenario.window:g} s after {scenario.warmup:g} s warm-up\n\n"
    )
    header = "| figure | " + " | ".join(_agent_title(a) for a in agents)
    sep = "|---|" + "---:|" * len(agents)
    both = len(agents) == 2
    if both:
        header += " | kubescrape / Prometheus"
        sep += "---:|"
    lines = [header + " |", sep]
    per_agent = {a: table_rows(results[a]) for a in agents}
    for i, (label, _, spec) in enumerate(per_agent[agents[0]]):
        cells = [_fmt(per_agent[a][i][1], spec) for a in agents]
        if both:
            cells.append(ratio(per_agent[KUBESCRAPE][i][1], per_agent[PROMETHEUS][i][1]))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return head + "\n".join(lines) + "\n"


def goal_line(results: Mapping[str, AgentResult]) -> str:
    """Whether issue 6's goal (CPU/sample ≤ 0.25×, steady RSS ≤ 0.5× the Prometheus agent) is met."""
    if PROMETHEUS not in results or KUBESCRAPE not in results:
        return ""
    p, k = results[PROMETHEUS], results[KUBESCRAPE]
    cpu = k.cpu_us_per_sample / p.cpu_us_per_sample if p.cpu_us_per_sample else float("nan")
    rss = k.rss.steady / p.rss.steady if p.rss.steady else float("nan")
    return (
        f"Goal (CPU/sample ≤ 0.25×, steady RSS ≤ 0.5×): CPU/sample {cpu:.2f}× "
        f"{'met' if cpu <= 0.25 else 'NOT met'}; steady RSS {rss:.2f}× {'met' if rss <= 0.5 else 'NOT met'}."
    )


def _agent_title(agent: str) -> str:
    return "Prometheus agent" if agent == PROMETHEUS else "kubescrape"


def load_average() -> str:
    """The 1, 5 and 15 minute load averages (other work on the machine skews every figure)."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def machine_header() -> str:
    """CPU model, cores, kernel, Python and Prometheus versions, kubescrape commit."""
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    cores = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    prom = "not found"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run([PROMETHEUS_BIN, "--version"], capture_output=True, text=True, timeout=10)
        prom = (out.stdout or out.stderr).splitlines()[0].strip()
    commit = "unknown"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = (
            subprocess.run(
                ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
            or "unknown"
        )
    return (
        f"- CPU: {model}, {cores} cores ({usable} usable)\n"
        f"- kernel: {platform.release()}; Python {platform.python_version()}; {prom}\n"
        f"- kubescrape commit: {commit}; load average at start: {load_average()}\n"
    )


# ----------------------------------------------------------------------------------------------------------
# Processes


class Processes:
    """Every process the bench starts; ``close()`` ends them all (SIGTERM, then SIGKILL) by their own id."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, args: Sequence[str], log: Path, cwd: Path | None = None) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            p = subprocess.Popen(
                list(args),
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                start_new_session=True,
                env=child_env(),
            )
        self.procs.append(p)
        return p

    @staticmethod
    def stop(p: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=5)

    def close(self) -> None:
        for p in reversed(self.procs):
            self.stop(p)
        self.procs.clear()


def wait_tcp(
    host: str, port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None, log: Path | None = None
) -> None:
    """Wait until ``host:port`` accepts a connection (fail early if ``proc`` exits)."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(
                f"process exited with {proc.returncode} before listening on {host}:{port}: {_tail(log)}"
            )
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listening on {host}:{port} after {timeout:g} s: {_tail(log)}")
        time.sleep(0.1)


def _tail(log: Path | None, n: int = 15) -> str:
    if log is None:
        return ""
    with contextlib.suppress(OSError):
        return "\n".join(log.read_text(errors="replace").splitlines()[-n:])
    return ""


def http_get(url: str, timeout: float = 10.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        body: bytes = r.read()
    return body.decode()


_T0 = time.monotonic()


def progress(message: str) -> None:
    """A progress line on stderr with the seconds since the bench started."""
    print(f"[{time.monotonic() - _T0:6.1f} s] {message}", file=sys.stderr, flush=True)


def kubescrape_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "kubescrape", *args]


def child_env() -> dict[str, str]:
    """The environment for child processes: this checkout's ``kubescrape`` first, even if not installed."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def node_addresses(nodes: int) -> list[str]:
    """Where the emulator's nodes listen: 127.0.0.1 for one node, 127.0.1.k for node k otherwise."""
    return ["127.0.0.1"] if nodes == 1 else [f"127.0.1.{k}" for k in range(1, nodes + 1)]


def free_port_on_all(hosts: Sequence[str]) -> int:
    """A port free on every host given (checked by binding)."""
    for _ in range(50):
        port = free_port(hosts[0])
        ok = True
        for h in hosts[1:]:
            with socket.socket() as s:
                try:
                    s.bind((h, port))
                except OSError:
                    ok = False
                    break
        if ok:
            return port
    raise RuntimeError("no port free on every emulated node address")


# ----------------------------------------------------------------------------------------------------------
# Measuring one agent


def _window(seconds: float) -> str:
    return f"{round(seconds * 1000)}ms"


def _scalar(result: list[dict[str, Any]]) -> float:
    return sum(float(r["value"][1]) for r in result)


def receiver_api(receiver: Prometheus, path: str, params: Mapping[str, str], timeout: float = 300.0) -> Any:
    """GET ``/api/v1/<path>`` of the receiver with a long timeout (large scenarios query 10^5+ series)."""
    query = urllib.parse.urlencode(params)
    with urllib.request.urlopen(f"{receiver.url}/api/v1/{path}?{query}", timeout=timeout) as r:
        body = json.loads(r.read())
    if body.get("status") != "success":
        raise RuntimeError(f"receiver API {path} failed: {body}")
    return body["data"]


def receiver_query(receiver: Prometheus, expr: str, at: float) -> list[dict[str, Any]]:
    """Instant query evaluated at ``at``."""
    result: list[dict[str, Any]] = receiver_api(receiver, "query", {"query": expr, "time": f"{at:.3f}"})[
        "result"
    ]
    return result


def count_received(receiver: Prometheus, agent: str, window: float, at: float) -> float:
    """Samples of ``agent`` stored by the receiver with timestamps in the window ending at ``at``.

    One ``count_over_time`` per metric name: over all names at once, series that differ only by name would
    collide once the function drops ``__name__``, and Prometheus rejects the query.
    """
    sel = f'{AGENT_LABEL}="{agent}"'
    names: list[str] = receiver_api(
        receiver,
        "label/__name__/values",
        {"match[]": f"{{{sel}}}", "start": f"{at - window:.3f}", "end": f"{at:.3f}"},
    )
    w = _window(window)

    def one(name: str) -> float:
        return _scalar(receiver_query(receiver, f"sum(count_over_time({name}{{{sel}}}[{w}]))", at))

    with ThreadPoolExecutor(max_workers=2) as pool:
        return sum(pool.map(one, names))


def stable_count(receiver: Prometheus, agent: str, window: float, at: float, timeout: float) -> float:
    """``count_received`` once two readings a second apart agree (the receiver has committed all)."""
    deadline = time.monotonic() + timeout
    last = count_received(receiver, agent, window, at)
    while True:
        time.sleep(1.0)
        value = count_received(receiver, agent, window, at)
        if value == last:
            return value
        if time.monotonic() > deadline:
            print(f"warning: {agent}'s samples still arriving after {timeout:g} s", file=sys.stderr)
            return value
        last = value


def wait_sent(metrics_url: str, agent: str, appended: float, timeout: float) -> None:
    """Wait until ``agent`` reports as sent at least the ``appended`` samples it had queued at window end.

    Remote write is a queue, so once the sent counter passes that mark every sample of the window has left
    (give or take the batches in flight, which the agent flushes when it is stopped).
    """
    deadline = time.monotonic() + timeout
    while metric_sum(parse_exposition(http_get(metrics_url)), SENT_METRIC[agent]) < appended:
        if time.monotonic() > deadline:
            print(f"warning: {agent} had not sent the window's samples after {timeout:g} s", file=sys.stderr)
            return
        time.sleep(0.5)


def wait_first_sample(
    receiver: Prometheus, agent: str, proc: subprocess.Popen[bytes], log: Path, timeout: float
) -> None:
    """Wait until the receiver holds a sample of ``agent``: the warm-up counts from there.

    Agents do not scrape at once (the Prometheus agent first syncs targets, then waits for its scrape offset).
    """
    deadline = time.monotonic() + timeout
    while not receiver_query(receiver, f'count({{{AGENT_LABEL}="{agent}"}})', time.time()):
        if proc.poll() is not None:
            raise RuntimeError(f"{agent} exited with {proc.returncode} before delivering: {_tail(log)}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"no sample of {agent} reached the receiver in {timeout:g} s: {_tail(log)}")
        time.sleep(0.5)


@dataclass
class Run:
    """Paths and ports of one scenario's run."""

    scenario: Scenario
    workdir: Path
    receiver: Prometheus
    jobs: list[ScrapeJob]
    categraf_toml: str
    profile_dir: Path | None
    spool: bool


def measure(run: Run, procs: Processes, agent: str) -> AgentResult:
    """Start ``agent``, warm up, measure over the window, wait for delivery, stop it."""
    sc = run.scenario
    wd = run.workdir / agent
    wd.mkdir(parents=True, exist_ok=True)
    log = wd / "agent.log"
    port = free_port()
    if agent == PROMETHEUS:
        (wd / "prometheus.yml").write_text(
            prometheus_agent_yaml(run.jobs, sc.interval, run.receiver.write_url)
        )
        args = [
            PROMETHEUS_BIN,
            f"--config.file={wd / 'prometheus.yml'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--enable-feature=agent",
            f"--storage.agent.path={wd / 'agent-data'}",
        ]
    else:
        conf = wd / "conf"
        (conf / "input.prometheus").mkdir(parents=True, exist_ok=True)
        (conf / "config.toml").write_text(kubescrape_config_toml(sc.interval, run.receiver.write_url))
        (conf / "input.prometheus" / "prometheus.toml").write_text(run.categraf_toml)
        args = kubescrape_cmd(
            "run",
            "--config-dir",
            str(conf),
            "--listen",
            f"127.0.0.1:{port}",
            "--spool-dir",
            str(wd / "spool"),
        )
        if not run.spool:
            args.append("--no-spool")
    proc = procs.start(args, log, cwd=wd)
    sampler: RssSampler | None = None
    profiler: subprocess.Popen[bytes] | None = None
    try:
        wait_tcp("127.0.0.1", port, 60, proc, log)
        sampler = RssSampler(proc.pid, 0.5).start()
        wait_first_sample(run.receiver, agent, proc, log, timeout=60)
        progress(f"{sc.name} {agent}: first sample delivered; warm-up {sc.warmup:g} s")
        time.sleep(sc.warmup)
        metrics_url = f"http://127.0.0.1:{port}/metrics"
        before = parse_exposition(http_get(metrics_url))
        if agent == KUBESCRAPE and run.profile_dir is not None:
            profiler = _start_profiler(procs, proc.pid, sc.window, run.profile_dir / f"{sc.name}.txt")
        sampler.mark()
        progress(f"{sc.name} {agent}: window {sc.window:g} s")
        t0, cpu0 = time.time(), cpu_seconds(proc.pid)
        time.sleep(sc.window)
        t1, cpu1 = time.time(), cpu_seconds(proc.pid)
        rss_window = sampler.window()
        after = parse_exposition(http_get(metrics_url))
        if proc.poll() is not None:
            raise RuntimeError(f"{agent} exited with {proc.returncode} during the window: {_tail(log)}")
        rss_overall = sampler.overall()
        if profiler is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                profiler.wait(timeout=sc.window + 60)
        # A sample stamped inside the window (cAdvisor stamps stats with the last housekeeping time) may be
        # scraped only by the first scrape after it: keep scraping until that scrape is surely done, so both
        # agents deliver every sample of the window whatever their scrape phase.
        progress(f"{sc.name} {agent}: delivering the window's samples")
        time.sleep(2 * sc.interval + 1)
        appended = metric_sum(parse_exposition(http_get(metrics_url)), APPENDED_METRIC[agent])
        wait_sent(metrics_url, agent, appended, timeout=60 + 2 * sc.interval)
        # Both agents flush their remote-write queue on SIGTERM; the receiver is then idle for the queries.
        Processes.stop(proc, timeout=60)
        progress(f"{sc.name} {agent}: stopped; reading the receiver")
        received = stable_count(run.receiver, agent, t1 - t0, t1, timeout=120)
        sent_metric = SENT_METRIC[agent]
        # Percentiles of the per-scrape `scrape_duration_seconds` samples each agent delivered: the same
        # method for both (a histogram's buckets would blur a bimodal /metrics + /metrics/cadvisor mix).
        durations = delivered_durations(run.receiver, agent, t1 - t0, t1)
        p50, p90, p99 = (percentile(durations, q) for q in (0.5, 0.9, 0.99))
        hist_p99 = float("nan")
        if agent == PROMETHEUS:
            scraped, scrapes, failed = _prometheus_figures(run.receiver, t1 - t0, t1)
        else:
            scraped = metric_sum(after, "kubescrape_samples_scraped_total") - metric_sum(
                before, "kubescrape_samples_scraped_total"
            )
            scrapes = metric_sum(after, "kubescrape_scrapes_total") - metric_sum(
                before, "kubescrape_scrapes_total"
            )
            ok = _ok_scrapes(after) - _ok_scrapes(before)
            failed = scrapes - ok
            buckets = bucket_delta(
                histogram_buckets(after, "kubescrape_scrape_duration_seconds"),
                histogram_buckets(before, "kubescrape_scrape_duration_seconds"),
            )
            hist_p99 = histogram_quantile(0.99, buckets)
        series: list[dict[str, str]] = receiver_api(
            run.receiver,
            "series",
            {"match[]": f'{{{AGENT_LABEL}="{agent}"}}', "start": f"{t0:.3f}", "end": f"{t1:.3f}"},
        )
        return AgentResult(
            agent=agent,
            window=t1 - t0,
            cpu_seconds=cpu1 - cpu0,
            rss=rss_window,
            rss_overall=rss_overall,
            samples_scraped=scraped,
            samples_received=received,
            samples_sent=metric_sum(after, sent_metric) - metric_sum(before, sent_metric),
            scrapes=scrapes,
            failed_scrapes=failed,
            scrape_p50=p50,
            scrape_p90=p90,
            scrape_p99=p99,
            scrape_p99_histogram=hist_p99,
            series=series,
            t_start=t0,
            t_end=t1,
        )
    finally:
        if profiler is not None:
            Processes.stop(profiler, timeout=30)
        if sampler is not None:
            sampler.stop()
        Processes.stop(proc)


def _ok_scrapes(samples: Mapping[str, list[tuple[dict[str, str], float]]]) -> float:
    total = 0.0
    for labels, value in samples.get("kubescrape_scrapes_total", []):
        if labels.get("result") in ("ok", "success"):
            total += value
    return total


def _prometheus_figures(receiver: Prometheus, window: float, at: float) -> tuple[float, float, float]:
    """The Prometheus agent's own per-scrape series, as delivered: samples scraped, scrapes, failures."""
    sel = f'{AGENT_LABEL}="{PROMETHEUS}"'
    w = _window(window)
    scraped = _scalar(
        receiver_query(receiver, f"sum(sum_over_time(scrape_samples_scraped{{{sel}}}[{w}]))", at)
    )
    scrapes = _scalar(receiver_query(receiver, f"sum(count_over_time(up{{{sel}}}[{w}]))", at))
    up = _scalar(receiver_query(receiver, f"sum(sum_over_time(up{{{sel}}}[{w}]))", at))
    return scraped, scrapes, scrapes - up


def delivered_durations(receiver: Prometheus, agent: str, window: float, at: float) -> list[float]:
    """Every ``scrape_duration_seconds`` sample ``agent`` delivered for the window (all targets)."""
    sel = f'{AGENT_LABEL}="{agent}"'
    result = receiver_query(receiver, f"scrape_duration_seconds{{{sel}}}[{_window(window)}]", at)
    return [float(v) for r in result for _, v in r["values"]]


def _start_profiler(procs: Processes, pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    """py-spy on ``pid`` for ``seconds`` (collapsed stacks), or None when py-spy is not installed."""
    exe = shutil.which("py-spy")
    if exe is None:
        print("py-spy not found (pip install py-spy): no profile", file=sys.stderr)
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    return procs.start(
        [
            exe,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, int(seconds))),
            "--rate",
            "200",
            "--format",
            "raw",
            "--output",
            str(out),
            "--nonblocking",
            "--function",
        ],
        out.with_suffix(".log"),
    )


def profile_summary(collapsed: str, top: int = 20) -> str:
    """Top functions of a py-spy collapsed-stack profile: self share and inclusive share of samples."""
    self_counts: Counter[str] = Counter()
    incl_counts: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        n = int(count_text)
        frames = [f for f in stack.split(";") if f]
        if not frames:
            continue
        total += n
        self_counts[frames[-1]] += n
        for f in set(frames):
            incl_counts[f] += n
    if total == 0:
        return "no samples\n"
    lines = [f"{total} samples", "", "| self % | inclusive % | function |", "|---:|---:|---|"]
    for f, n in self_counts.most_common(top):
        lines.append(f"| {100 * n / total:.1f} | {100 * incl_counts[f] / total:.1f} | `{f}` |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------------------
# A scenario


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


def run_scenario(
    sc: Scenario, agents: Sequence[str], workdir: Path, profile_dir: Path | None, spool: bool
) -> tuple[dict[str, AgentResult], SeriesDiff | None]:
    """Everything for one scenario; every process started here is ended before returning."""
    procs = Processes()
    (workdir / "receiver").mkdir(parents=True, exist_ok=True)
    receiver = Prometheus(workdir / "receiver")
    results: dict[str, AgentResult] = {}
    try:
        with emulator(procs, workdir, sc.nodes, sc.pods) as (printed, port):
            categraf_toml = bench_instances_toml(printed, port, sc.interval)
            jobs = jobs_from_categraf(categraf_toml)
            receiver.start()
            progress(f"{sc.name}: emulator ({sc.nodes} × {sc.pods} pods) and receiver up")
            run = Run(sc, workdir, receiver, jobs, categraf_toml, profile_dir, spool)
            for agent in agents:
                progress(f"{sc.name} {agent}: starting")
                results[agent] = measure(run, procs, agent)
    finally:
        receiver.stop()
        procs.close()
    diff = None
    if PROMETHEUS in results and KUBESCRAPE in results:
        diff = compare_series_sets(
            PROMETHEUS, results[PROMETHEUS].series, KUBESCRAPE, results[KUBESCRAPE].series
        )
    return results, diff


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--scenario",
        action="append",
        choices=sorted(SCENARIOS),
        help="scenario to run (repeatable; default: all)",
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"one small scenario ({QUICK.name}), under a minute"
    )
    parser.add_argument(
        "--agents",
        default=f"{PROMETHEUS},{KUBESCRAPE}",
        help="comma-separated agents to measure, in order (default: both)",
    )
    parser.add_argument("--window", type=float, help="override the measurement window (s)")
    parser.add_argument("--no-spool", action="store_true", help="run kubescrape with --no-spool")
    parser.add_argument("--profile", type=Path, help="record a py-spy profile of kubescrape into this dir")
    parser.add_argument("--output", type=Path, help="also write the markdown report here")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, configs)")
    ns = parser.parse_args(argv)

    scenarios = [QUICK] if ns.quick else [SCENARIOS[s] for s in (ns.scenario or sorted(SCENARIOS))]
    if ns.window:
        scenarios = [Scenario(s.name, s.nodes, s.pods, s.interval, s.warmup, ns.window) for s in scenarios]
    agents = [a.strip() for a in ns.agents.split(",") if a.strip()]
    unknown = set(agents) - {PROMETHEUS, KUBESCRAPE}
    if unknown:
        parser.error(f"unknown agent(s) {sorted(unknown)}: use {PROMETHEUS} and/or {KUBESCRAPE}")

    report = ["## kubescrape vs the Prometheus agent (kubelet job)", "", machine_header()]
    print("\n".join(report), flush=True)
    failed = False
    base = Path(tempfile.mkdtemp(prefix="kubescrape-bench-"))
    try:
        for sc in scenarios:
            try:
                results, diff = run_scenario(sc, agents, base / sc.name, ns.profile, not ns.no_spool)
            except Exception as e:  # one failed scenario must not lose the others' tables
                text = f"### {sc.name}: FAILED\n\n```\n{type(e).__name__}: {e}\n```\n"
                print(text, flush=True)
                report.append(text)
                failed = True
                continue
            part = [render_table(sc, results)]
            if goal := goal_line(results):
                part.append(goal + "\n")
            if diff is not None:
                part.append(render_diff(diff) + "\n")
            if ns.profile is not None and (prof := ns.profile / f"{sc.name}.txt").exists():
                part.append(f"py-spy profile of kubescrape ({prof}):\n\n" + profile_summary(prof.read_text()))
            part.append(f"Load average after the scenario: {load_average()}\n")
            text = "\n".join(part)
            print(text, flush=True)
            report.append(text)
            if ns.output is not None:  # written after every scenario, so a later failure keeps it
                ns.output.parent.mkdir(parents=True, exist_ok=True)
                ns.output.write_text("\n".join(report))
    finally:
        if ns.keep:
            print(f"work directory kept: {base}", file=sys.stderr)
        else:
            shutil.rmtree(base, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
