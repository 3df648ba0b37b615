"""Results of one agent's window and the markdown the benchmark prints: tables, goals, machine header."""

from __future__ import annotations

import contextlib
import math
import os
import platform
import subprocess
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.agents import AGENTS, KUBESCRAPE, PROMETHEUS, VMAGENT, VMAGENT_BIN
from bench.processes import ROOT, child_env
from bench.procstat import RssSummary
from bench.targets import Scenario
from kubescrape.prometheus import PROMETHEUS_BIN

MIB = 1024 * 1024
NAN = float("nan")


@dataclass
class AgentResult:
    """What one agent did during the measurement window, and its start-up."""

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
    samples_scraped_own: float = NAN
    scrape_p99_histogram: float = NAN
    startup_cpu_first: float = NAN
    startup_cpu_all: float = NAN
    startup_wall_first: float = NAN
    t_start: float = 0.0
    t_end: float = 0.0
    series: list[dict[str, str]] = field(default_factory=list, repr=False)
    received_by_name: dict[str, float] = field(default_factory=dict, repr=False)

    @property
    def cpu_us_per_sample(self) -> float:
        return 1e6 * self.cpu_seconds / self.samples_scraped if self.samples_scraped else NAN

    @property
    def cpu_us_per_received(self) -> float:
        return 1e6 * self.cpu_seconds / self.samples_received if self.samples_received else NAN

    @property
    def samples_per_second(self) -> float:
        return self.samples_scraped / self.window if self.window else NAN


def table_rows(r: AgentResult) -> list[tuple[str, float, str]]:
    """(figure, value, format) rows of one agent, in table order."""
    return [
        ("CPU seconds (user+sys) in window", r.cpu_seconds, ".2f"),
        ("CPU % of one core", 100 * r.cpu_seconds / r.window if r.window else NAN, ".1f"),
        ("CPU µs per sample scraped", r.cpu_us_per_sample, ".2f"),
        ("CPU µs per sample stored", r.cpu_us_per_received, ".2f"),
        ("RSS peak (MiB, whole run)", r.rss_overall.peak / MIB, ".1f"),
        ("RSS steady (MiB, median 2nd half)", r.rss.steady / MIB, ".1f"),
        ("samples scraped in window", r.samples_scraped, ".0f"),
        ("samples scraped (agent's own count)", r.samples_scraped_own, ".0f"),
        ("samples sent (agent's own count)", r.samples_sent, ".0f"),
        ("samples stored by receiver", r.samples_received, ".0f"),
        ("samples scraped per second", r.samples_per_second, ".0f"),
        ("scrapes in window", r.scrapes, ".0f"),
        ("failed scrapes in window", r.failed_scrapes, ".0f"),
        ("scrape duration p50 (ms)", 1000 * r.scrape_p50, ".1f"),
        ("scrape duration p90 (ms)", 1000 * r.scrape_p90, ".1f"),
        ("scrape duration p99 (ms)", 1000 * r.scrape_p99, ".1f"),
        ("scrape duration p99 (ms), self-metrics histogram", 1000 * r.scrape_p99_histogram, ".1f"),
        ("start-up CPU s, exec → first scrape (any target) done", r.startup_cpu_first, ".2f"),
        ("start-up CPU s, exec → every target scraped once", r.startup_cpu_all, ".2f"),
        ("start-up wall s, exec → first scrape (any target) done", r.startup_wall_first, ".2f"),
    ]


def fmt(value: float, spec: str) -> str:
    """``value`` formatted, ``n/a`` for NaN."""
    return "n/a" if math.isnan(value) else format(value, spec)


def ratio(a: float, b: float) -> str:
    """``a / b`` as text (``n/a`` when undefined)."""
    if math.isnan(a) or math.isnan(b) or b == 0:
        return "n/a"
    return f"{a / b:.2f}"


def agent_title(agent: str) -> str:
    return AGENTS[agent].title if agent in AGENTS else agent


def render_table(scenario: Scenario, results: Mapping[str, AgentResult]) -> str:
    """One markdown table: a row per figure, a column per agent, then kubescrape / each other agent."""
    agents = [a for a in AGENTS if a in results]
    peers = [a for a in agents if a != KUBESCRAPE] if KUBESCRAPE in results else []
    head = (
        f"### {scenario.name}: {scenario.nodes} node(s) × {scenario.pods} pods, "
        f"interval {scenario.interval:g} s, "
        f"window {scenario.window:g} s after {scenario.warmup:g} s warm-up\n\n"
    )
    titles = [agent_title(a) for a in agents] + [f"kubescrape / {agent_title(p)}" for p in peers]
    lines = ["| figure | " + " | ".join(titles) + " |", "|---|" + "---:|" * len(titles)]
    per_agent = {a: table_rows(results[a]) for a in agents}
    for i, (label, _, spec) in enumerate(per_agent[agents[0]]):
        cells = [fmt(per_agent[a][i][1], spec) for a in agents]
        cells += [ratio(per_agent[KUBESCRAPE][i][1], per_agent[p][i][1]) for p in peers]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return head + "\n".join(lines) + "\n"


