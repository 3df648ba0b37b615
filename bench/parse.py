"""Benchmark of the hot path: exposition text -> remote-write bytes, against prometheus_client's parser.

Times the kubelet emulator's /metrics/cadvisor payload (pods x containers x container_* families, explicit
ms timestamps as the kubelet serves them) and prints a markdown table measured in one run. The cold rows
(a first scrape: every series new; µs/sample is then µs per new series), the warm rows and the churn
rows (about one pod replaced between two scrapes, as on a busy node) are measured
with the pure-Python code and with the compiled one (``kubescrape.scrape._fastpath``, built at install
time; its rows are left out when it is not built). In a compiled build the make_labeler shortcut is
compiled in the pure rows too; ``KUBESCRAPE_PURE_PYTHON=1`` measures a fully pure process::

    python3 -m bench.parse            # full run
    python3 -m bench.parse --quick    # fewer repetitions (CI smoke)
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import sys
import time
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from kubescrape.config.models import AgentConfig, GlobalConfig, InstanceConfig
from kubescrape.emulator.payloads import NodePayloads
from kubescrape.remote_write.encode import clear_label_cache, compress
from kubescrape.scrape.cache import COMPILED, Labeler, SeriesCache
from kubescrape.scrape.parser import parse
from kubescrape.scrape.targets import build_targets, make_labeler
from kubescrape.testing import FakeClock


def cadvisor_scrapes(
    pods: int = 120, scrapes: int = 1, seed: int = 7, churn_per_min: float = 0.0
) -> list[bytes]:
    """Successive ``/metrics/cadvisor`` bodies of one emulated node, 15 s apart (``churn_per_min``: pods
    replaced per minute, as the emulator's ``--churn``).

    The kubelet emulator's payload (:mod:`kubescrape.emulator.payloads`): per pod a pod cgroup, a pause
    container and app containers with the ``container_*`` families the kubelet's cAdvisor serves, explicit
    millisecond timestamps, counters that grow and gauges that move between scrapes.
    """
    clock = FakeClock(autojump=False)
    node = NodePayloads("node-1", "10.0.0.1", pods, churn_per_min=churn_per_min, seed=seed, clock=clock)
    bodies = []
    for _ in range(scrapes):
        bodies.append(node.cadvisor())
        clock.advance(15.0)
    return bodies


def cadvisor_payload(pods: int = 120, seed: int = 7) -> bytes:
    """One ``/metrics/cadvisor`` body (see :func:`cadvisor_scrapes`)."""
    return cadvisor_scrapes(pods, 1, seed)[0]


def _labeler(name: str, labels: list[tuple[str, str]]) -> list[tuple[str, str]] | None:
    return [("__name__", name), *labels, ("instance", "node-1:10250"), ("job", "kubelet")]


def _target_labeler() -> Labeler:
    """The agent's own labeler for a kubelet cAdvisor target without relabel rules (instance and job
    target labels), as :func:`~kubescrape.scrape.targets.make_labeler` builds it."""
    target = build_targets(AgentConfig(
        global_=GlobalConfig(hostname="node-1", interval=15.0, omit_hostname=True),
        instances=[InstanceConfig(urls=["https://10.0.0.1:10250/metrics/cadvisor"],
                                  labels={"instance": "node-1:10250", "job": "kubelet"})],
    ))[0]
    return make_labeler(target)


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
    cold_repeat = 2 if quick else 5
    bodies = cadvisor_scrapes(pods, repeat + 2)
    text = bodies[0].decode()
    samples = len(parse(text))
    ts = 1_700_000_015_000  # the emulated node's FakeClock time: its own timestamps are in the window

    def client() -> None:
        for _ in text_string_to_metric_families(text):
            pass

    def cold(compiled: bool, labeler: Labeler = _labeler) -> Callable[[], None]:
        """A first scrape: every series is new (parsed, labeled, encoded), no label encodings cached."""

        def scrape() -> None:
            clear_label_cache()
            SeriesCache(labeler, compiled=compiled).process(bodies[0], ts)

        return scrape

    def warm(compiled: bool, compress_too: bool = False) -> Callable[[], None]:
        """Steady state: each timed run is the next scrape of the same node (new values and timestamps)."""
        cache = SeriesCache(_labeler, compiled=compiled)
        cache.process(bodies[0], ts)
        following = iter(bodies[1:])

        def scrape() -> None:
            result = cache.process(next(following), ts)
            if compress_too:
                for chunk in result.chunks:
                    compress(chunk.data)

        return scrape

    # Pod churn: about one pod replaced between two scrapes (its series leave, a new pod's arrive).
    churn_bodies = cadvisor_scrapes(pods, repeat + 2, seed=11, churn_per_min=CHURN_PER_MIN)

    def churning(compiled: bool) -> Callable[[], None]:
        cache = SeriesCache(_target_labeler(), compiled=compiled)
        cache.process(churn_bodies[0], ts)
        following = iter(churn_bodies[1:])

        def scrape() -> None:
            cache.process(next(following), ts)

        return scrape

    # The same scrapes as OpenMetrics (timestamps in seconds, # EOF): no fast path, a plain cache lookup.
    om_bodies = [_as_openmetrics(body) for body in bodies]
    om_cache = SeriesCache(_labeler)
    om_cache.process(om_bodies[0], ts, content_type=OPENMETRICS)
    om_warm_bodies = iter(om_bodies[1:])

    def warm_openmetrics() -> None:
        om_cache.process(next(om_warm_bodies), ts, content_type=OPENMETRICS)

    rows = [
        ("prometheus_client text_string_to_metric_families", samples, _best(client, max(1, repeat // 3))),
        ("kubescrape parse() (validating, to Sample tuples)", samples, _best(lambda: parse(text), repeat)),
        (
            "SeriesCache.process cold, pure Python (first scrape: parse, labeler, encode)",
            samples,
            _best(cold(False), cold_repeat),
        ),
        (
            "SeriesCache.process cold, pure Python, target labeler (make_labeler)",
            samples,
            _best(cold(False, _target_labeler()), cold_repeat),
        ),
        (
            "SeriesCache.process warm, pure Python (next scrapes, encoded chunks)",
            samples,
            _best(warm(False), repeat),
        ),
        ("SeriesCache.process warm + snappy, pure Python", samples, _best(warm(False, True), repeat)),
        (CHURN_ROW + ", pure Python", samples, _best(churning(False), repeat)),
    ]
    if COMPILED:
        rows += [
            ("SeriesCache.process cold, compiled", samples, _best(cold(True), cold_repeat)),
            (
                "SeriesCache.process cold, compiled, target labeler (make_labeler)",
                samples,
                _best(cold(True, _target_labeler()), cold_repeat),
            ),
            ("SeriesCache.process warm, compiled", samples, _best(warm(True), repeat)),
            ("SeriesCache.process warm + snappy, compiled", samples, _best(warm(True, True), repeat)),
            (CHURN_ROW + ", compiled", samples, _best(churning(True), repeat)),
        ]
    rows.append(("SeriesCache.process warm, OpenMetrics body", samples, _best(warm_openmetrics, repeat)))
    return rows, len(bodies[0])


OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
CHURN_PER_MIN = 4.0
CHURN_ROW = "SeriesCache.process with pod churn (~1 pod replaced per scrape), target labeler"


def _as_openmetrics(body: bytes) -> bytes:
    """The text body as OpenMetrics: millisecond timestamps as seconds, ``# EOF`` at the end."""
    return re.sub(rb" ([0-9]{10})([0-9]{3})\n", rb" \1.\2\n", body) + b"# EOF\n"


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
        f"emulated /metrics/cadvisor: {args.pods} pods, {rows[0][1]} samples, {size >> 10} KiB; "
        f"Python {sys.version.split()[0]}; best CPU time of one thread; compiled warm loop "
        f"{'built' if COMPILED else 'not built (or KUBESCRAPE_PURE_PYTHON set)'}; load average "
        f"{', '.join(f'{load:.2f}' for load in os.getloadavg())}\n"
    )
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
