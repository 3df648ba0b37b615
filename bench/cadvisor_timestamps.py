"""What honoring cAdvisor's timestamps does to queries (issue 15): stopped containers, rate().

cAdvisor stamps its stats samples with the container's housekeeping time (spec samples carry none). A
scraper that honors those timestamps does not track such series for staleness (Prometheus' rule), so a
container that stops leaves its stats series visible in instant queries until the lookback delta (5 min)
has passed since its last sample; kube-prometheus scrapes cAdvisor with ``honorTimestamps: false`` and
Prometheus 2.48 added ``track_timestamps_staleness`` for this (prometheus#13060; VictoriaMetrics#1807).

The run: the kubelet emulator's ``/metrics/cadvisor`` for one node with pod churn (a replaced pod is a
container that stops: its cgroups and their series disappear; an OOM-killed container restarts with a new
container id, so its old series disappear the same way — the emulator does not model OOM kills themselves,
``container_oom_events_total`` stays 0) is scraped on a simulated clock every ``interval`` seconds through
:class:`~kubescrape.scrape.cache.SeriesCache` under three settings, and each scrape's chunks are
remote-written into one real Prometheus (``/usr/bin/prometheus --web.enable-remote-write-receiver``,
lookback 5 min), each setting under its own ``setting`` label. Then Prometheus is asked:

* ``linger``: for every pod that stopped (and was followed by at least one more scrape), how long after
  the last scrape that still had it ``container_cpu_usage_seconds_total`` (a stats series, own timestamp)
  and ``container_spec_memory_limit_bytes`` (a spec series, no timestamp) keep appearing in an instant
  query (range query, 5 s step; 0 s would be "gone at the next step").
* ``rate() of a stopped pod``: how long ``rate(container_cpu_usage_seconds_total[1m])`` keeps returning it
  (range vectors ignore staleness markers: about the window, whatever the setting).
* ``rate() of a live container``: ``rate(container_cpu_usage_seconds_total{id="/"}[1m])`` at every scrape
  step after the first minute: steps without a value (gaps), its noise (standard deviation / mean) and how
  far it is from the honored setting's rate (mean absolute difference / mean). Without honored timestamps
  a value measured at housekeeping time is stored at scrape time, up to a housekeeping interval (10 s)
  later, by a varying lag.
* ``pods seen``: how many pods ``count by (pod) (container_cpu_usage_seconds_total)`` sees at each step
  (lingering series of stopped pods are counted next to their replacements).

Run: ``python3 -m bench.cadvisor_timestamps [--quick] [--out FILE]``. Bounded: simulated time, one
Prometheus; about a minute (``--quick``: seconds).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubescrape.emulator.payloads import NodePayloads
from kubescrape.prometheus import Prometheus, prometheus_available, running_prometheus
from kubescrape.remote_write import Chunk
from kubescrape.remote_write.encode import compress
from kubescrape.scrape.cache import SeriesCache
from kubescrape.testing import FakeClock

__all__ = ["SETTINGS", "Run", "Setting", "linger", "main", "push", "simulate"]


@dataclass(frozen=True)
class Setting:
    """One scrape configuration under test; ``name`` becomes the ``setting`` label."""

    name: str
    honor_timestamps: bool
    track_timestamps_staleness: bool


SETTINGS = (
    Setting("honor", True, False),
    Setting("honor+track", True, True),
    Setting("no-honor", False, False),
)

STATS = "container_cpu_usage_seconds_total"
SPEC = "container_spec_memory_limit_bytes"


@dataclass
class Run:
    """What the simulation did: scrape times (epoch s) and, per stopped pod, its last scrape time."""

    start: float
    interval: float
    pods: int
    scrape_times: list[float] = field(default_factory=list)
    stopped: dict[str, float] = field(default_factory=dict)
    samples: int = 0
    stale_markers: dict[str, int] = field(default_factory=dict)


def push(prom: Prometheus, chunks: list[Chunk]) -> None:
    """One remote-write 1.0 request with these chunks (raises on a non-2xx answer)."""
    if not chunks:
        return
    body = compress(b"".join(c.data for c in chunks))
    req = urllib.request.Request(
        prom.write_url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/x-protobuf",
            "Content-Encoding": "snappy",
            "X-Prometheus-Remote-Write-Version": "0.1.0",
        },
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        resp.read()


def _labeler(setting: str) -> Any:
    def label(name: str, labels: list[tuple[str, str]]) -> list[tuple[str, str]]:
        # As a Prometheus scrape stores them: empty label values are no labels; sorted.
        pairs = [(k, v) for k, v in labels if v]
        pairs += [("__name__", name), ("instance", "node-1:10250"), ("job", "cadvisor"), ("setting", setting)]
        return sorted(pairs)

    return label


def simulate(
    prom: Prometheus,
    *,
    pods: int = 20,
    churn_per_min: float = 1.0,
    minutes: float = 12.0,
    interval: float = 15.0,
    settings: tuple[Setting, ...] = SETTINGS,
    seed: int = 7,
) -> Run:
    """Scrape an emulated node's cAdvisor endpoint on a simulated clock that ends ``minutes`` + 6 min
    before now, under every setting, and remote-write every scrape into ``prom``."""
    start = math.floor(time.time() - minutes * 60 - 360)
    clock = FakeClock(start, autojump=False)
    node = NodePayloads("node-1", "10.0.0.1", pods, churn_per_min=churn_per_min, seed=seed, clock=clock)
    caches = {
        s.name: SeriesCache(
            _labeler(s.name),
            honor_timestamps=s.honor_timestamps,
            track_timestamps_staleness=s.track_timestamps_staleness,
        )
        for s in settings
    }
    run = Run(start=start, interval=interval, pods=pods, stale_markers={s.name: 0 for s in settings})
    previous: dict[str, float] = {}
    for _ in range(int(minutes * 60 / interval) + 1):
        now = clock.time()
        body = node.cadvisor()
        current = {p.name for p in node.pods()}
        for name, last in previous.items():
            if name not in current:
                run.stopped[name] = last
        previous = {name: now for name in current}
        run.scrape_times.append(now)
        for s in settings:
            result = caches[s.name].process(body, int(now * 1000))
            run.samples += result.samples_post_relabel
            run.stale_markers[s.name] += result.samples_stale
            push(prom, result.chunks)
        clock.advance(interval)
    return run


def _range(prom: Prometheus, expr: str, start: float, end: float, step: float) -> list[float]:
    """Times (epoch s) at which ``expr`` has a value."""
    data = prom.api("query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step=f"{step:g}")
    return sorted({float(t) for series in data["result"] for t, _ in series["values"]})


def linger(prom: Prometheus, expr: str, last_scrape: float, *, step: float = 5.0) -> float | None:
    """Seconds after ``last_scrape`` during which ``expr`` still has a value (``None``: never had one)."""
    times = _range(prom, expr, last_scrape - 60, last_scrape + 400, step)
    if not times:
        return None
    return max(0.0, times[-1] - last_scrape)


def _steps(prom: Prometheus, expr: str, run: Run) -> dict[float, float]:
    """``expr`` at every scrape step from one minute after the first scrape to the last: time -> value."""
    start = run.scrape_times[0] + 60
    end = run.scrape_times[-1]
    data = prom.api(
        "query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step=f"{run.interval:g}"
    )
    return {float(t): float(v) for series in data["result"] for t, v in series["values"]}


def _rate_noise(
    prom: Prometheus, setting: str, run: Run, reference: dict[float, float]
) -> tuple[int, int, float, float, float, dict[float, float]]:
    """Steps expected, steps without a value, mean, stdev/mean and mean |difference| from ``reference``
    / mean of a live container's rate(); and the values (the reference of the next settings)."""
    got = _steps(prom, f'rate({STATS}{{id="/",setting="{setting}"}}[1m])', run)
    expected = int((run.scrape_times[-1] - run.scrape_times[0] - 60) // run.interval) + 1
    values = list(got.values())
    if len(values) < 2:
        return expected, expected - len(values), math.nan, math.nan, math.nan, got
    mean = statistics.fmean(values)
    ref = reference or got
    diffs = [abs(v - ref[t]) for t, v in got.items() if t in ref]
    off = statistics.fmean(diffs) / mean if diffs else math.nan
    return expected, expected - len(values), mean, statistics.pstdev(values) / mean, off, got


def _fmt(values: list[float | None]) -> str:
    got = [v for v in values if v is not None]
    if not got:
        return "–"
    return f"{min(got):.0f}–{max(got):.0f} s (median {statistics.median(got):.0f})"


def measure(prom: Prometheus, run: Run, settings: tuple[Setting, ...] = SETTINGS) -> str:
    """The result tables (markdown) for a finished :func:`simulate` run."""
    followed = {p: t for p, t in run.stopped.items() if t + run.interval <= run.scrape_times[-1]}
    lines = [
        f"{len(run.scrape_times)} scrapes every {run.interval:g} s of one emulated node, {len(followed)} "
        f"stopped pods followed by at least one more scrape, {run.samples} samples written.",
        "",
        "| setting | stale markers sent | stats series visible after stop | spec series visible after stop "
        "| rate()[1m] of a stopped pod after stop |",
        "|---|---|---|---|---|",
    ]
    for s in settings:
        sel = f'setting="{s.name}"'
        stats = [linger(prom, f'count({STATS}{{pod="{p}",{sel}}})', t) for p, t in followed.items()]
        spec = [linger(prom, f'count({SPEC}{{pod="{p}",{sel}}})', t) for p, t in followed.items()]
        rates = [linger(prom, f'count(rate({STATS}{{pod="{p}",{sel}}}[1m]))', t) for p, t in followed.items()]
        lines.append(
            f"| {s.name} | {run.stale_markers[s.name]} | {_fmt(stats)} | {_fmt(spec)} | {_fmt(rates)} |"
        )
    lines += [
        "",
        "| setting | rate()[1m] steps (live root cgroup) | steps without a value | mean (cores) "
        f"| stdev / mean | mean abs. difference from {settings[0].name} / mean "
        f"| pods seen by count by (pod) ({STATS}), mean (running: {run.pods}) |",
        "|---|---|---|---|---|---|---|",
    ]
    reference: dict[float, float] = {}
    for s in settings:
        expected, gaps, mean, cv, off, got = _rate_noise(prom, s.name, run, reference)
        reference = reference or got
        seen = _steps(prom, f'count(count by (pod) ({STATS}{{pod!="",setting="{s.name}"}}))', run)
        pods = statistics.fmean(seen.values()) if seen else math.nan
        lines.append(
            f"| {s.name} | {expected} | {gaps} | {mean:.3f} | {cv:.3f} | {off:.3f} | {pods:.1f} "
            f"(max {max(seen.values(), default=math.nan):.0f}) |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the measurement and print (and optionally write) the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="6 pods, 4 simulated minutes")
    parser.add_argument("--out", type=Path, help="also write the tables to this file")
    args = parser.parse_args(argv)
    if not prometheus_available():
        print("needs the Debian package 'prometheus' (/usr/bin/prometheus)", file=sys.stderr)
        return 2
    kwargs: dict[str, Any] = {"pods": 6, "churn_per_min": 2.0, "minutes": 4.0} if args.quick else {}
    t0 = time.monotonic()
    with running_prometheus() as prom:
        run = simulate(prom, **kwargs)
        tables = measure(prom, run)
        version = prom.api("status/buildinfo").get("version", "?")
    header = (
        f"Prometheus {version} as the receiver (lookback 5 min); "
        f"{json.dumps(kwargs) if kwargs else 'defaults'}; "
        f"{time.monotonic() - t0:.0f} s wall."
    )
    out = f"{header}\n\n{tables}\n"
    print(out)
    if args.out is not None:
        args.out.write_text(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
