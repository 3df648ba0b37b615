"""kubescrape versus the Prometheus agent and vmagent on the kubelet job: CPU, memory, start-up, same series.

Per scenario: start the kubelet emulator (``kubescrape emulate``, its CPU is not counted) and a real
Prometheus server as the remote-write receiver; then, in turn, on the same targets and the same interval, run
each agent under test (:mod:`bench.agents`); measure each over a window after a warm-up; print one markdown
table per scenario with the ratios kubescrape / each peer, and compare the series sets the agents delivered.
``bench/README.md`` explains every figure.

    python3 -m bench.agent_vs_prometheus --quick
    python3 -m bench.agent_vs_prometheus --scenario 1x100 --scenario 1x250 --output bench/results/x.md
    python3 -m bench.agent_vs_prometheus --scenario 1x250 --agents kubescrape --profile /tmp/prof
"""

from __future__ import annotations

import argparse
import contextlib
import math
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make `bench` and `kubescrape` importable
    sys.path.insert(0, str(ROOT))

from bench.agents import AGENTS, KUBESCRAPE, AgentContext, AgentUnderTest, make_agent  # noqa: E402
from bench.compare import SeriesDiff, compare_all, render_comparison  # noqa: E402
from bench.processes import Processes, precompile, progress, tail  # noqa: E402
from bench.procstat import CpuTimeline, RssSampler, cpu_seconds  # noqa: E402
from bench.receiver import Receiver  # noqa: E402
from bench.report import (  # noqa: E402
    AgentResult,
    goal_line,
    load_average,
    machine_header,
    profile_summary,
    render_stored_differences,
    render_table,
)
from bench.stats import bucket_delta, histogram_quantile, percentile  # noqa: E402
from bench.targets import (  # noqa: E402
    QUICK,
    SCENARIOS,
    Scenario,
    ScrapeJob,
    bench_instances_toml,
    emulator,
    jobs_from_categraf,
)


@dataclass
class Run:
    """What every agent of one scenario shares."""

    scenario: Scenario
    workdir: Path
    receiver: Receiver
    jobs: list[ScrapeJob]
    categraf_toml: str
    procs: Processes
    profile_dir: Path | None
    spool: bool


def measure(run: Run, agent: AgentUnderTest) -> AgentResult:
    """Start ``agent``, warm up, measure over the window, wait for delivery, stop it, read the receiver."""
    sc = run.scenario
    ctx = AgentContext(run.workdir / agent.name, sc, run.jobs, run.categraf_toml, run.receiver.write_url,
                       run.procs, run.spool)
    exec_at = time.time()
    agent.start(ctx)
    timeline = CpuTimeline(agent.pid).start()
    sampler: RssSampler | None = None
    profiler: subprocess.Popen[bytes] | None = None
    try:
        agent.wait_ready(60)
        sampler = RssSampler(agent.pid, 0.5).start()
        run.receiver.wait_first_sample(agent.name, agent.proc, agent.log, timeout=60)
        progress(f"{sc.name} {agent.name}: first sample delivered; warm-up {sc.warmup:g} s")
        time.sleep(sc.warmup)
        # Start-up: the first scrapes' ends are known only once their series are delivered.
        targets = sum(len(j.addresses) for j in run.jobs)
        first = run.receiver.wait_first_scrapes(agent.name, exec_at, targets, 2 * sc.interval + 10)
        timeline.stop()
        startup = (
            (
                timeline.at(first.first_done),
                timeline.at(first.all_done) if first.targets >= targets else math.nan,
                first.first_done - exec_at,
            )
            if first is not None
            else (math.nan, math.nan, math.nan)
        )
        before = agent.counters()
        if agent.name == KUBESCRAPE and run.profile_dir is not None:
            profiler = _start_profiler(run.procs, agent.pid, sc.window, run.profile_dir / f"{sc.name}.txt")
        sampler.mark()
        progress(f"{sc.name} {agent.name}: window {sc.window:g} s")
        t0, cpu0 = time.time(), cpu_seconds(agent.pid)
        time.sleep(sc.window)
        t1, cpu1 = time.time(), cpu_seconds(agent.pid)
        rss_window = sampler.window()
        after = agent.counters()
        if agent.proc.poll() is not None:
            raise RuntimeError(
                f"{agent.name} exited with {agent.proc.returncode} during the window: {tail(agent.log)}"
            )
        rss_overall = sampler.overall()
        if profiler is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                profiler.wait(timeout=sc.window + 60)
        # A sample stamped inside the window (cAdvisor stamps stats with the last housekeeping time) may be
        # scraped only by the first scrape after it: keep scraping until that scrape is surely done, so every
        # agent delivers every sample of the window whatever its scrape phase.
        progress(f"{sc.name} {agent.name}: delivering the window's samples")
        time.sleep(2 * sc.interval + 1)
        wait_drained(agent, agent.counters().queued, timeout=60 + 2 * sc.interval)
        agent.stop()
        progress(f"{sc.name} {agent.name}: stopped; reading the receiver")
        received = run.receiver.stable_count(agent.name, t1 - t0, t1, timeout=120)
        figures = run.receiver.scrape_figures(agent.name, t1 - t0, t1)
        # Percentiles of the per-scrape `scrape_duration_seconds` samples each agent delivered: the same
        # method for all (a histogram's buckets would blur a bimodal /metrics + /metrics/cadvisor mix).
        durations = run.receiver.durations(agent.name, t1 - t0, t1)
        p50, p90, p99 = (percentile(durations, q) for q in (0.5, 0.9, 0.99))
        buckets = bucket_delta(after.scrape_buckets, before.scrape_buckets)
        return AgentResult(
            agent=agent.name,
            window=t1 - t0,
            cpu_seconds=cpu1 - cpu0,
            rss=rss_window,
            rss_overall=rss_overall,
            samples_scraped=figures.samples_scraped,
            samples_scraped_own=after.scraped - before.scraped,
            samples_received=sum(received.values()),
            received_by_name=received,
            samples_sent=after.sent - before.sent,
            scrapes=figures.scrapes,
            failed_scrapes=figures.failed,
            scrape_p50=p50,
            scrape_p90=p90,
            scrape_p99=p99,
            scrape_p99_histogram=histogram_quantile(0.99, buckets) if buckets else math.nan,
            startup_cpu_first=startup[0],
            startup_cpu_all=startup[1],
            startup_wall_first=startup[2],
            series=run.receiver.series(agent.name, t0, t1),
            t_start=t0,
            t_end=t1,
        )
    finally:
        timeline.stop()
        if profiler is not None:
            Processes.stop(profiler, timeout=30)
        if sampler is not None:
            sampler.stop()
        agent.stop()


