"""What it costs to start: CPU seconds from exec to the first scrapes, repeated, and the import of the CLI.

One kubelet emulator node and one receiver stay up; each agent (:mod:`bench.agents`) is started ``--runs``
times in turn on them. Per start, a thread samples the agent's CPU from ``/proc`` every 20 ms from exec on;
once the agent's first scrapes are delivered, the receiver says when each ended (the ``up`` sample's
timestamp, the scrape's start, plus its ``scrape_duration_seconds``), and the timeline says how much CPU the
agent had used by then. Then it is stopped and started afresh. Report only: nothing is asserted.

Separately, the imports of ``kubescrape run`` (``kubescrape.__main__``, ``kubescrape.run_options``,
``kubescrape.agent``) in a fresh interpreter: CPU seconds, modules, RSS after the import, and the import
time by top-level package (``-X importtime``); and the same for the typer CLI, for comparison.

With ``--instructions`` (needs valgrind), the instructions ``kubescrape run`` executes from exec to the start
of its first scrape, counted by valgrind's cachegrind: the same figure on every run, where CPU seconds on a
shared 2-core VM vary by ±20 % from one start to the next. The agent is the one under test, on the same
configuration, with its first scrape due at once; it exits as that scrape begins. The same probe without
valgrind gives the agent's VmRSS as that scrape begins (three starts).

Before measuring, kubescrape's own modules are byte-compiled (``compileall``): with
``PYTHONDONTWRITEBYTECODE=1`` in the environment a source checkout would otherwise recompile every module
on every start (0.18 s CPU), which an installed package (pip compiles at install) does not pay.

    python3 -m bench.startup [--runs 3] [--pods 250] [--agents kubescrape] [--instructions]
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
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

from bench.agents import AGENTS, KUBESCRAPE, AgentContext, make_agent  # noqa: E402
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


# `python -m kubescrape run …` whose first scrape is due at once and which exits, without a word, as it
# begins: what it costs to get there. The scrape loop's module is patched as it is first imported, so the
# run path's imports happen in their own order.
FIRST_SCRAPE_PROBE = """\
import importlib.abc, importlib.machinery, os, sys

class Patch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "kubescrape.scrape.loop":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)

            async def scrape(self):
                with open("/proc/self/status") as status:
                    rss = [line.split()[1] for line in status if line.startswith("VmRSS:")]
                os.write(2, f"VMRSS_KB {rss[0]}\\n".encode())
                os._exit(0)

            module.ScrapeLoop.scrape = scrape
            module.scrape_offset = lambda *args, **kwargs: 0.0

        spec.loader.exec_module = exec_module
        return spec

sys.meta_path.insert(0, Patch())
sys.argv = ["kubescrape", *sys.argv[1:]]
from kubescrape.__main__ import main
main()
"""


def instructions_to_first_scrape(conf: Path, spool: Path) -> float:
    """Instructions (valgrind's cachegrind ``I refs``) from exec of ``kubescrape run --config-dir conf`` to
    the start of its first scrape. NaN without valgrind."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        return math.nan
    args = [valgrind, "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
            sys.executable, "-c", FIRST_SCRAPE_PROBE, "run", "--config-dir", str(conf), "--listen",
            "127.0.0.1:0", "--spool-dir", str(spool)]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600, env=child_env(), check=False)
    m = re.search(r"I\s+refs:\s+([\d,]+)", proc.stderr)
    if proc.returncode != 0 or m is None:
        raise RuntimeError(f"instruction count failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return int(m.group(1).replace(",", "")) / 1e6


def rss_at_first_scrape(conf: Path, spool: Path) -> float:
    """VmRSS (MiB) of ``kubescrape run --config-dir conf`` as its first scrape begins (the instruction
    probe, without valgrind)."""
    args = [sys.executable, "-c", FIRST_SCRAPE_PROBE, "run", "--config-dir", str(conf), "--listen",
            "127.0.0.1:0", "--spool-dir", str(spool)]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120, env=child_env(), check=False)
    m = re.search(r"VMRSS_KB (\d+)", proc.stderr)
    if proc.returncode != 0 or m is None:
        raise RuntimeError(f"RSS probe failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return int(m.group(1)) / 1024


def render_rss(values: Sequence[float]) -> str:
    """Markdown: kubescrape's VmRSS as its first scrape begins."""
    return (f"VmRSS as the first scrape begins ({len(values)} starts, no valgrind): median "
            f"{median(values):.1f} MiB [{min(values):.1f}–{max(values):.1f}].\n")


def render_instructions(counts: Sequence[float]) -> str:
    """Markdown: the instruction counts of ``kubescrape run`` to its first scrape."""
    ok = [c for c in counts if not math.isnan(c)]
    if not ok:
        return "Instructions to the first scrape: n/a (valgrind not installed).\n"
    return (f"Instructions from exec to the start of the first scrape (valgrind cachegrind, {len(ok)} runs): "
            f"median {median(ok):,.1f} M [{min(ok):,.1f}–{max(ok):,.1f}].\n")


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
    parser.add_argument("--instructions", action="store_true",
                        help="also count kubescrape's instructions to its first scrape (valgrind) and "
                        "measure its VmRSS there")
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
        counts: list[float] = []
        rss: list[float] = []
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
                if ns.instructions and KUBESCRAPE in agents:
                    conf = next(base.glob(f"{KUBESCRAPE}-*/conf"))
                    for i in range(3):
                        progress(f"startup {KUBESCRAPE}: instructions, run {i + 1} of 3")
                        spool = base / f"instructions-{i}" / "spool"
                        counts.append(instructions_to_first_scrape(conf, spool))
                        rss.append(rss_at_first_scrape(conf, base / f"rss-{i}" / "spool"))
        finally:
            receiver.stop()
            procs.close()
    print(render_startups(runs))
    print(render_start_cpu(runs))
    if ns.instructions:
        print(render_instructions(counts))
        if rss:
            print(render_rss(rss))
    print(f"Load average after: {load_average()}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
