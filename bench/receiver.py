"""The receiver: a real Prometheus server every agent remote-writes into, and the queries that read it back.

Each agent's series carry ``bench_agent="<agent>"`` (an external label), so one receiver serves every
contender of a scenario and the figures of each are read with the same queries: samples stored, the
per-scrape series (``up``, ``scrape_samples_scraped``, ``scrape_duration_seconds``) every agent delivers,
and the delivered series set for the equivalence check.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

from bench.compare import AGENT_LABEL
from bench.processes import tail
from kubescrape.prometheus import Prometheus


def window_duration(seconds: float) -> str:
    """A PromQL range of ``seconds`` in milliseconds (exact for fractional windows)."""
    return f"{round(seconds * 1000)}ms"


def scalar(result: list[dict[str, Any]]) -> float:
    """Sum of the values of an instant-vector result (0 when empty)."""
    return sum(float(r["value"][1]) for r in result)


class ScrapeFigures(NamedTuple):
    """What the per-scrape series an agent delivered say about its window."""

    samples_scraped: float
    scrapes: float
    failed: float


class FirstScrapes(NamedTuple):
    """Wall-clock ends of an agent's first scrapes (scrape start + duration), from its delivered series."""

    first_done: float
    all_done: float
    targets: int


def first_scrapes(up: list[dict[str, Any]], durations: list[dict[str, Any]]) -> FirstScrapes | None:
    """The first scrape of each target from range-vector results of ``up`` and ``scrape_duration_seconds``.

    A scrape's samples are stamped with its start time, so its end is that time plus its duration;
    ``first_done`` is the earliest end over targets, ``all_done`` the latest (every target scraped once).
    """
    def target(r: Mapping[str, Any]) -> tuple[str, str]:
        m = r["metric"]
        return str(m.get("job", "")), str(m.get("instance", ""))

    first_ts: dict[tuple[str, str], float] = {}
    for r in up:
        if r["values"]:
            first_ts[target(r)] = min(float(t) for t, _ in r["values"])
    ends: list[float] = []
    for r in durations:
        ts = first_ts.get(target(r))
        for t, v in r["values"]:
            if ts is not None and abs(float(t) - ts) < 1e-3:
                ends.append(ts + float(v))
    if not ends:
        return None
    return FirstScrapes(min(ends), max(ends), len(ends))