def render_stored_differences(results: Mapping[str, AgentResult], top: int = 8) -> str:
    """Where the samples stored for each agent differ, by metric name (empty when they are all equal).

    The receiver stores a (series, timestamp) once, so agents that scraped the same samples should have
    the same count per name; a difference names the metrics to look at.
    """
    agents = [a for a in AGENTS if a in results]
    names = sorted({n for a in agents for n in results[a].received_by_name})
    rows: list[tuple[float, str, list[float]]] = []
    for n in names:
        counts = [results[a].received_by_name.get(n, 0.0) for a in agents]
        if max(counts) != min(counts):
            rows.append((max(counts) - min(counts), n, counts))
    if not rows:
        return ""
    rows.sort(key=lambda r: (-r[0], r[1]))
    out = [
        f"Samples stored differ for {len(rows)} metric name(s) (largest differences first):",
        "",
        "| metric | " + " | ".join(agent_title(a) for a in agents) + " |",
        "|---|" + "---:|" * len(agents),
    ]
    for _, n, counts in rows[:top]:
        out.append(f"| `{n}` | " + " | ".join(f"{c:.0f}" for c in counts) + " |")
    if len(rows) > top:
        out.append(f"| … {len(rows) - top} more | " + " | ".join("" for _ in agents) + " |")
    return "\n".join(out) + "\n"


# Issue 14's goals: kubescrape's figure ≤ factor × the peer's, same run.
GOALS: tuple[tuple[str, str, float], ...] = (
    ("CPU/sample", PROMETHEUS, 0.25),
    ("CPU/sample", VMAGENT, 0.25),
    ("steady RSS", PROMETHEUS, 0.4),
    ("steady RSS", VMAGENT, 1.0),
)


def goal_line(results: Mapping[str, AgentResult]) -> str:
    """Whether each of issue 14's goals is met in this scenario (those whose peer was measured)."""
    if KUBESCRAPE not in results:
        return ""
    k = results[KUBESCRAPE]
    parts: list[str] = []
    for figure, peer, limit in GOALS:
        if peer not in results:
            continue
        p = results[peer]
        if figure == "CPU/sample":
            mine, theirs = k.cpu_us_per_sample, p.cpu_us_per_sample
        else:
            mine, theirs = k.rss.steady, p.rss.steady
        value = mine / theirs if theirs and not math.isnan(theirs) else NAN
        verdict = "n/a" if math.isnan(value) else ("met" if value <= limit else "NOT met")
        parts.append(f"{figure} vs {agent_title(peer)} {fmt(value, '.2f')}× (goal ≤ {limit:g}×) {verdict}")
    return "Goals: " + "; ".join(parts) + "." if parts else ""


def load_average() -> str:
    """The 1, 5 and 15 minute load averages (other work on the machine skews every figure)."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def _first_line(args: Sequence[str]) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(list(args), capture_output=True, text=True, timeout=10)
        for line in (out.stdout + out.stderr).splitlines():
            if line.strip():
                return line.strip()
    return "not found"


def vmagent_version() -> str:
    """vmagent's version: Debian's build prints an empty ``-version``, so ask dpkg first."""
    version = _first_line(["dpkg-query", "-W", "-f", "${Version}", "victoria-metrics"])
    if version != "not found" and "no packages" not in version:
        return f"vmagent (Debian victoria-metrics {version})"
    return _first_line([VMAGENT_BIN, "-version"])


def kubescrape_build() -> str:
    """Whether this checkout's scrape cache runs its compiled warm loop (the optional C extension)."""
    probe = "import kubescrape.scrape.cache as c; print(getattr(c, 'COMPILED', 'n/a'))"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                             env=child_env())
        if out.returncode == 0:
            return {"True": "compiled", "False": "pure Python"}.get(out.stdout.strip(), out.stdout.strip())
    return "unknown"


def machine_header() -> str:
    """CPU model, cores, kernel, Python and peer versions, kubescrape commit, load average."""
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    cores = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    commit = _first_line(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    return (
        f"- CPU: {model}, {cores} cores ({usable} usable)\n"
        f"- kernel: {platform.release()}; Python {platform.python_version()}; "
        f"{_first_line([PROMETHEUS_BIN, '--version'])}; {vmagent_version()}\n"
        f"- kubescrape commit: {commit} (scrape cache warm loop: {kubescrape_build()}); "
        f"load average at start: {load_average()}\n"
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
