"""What it costs to start: CPU seconds from exec to the first scrapes, repeated, and the import of the CLI.

One kubelet emulator node and one receiver stay up; each agent (:mod:`bench.agents`) is started ``--runs``
times in turn on them. Per start, a thread samples the agent's CPU from ``/proc`` every 20 ms from exec on;
once the agent's first scrapes are delivered, the receiver says when each ended (the ``up`` sample's
timestamp, the scrape's start, plus its ``scrape_duration_seconds``), and the timeline says how much CPU the
agent had used by then. Then it is stopped and started afresh. Report only: nothing is asserted.

Separately, the imports of ``kubescrape run`` (``kubescrape.__main__``, ``kubescrape.run_options``,
``kubescrape.agent``) in a fresh interpreter: CPU seconds, modules, RSS after the import, and the import
time by top-level package (``-X importtime``); and the same for the typer CLI, for comparison.

Before measuring, kubescrape's own modules are byte-compiled (``compileall``): with
``PYTHONDONTWRITEBYTECODE=1`` in the environment a source checkout would otherwise recompile every module
on every start (0.18 s CPU), which an installed package (pip compiles at install) does not pay.

    python3 -m bench.startup [--runs 3] [--pods 250] [--agents kubescrape]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
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

from bench.agents import AGENTS, AgentContext, make_agent  # noqa: E402
from bench.compare import AGENT_LABEL  # noqa: E402
from bench.processes import Processes, child_env, precompile, progress  # noqa: E402
from bench.procstat import CpuTimeline  # noqa: E402
from bench.receiver import Receiver, window_duration  # noqa: E402
from bench.report import agent_title, fmt, load_average, machine_header  # noqa: E402
from bench.targets import Scenario, bench_instances_toml, emulator, jobs_from_categraf  # noqa: E402


@dataclass(frozen=True)
class Startup:
    """One start of one agent: CPU seconds and wall seconds from exec."""

    agent: str
    cpu_first: float
    cpu_all: float
    wall_first: float
    wall_all: float
    # CPU seconds when the first scrape began (its samples' timestamp): start-up proper, before any body
    # is fetched or parsed (a cold first scrape of a big target costs more than the start-up itself).
    cpu_start: float = math.nan


def first_scrape_start(receiver: Receiver, agent: str, since: float) -> float:
    """When ``agent``'s earliest delivered scrape began: the smallest timestamp of its ``up`` samples."""
    window = window_duration(max(1.0, time.time() - since))
    rows = receiver.query(f'up{{{AGENT_LABEL}="{agent}"}}[{window}]', time.time())
    starts = [float(t) for r in rows for t, _ in r["values"]]
    return min(starts) if starts else math.nan


def start_once(name: str, ctx: AgentContext, receiver: Receiver, targets: int, timeout: float) -> Startup:
    """Start agent ``name``, wait for every target's first scrape to be delivered, stop it."""
    agent = make_agent(name)
    exec_at = time.time()
    agent.start(ctx)
    timeline = CpuTimeline(agent.pid).start()
    try:
        agent.wait_ready(60)
        receiver.wait_first_sample(name, agent.proc, agent.log, timeout)
        first = receiver.wait_first_scrapes(name, exec_at, targets, timeout)
        started = first_scrape_start(receiver, name, exec_at)
    finally:
        timeline.stop()
        agent.stop()
    if first is None:
        return Startup(name, math.nan, math.nan, math.nan, math.nan)
    complete = first.targets >= targets
    return Startup(
        name,
        timeline.at(first.first_done),
        timeline.at(first.all_done) if complete else math.nan,
        first.first_done - exec_at,
        first.all_done - exec_at if complete else math.nan,
        timeline.at(started) if not math.isnan(started) else math.nan,
    )


def median(values: Sequence[float]) -> float:
    """Median of the defined values (NaN when none is)."""
    ok = [v for v in values if not math.isnan(v)]
    return statistics.median(ok) if ok else math.nan


def render_start_cpu(runs: Sequence[Startup]) -> str:
    """Markdown: per agent, CPU seconds from exec to the start of its first scrape, and for each start."""
    out = ["| agent | CPU s → first scrape begins, median [min–max] | per start |", "|---|---:|---|"]
    for name in dict.fromkeys(r.agent for r in runs):
        values = [r.cpu_start for r in runs if r.agent == name]
        ok = [v for v in values if not math.isnan(v)]
        cell = f"{median(ok):.2f} [{min(ok):.2f}–{max(ok):.2f}]" if ok else "n/a"
        out.append(f"| {agent_title(name)} | {cell} | {', '.join(fmt(v, '.2f') for v in values)} |")
    return "\n".join(out) + "\n"