class Receiver:
    """A Prometheus server with the remote-write receiver, in ``workdir``."""

    def __init__(self, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.server = Prometheus(workdir)

    @property
    def write_url(self) -> str:
        return self.server.write_url

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.stop()

    def api(self, path: str, params: Mapping[str, str], timeout: float = 300.0) -> Any:
        """GET ``/api/v1/<path>`` with a long timeout (large scenarios query 10^5+ series)."""
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.server.url}/api/v1/{path}?{query}", timeout=timeout) as r:
            body = json.loads(r.read())
        if body.get("status") != "success":
            raise RuntimeError(f"receiver API {path} failed: {body}")
        return body["data"]

    def query(self, expr: str, at: float) -> list[dict[str, Any]]:
        """Instant query evaluated at ``at``."""
        result: list[dict[str, Any]] = self.api("query", {"query": expr, "time": f"{at:.3f}"})["result"]
        return result

    def count_received(self, agent: str, window: float, at: float) -> dict[str, float]:
        """Samples of ``agent`` stored with timestamps in the window ending at ``at``, by metric name.

        One ``count_over_time`` per metric name: over all names at once, series that differ only by name
        would collide once the function drops ``__name__``, and Prometheus rejects the query.
        """
        sel = f'{AGENT_LABEL}="{agent}"'
        names: list[str] = self.api(
            "label/__name__/values",
            {"match[]": f"{{{sel}}}", "start": f"{at - window:.3f}", "end": f"{at:.3f}"},
        )
        w = window_duration(window)

        def one(name: str) -> float:
            return scalar(self.query(f"sum(count_over_time({name}{{{sel}}}[{w}]))", at))

        with ThreadPoolExecutor(max_workers=2) as pool:
            return dict(zip(names, pool.map(one, names), strict=True))

    def stable_count(self, agent: str, window: float, at: float, timeout: float) -> dict[str, float]:
        """``count_received`` once two readings a second apart agree (the receiver has committed all)."""
        deadline = time.monotonic() + timeout
        last = self.count_received(agent, window, at)
        while True:
            time.sleep(1.0)
            value = self.count_received(agent, window, at)
            if value == last:
                return value
            if time.monotonic() > deadline:
                print(f"warning: {agent}'s samples still arriving after {timeout:g} s", file=sys.stderr)
                return value
            last = value

    def scrape_figures(self, agent: str, window: float, at: float) -> ScrapeFigures:
        """Samples scraped, scrapes and failed scrapes in the window, from the agent's delivered
        ``scrape_samples_scraped`` and ``up``: the same method for every agent."""
        sel = f'{AGENT_LABEL}="{agent}"'
        w = window_duration(window)
        scraped = scalar(self.query(f"sum(sum_over_time(scrape_samples_scraped{{{sel}}}[{w}]))", at))
        scrapes = scalar(self.query(f"sum(count_over_time(up{{{sel}}}[{w}]))", at))
        up = scalar(self.query(f"sum(sum_over_time(up{{{sel}}}[{w}]))", at))
        return ScrapeFigures(scraped, scrapes, scrapes - up)

    def durations(self, agent: str, window: float, at: float) -> list[float]:
        """Every ``scrape_duration_seconds`` sample ``agent`` delivered for the window (all targets)."""
        sel = f'{AGENT_LABEL}="{agent}"'
        result = self.query(f"scrape_duration_seconds{{{sel}}}[{window_duration(window)}]", at)
        return [float(v) for r in result for _, v in r["values"]]

    def first_scrapes(self, agent: str, since: float, at: float) -> FirstScrapes | None:
        """When ``agent``'s first scrape of each target ended (see :func:`first_scrapes`)."""
        sel = f'{AGENT_LABEL}="{agent}"'
        w = window_duration(max(1.0, at - since))
        return first_scrapes(self.query(f"up{{{sel}}}[{w}]", at),
                             self.query(f"scrape_duration_seconds{{{sel}}}[{w}]", at))

    def wait_first_scrapes(
        self, agent: str, since: float, targets: int, timeout: float
    ) -> FirstScrapes | None:
        """:meth:`first_scrapes` once the first scrape of each of ``targets`` targets has been delivered
        (agents spread first scrapes over the interval), or what was delivered by the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            first = self.first_scrapes(agent, since, time.time())
            if (first is not None and first.targets >= targets) or time.monotonic() > deadline:
                return first
            time.sleep(0.5)

    def series(self, agent: str, start: float, end: float) -> list[dict[str, str]]:
        """Every series ``agent`` delivered with samples between ``start`` and ``end``."""
        match = f'{{{AGENT_LABEL}="{agent}"}}'
        result: list[dict[str, str]] = self.api(
            "series", {"match[]": match, "start": f"{start:.3f}", "end": f"{end:.3f}"}
        )
        return result

    def wait_first_sample(self, agent: str, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
        """Wait until the receiver holds a sample of ``agent``: the warm-up counts from there.

        Agents do not scrape at once (the Prometheus agent first syncs targets, vmagent spreads its first
        scrapes over the interval).
        """
        deadline = time.monotonic() + timeout
        while not self.query(f'count({{{AGENT_LABEL}="{agent}"}})', time.time()):
            if proc.poll() is not None:
                raise RuntimeError(f"{agent} exited with {proc.returncode} before delivering: {tail(log)}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no sample of {agent} reached the receiver in {timeout:g} s: {tail(log)}")
            time.sleep(0.5)