def wait_drained(agent: AgentUnderTest, queued: float, timeout: float) -> None:
    """Wait until ``agent`` has sent the ``queued`` samples it had taken in (remote write is a queue: once
    the sent counter passes that mark, every sample of the window has left)."""
    deadline = time.monotonic() + timeout
    while not agent.drained(queued):
        if time.monotonic() > deadline:
            print(f"warning: {agent.name} had not sent the window's samples after {timeout:g} s",
                  file=sys.stderr)
            return
        time.sleep(0.5)


def _start_profiler(procs: Processes, pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    """py-spy on ``pid`` for ``seconds`` (collapsed stacks), or None when py-spy is not installed."""
    exe = shutil.which("py-spy")
    if exe is None:
        print("py-spy not found (pip install py-spy): no profile", file=sys.stderr)
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    args = [exe, "record", "--pid", str(pid), "--duration", str(max(1, int(seconds))), "--rate", "200",
            "--format", "raw", "--output", str(out), "--nonblocking", "--function"]
    return procs.start(args, out.with_suffix(".log"))


def run_scenario(
    sc: Scenario, agents: Sequence[str], workdir: Path, profile_dir: Path | None, spool: bool
) -> tuple[dict[str, AgentResult], list[SeriesDiff]]:
    """Everything for one scenario; every process started here is ended before returning."""
    procs = Processes()
    receiver = Receiver(workdir / "receiver")
    results: dict[str, AgentResult] = {}
    try:
        with emulator(procs, workdir, sc.nodes, sc.pods) as (printed, port):
            categraf_toml = bench_instances_toml(printed, port, sc.interval)
            receiver.start()
            progress(f"{sc.name}: emulator ({sc.nodes} × {sc.pods} pods) and receiver up")
            run = Run(sc, workdir, receiver, jobs_from_categraf(categraf_toml), categraf_toml, procs,
                      profile_dir, spool)
            for name in agents:
                progress(f"{sc.name} {name}: starting")
                results[name] = measure(run, make_agent(name))
    finally:
        receiver.stop()
        procs.close()
    return results, compare_all({name: r.series for name, r in results.items()})


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--scenario", action="append", choices=sorted(SCENARIOS),
        help="scenario to run (repeatable; default: 1x100, 1x250, 20x100)",
    )
    parser.add_argument("--quick", action="store_true",
                        help=f"one small scenario ({QUICK.name}), about a minute")
    parser.add_argument(
        "--agents", default=",".join(AGENTS),
        help=f"comma-separated agents to measure, in order (default: {','.join(AGENTS)})",
    )
    parser.add_argument("--window", type=float, help="override the measurement window (s)")
    parser.add_argument("--no-spool", action="store_true", help="run kubescrape with --no-spool")
    parser.add_argument("--profile", type=Path, help="record a py-spy profile of kubescrape into this dir")
    parser.add_argument("--output", type=Path, help="also write the markdown report here")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, configs)")
    ns = parser.parse_args(argv)

    default = ["1x100", "1x250", "20x100"]
    scenarios = [QUICK] if ns.quick else [SCENARIOS[s] for s in (ns.scenario or default)]
    if ns.window:
        scenarios = [Scenario(s.name, s.nodes, s.pods, s.interval, s.warmup, ns.window) for s in scenarios]
    agents = [a.strip() for a in ns.agents.split(",") if a.strip()]
    unknown = set(agents) - set(AGENTS)
    if unknown:
        parser.error(f"unknown agent(s) {sorted(unknown)}: choose from {', '.join(AGENTS)}")

    report = ["## kubescrape vs the Prometheus agent and vmagent (kubelet job)", "", machine_header(),
              "", f"- {precompile()}"]
    print("\n".join(report), flush=True)
    failed = False
    base = Path(tempfile.mkdtemp(prefix="kubescrape-bench-"))
    try:
        for sc in scenarios:
            try:
                results, diffs = run_scenario(sc, agents, base / sc.name, ns.profile, not ns.no_spool)
            except Exception as e:  # one failed scenario must not lose the others' tables
                text = f"### {sc.name}: FAILED\n\n```\n{type(e).__name__}: {e}\n```\n"
                print(text, flush=True)
                report.append(text)
                failed = True
                continue
            part = [render_table(sc, results)]
            if goal := goal_line(results):
                part.append(goal + "\n")
            if stored := render_stored_differences(results):
                part.append(stored)
            if comparison := render_comparison(diffs):
                part.append(comparison)
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