def render_startups(runs: Sequence[Startup]) -> str:
    """Markdown: per agent, median and range over its starts."""
    out = [
        "| agent | starts | CPU s → first scrape (any target), median [min–max] "
        "| CPU s → every target scraped once, median [min–max] "
        "| wall s → every target scraped once, median |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in dict.fromkeys(r.agent for r in runs):
        mine = [r for r in runs if r.agent == name]

        def cell(values: list[float]) -> str:
            ok = [v for v in values if not math.isnan(v)]
            if not ok:
                return "n/a"
            return f"{median(ok):.2f} [{min(ok):.2f}–{max(ok):.2f}]"

        out.append(
            f"| {agent_title(name)} | {len(mine)} | {cell([r.cpu_first for r in mine])} "
            f"| {cell([r.cpu_all for r in mine])} | {fmt(median([r.wall_all for r in mine]), '.2f')} |"
        )
    return "\n".join(out) + "\n"


# The modules `kubescrape run` imports before its first scrape: the entry point, its table of run options and
# the agent it starts (the typer CLI only for other commands, help and errors).
RUN_MODULES = ("kubescrape.__main__", "kubescrape.run_options", "kubescrape.agent")
CLI_MODULES = ("kubescrape.cli", "kubescrape.agent")
IMPORT_PROBE = """\
import importlib, json, resource, sys, time
t = time.process_time()
for m in sys.argv[1:]:
    importlib.import_module(m)
cpu = time.process_time() - t
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"cpu": cpu, "modules": len(sys.modules), "maxrss": rss,
                  "heavy": sorted(m for m in ("aiohttp", "pydantic", "typer", "click", "rich",
                                              "prometheus_client", "yaml", "google.protobuf", "cryptography",
                                              "uvloop", "cramjam", "kubescrape.discovery")
                                  if m in sys.modules)}))
"""


def import_env() -> dict[str, str]:
    """The child environment plus what ``kubescrape run`` sets before its imports (kubescrape/__main__.py)."""
    return {"PYDANTIC_DISABLE_PLUGINS": "__all__", **child_env()}


def import_cost(modules: Sequence[str] = RUN_MODULES, top: int = 10, runs: int = 3) -> str:
    """Markdown: what importing ``modules`` costs in a fresh interpreter (the median of ``runs``), by
    package."""
    samples = []
    for _ in range(runs):
        probe = subprocess.run([sys.executable, "-c", IMPORT_PROBE, *modules], capture_output=True,
                               text=True, timeout=120, env=import_env(), check=True)
        samples.append(json.loads(probe.stdout))
    data = sorted(samples, key=lambda d: float(d["cpu"]))[len(samples) // 2]
    lines = [
        f"`import {', '.join(modules)}` in a fresh interpreter (median of {runs}): {data['cpu']:.2f} s CPU, "
        f"{data['modules']} modules, max RSS {data['maxrss'] / 2**20:.0f} MiB; "
        f"heavy packages loaded: {', '.join(data['heavy']) or 'none'}.",
    ]
    if top <= 0:
        return "\n".join(lines) + "\n"
    timed = subprocess.run([sys.executable, "-X", "importtime", "-c", "import " + ", ".join(modules)],
                           capture_output=True, text=True, timeout=120, env=import_env(), check=True)
    rows = parse_importtime(timed.stderr)
    lines += [
        "",
        "Import time by top-level package (`-X importtime`, self time summed, one run):",
        "",
        "| package | ms |",
        "|---|---:|",
    ]
    for package, us in rows[:top]:
        lines.append(f"| `{package}` | {us / 1000:.0f} |")
    return "\n".join(lines) + "\n"


def parse_importtime(stderr: str) -> list[tuple[str, int]]:
    """Import time by top-level package: the ``self`` µs of every module of ``-X importtime`` output summed
    by the first component of its name, largest first.

    Lines read ``import time: <self µs> | <cumulative µs> | <indent><module>``.
    """
    totals: dict[str, int] = {}
    for line in stderr.splitlines():
        if not line.startswith("import time:"):
            continue
        parts = line[len("import time:"):].split("|")
        if len(parts) != 3 or not parts[0].strip().isdigit():
            continue
        root = parts[2].strip().split(".")[0]
        totals[root] = totals.get(root, 0) + int(parts[0])
    return sorted(totals.items(), key=lambda r: (-r[1], r[0]))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3, help="starts per agent (default 3)")
    parser.add_argument("--pods", type=int, default=250, help="pods of the emulated node (default 250)")
    parser.add_argument("--interval", type=float, default=15.0, help="scrape interval in s (default 15)")
    parser.add_argument("--agents", default=",".join(AGENTS), help="comma-separated agents (default: all)")
    ns = parser.parse_args(argv)
    agents = [a.strip() for a in ns.agents.split(",") if a.strip()]
    unknown = set(agents) - set(AGENTS)
    if unknown:
        parser.error(f"unknown agent(s) {sorted(unknown)}: choose from {', '.join(AGENTS)}")

    print(f"## Start-up: exec → first scrapes (1 node × {ns.pods} pods, interval {ns.interval:g} s)\n")
    print(machine_header())
    precompile()
    print("kubescrape's modules byte-compiled first (`compileall`), as an installed package is.\n")
    print(import_cost())
    print(import_cost(CLI_MODULES, top=0))
    sc = Scenario("startup", 1, ns.pods, ns.interval, 0.0, 0.0)
    with tempfile.TemporaryDirectory(prefix="kubescrape-bench-startup-") as tmp:
        base = Path(tmp)
        procs = Processes()
        receiver = Receiver(base / "receiver")
        runs: list[Startup] = []
        try:
            with emulator(procs, base, 1, ns.pods) as (printed, port):
                toml = bench_instances_toml(printed, port, ns.interval)
                jobs = jobs_from_categraf(toml)
                targets = sum(len(j.addresses) for j in jobs)
                receiver.start()
                for name in agents:
                    for i in range(ns.runs):
                        progress(f"startup {name}: start {i + 1} of {ns.runs}")
                        ctx = AgentContext(base / f"{name}-{i}", sc, jobs, toml, receiver.write_url, procs)
                        runs.append(start_once(name, ctx, receiver, targets, 2 * ns.interval + 30))
        finally:
            receiver.stop()
            procs.close()
    print(render_startups(runs))
    print(render_start_cpu(runs))
    print(f"Load average after: {load_average()}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
