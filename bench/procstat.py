"""CPU and memory of a process, read from ``/proc`` (Linux), for the benchmark scripts.

``cpu_seconds(pid)`` is user+sys of the process and of its waited-for children (``/proc/<pid>/stat`` fields
utime, stime, cutime, cstime). ``rss_bytes(pid)`` is the resident set (``VmRSS`` of ``/proc/<pid>/status``).
``RssSampler`` samples ``VmRSS`` on a background thread so a benchmark gets a peak and a steady figure without
doing the sampling itself. Everything here is read-only and never signals a process.
"""

from __future__ import annotations

import itertools
import os
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class CpuTimes(NamedTuple):
    """CPU seconds of one process as the kernel accounts them (children: only those already waited for)."""

    user: float
    system: float
    children_user: float
    children_system: float

    @property
    def total(self) -> float:
        """user + sys, children included."""
        return self.user + self.system + self.children_user + self.children_system


def parse_stat(text: str, ticks: int = CLOCK_TICKS) -> CpuTimes:
    """Parse the text of ``/proc/<pid>/stat``.

    The second field (comm) is in parentheses and may itself contain spaces and parentheses, so fields are
    counted from the LAST ``)``: after it come state (field 3), ..., utime (14), stime (15), cutime (16),
    cstime (17), in clock ticks.
    """
    rest = text[text.rindex(")") + 2 :].split()
    # rest[0] is field 3 (state): field n is rest[n - 3]
    utime, stime, cutime, cstime = (int(rest[n - 3]) for n in (14, 15, 16, 17))
    return CpuTimes(utime / ticks, stime / ticks, cutime / ticks, cstime / ticks)


def parse_status_kib(text: str, field: str) -> int:
    """The value in bytes of a ``kB`` field (``VmRSS``, ``VmHWM``, ...) of ``/proc/<pid>/status``."""
    prefix = field + ":"
    for line in text.splitlines():
        if line.startswith(prefix):
            value, unit = line[len(prefix) :].split()
            if unit != "kB":
                raise ValueError(f"unexpected unit {unit!r} for {field} in /proc status")
            return int(value) * 1024
    raise KeyError(f"{field} not in /proc status (kernel thread or zombie?)")


def cpu_times(pid: int) -> CpuTimes:
    """CPU times of ``pid`` now."""
    return parse_stat(Path(f"/proc/{pid}/stat").read_text())


def cpu_seconds(pid: int) -> float:
    """user + sys seconds of ``pid`` and its waited-for children."""
    return cpu_times(pid).total


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` now, in bytes."""
    return parse_status_kib(Path(f"/proc/{pid}/status").read_text(), "VmRSS")


def peak_rss_bytes(pid: int) -> int:
    """The kernel's high-water mark of the resident set (``VmHWM``) of ``pid``, in bytes."""
    return parse_status_kib(Path(f"/proc/{pid}/status").read_text(), "VmHWM")


@dataclass(frozen=True)
class RssSummary:
    """RSS figures in bytes: ``peak`` is the largest sample, ``steady`` the median of the second half."""

    peak: int
    steady: int
    samples: int


def summarize_rss(samples: list[int]) -> RssSummary:
    """Peak and steady RSS of a series of samples taken at a fixed period.

    Steady is the median of the second half, so start-up growth and one-off spikes do not count.
    """
    if not samples:
        raise ValueError("no RSS samples: the process exited before the first sample")
    second_half = samples[len(samples) // 2 :]
    return RssSummary(peak=max(samples), steady=int(statistics.median(second_half)), samples=len(samples))


class RssSampler:
    """Sample ``VmRSS`` of a process every ``period`` seconds on a daemon thread.

    ``mark()`` starts a new measurement window: ``window()`` summarises the samples taken since the last mark,
    ``overall()`` everything since ``start()``. Sampling stops quietly when the process goes away.
    """

    def __init__(self, pid: int, period: float = 0.5) -> None:
        self.pid = pid
        self.period = period
        self._samples: list[int] = []
        self._mark = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"rss-{pid}", daemon=True)

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def mark(self) -> None:
        """Start the measurement window now."""
        with self._lock:
            self._mark = len(self._samples)

    def window(self) -> RssSummary:
        with self._lock:
            return summarize_rss(self._samples[self._mark :])

    def overall(self) -> RssSummary:
        with self._lock:
            return summarize_rss(list(self._samples))

    def _loop(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                value = rss_bytes(self.pid)
            except (OSError, KeyError):
                return
            with self._lock:
                self._samples.append(value)
            next_at += self.period
            self._stop.wait(max(0.0, next_at - time.monotonic()))


class CpuTimeline:
    """CPU seconds of a process against wall-clock time, sampled every ``period`` seconds on a thread.

    Started right after the process is, it answers "how much CPU had the process used by wall time t"
    (:meth:`at`) for moments learnt only later, such as the end of its first scrape.
    """

    def __init__(self, pid: int, period: float = 0.02) -> None:
        self.pid = pid
        self.period = period
        self._points: list[tuple[float, float]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"cpu-{pid}", daemon=True)

    def start(self) -> CpuTimeline:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def points(self) -> list[tuple[float, float]]:
        """(wall time, CPU seconds) pairs so far."""
        with self._lock:
            return list(self._points)

    def at(self, t: float) -> float:
        """CPU seconds used by wall time ``t`` (see :func:`cpu_at`)."""
        return cpu_at(self.points(), t)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                cpu = cpu_seconds(self.pid)
            except (OSError, ValueError):
                return
            with self._lock:
                self._points.append((time.time(), cpu))
            self._stop.wait(self.period)


def cpu_at(points: list[tuple[float, float]], t: float) -> float:
    """CPU seconds at wall time ``t`` from sorted (time, CPU) samples, linear between neighbours.

    NaN before the first sample or after the last one (the timeline does not cover ``t``).
    """
    if not points or t < points[0][0] or t > points[-1][0]:
        return float("nan")
    for (t0, c0), (t1, c1) in itertools.pairwise(points):
        if t0 <= t <= t1:
            return c0 if t1 == t0 else c0 + (c1 - c0) * (t - t0) / (t1 - t0)
    return points[-1][1]
