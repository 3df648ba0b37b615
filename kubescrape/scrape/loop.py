"""The scrape loop: one asyncio task per target, scraping on a fixed-rate schedule and handing encoded
samples to the sink.

Per scrape: the HTTP fetch (:meth:`kubescrape.client.ScrapeClient.fetch`: headers like Prometheus, gzip,
streaming body limit, token re-read, timeout on the injectable clock, errors translated by the client's one
table) → series cache (parse, label, encode) → the five synthetic series Prometheus adds (``up``,
``scrape_duration_seconds`` …) → ``sink.append``. This is Prometheus' split: ``targetScraper`` does HTTP,
``scrapeLoop`` schedules and appends. A failed scrape is reported as ``up 0`` and never ends the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import zlib
from dataclasses import dataclass, field
from typing import Protocol

from kubescrape.client import (
    ACCEPT_HEADER,
    PLAIN_HTTP_ON_TLS,
    USER_AGENT,
    FetchResult,
    ScrapeClient,
    release_buffers,
    status_error,
    translate_error,
)
from kubescrape.clock import SYSTEM_CLOCK, Clock
from kubescrape.errors import KubescrapeError, ScrapeError
from kubescrape.remote_write import Chunk, Sink
from kubescrape.remote_write.encode import encode_labels, encode_timeseries
from kubescrape.scrape.cache import BodyPieces, ScrapeLimits, ScrapeResult, SeriesCache
from kubescrape.scrape.targets import Target, make_labeler, synthetic_labels
from kubescrape.selfmon import SelfMetrics

__all__ = [
    "ACCEPT_HEADER",
    "PLAIN_HTTP_ON_TLS",
    "USER_AGENT",
    "ScrapeClient",
    "ScrapeLoop",
    "ScrapeReport",
    "TargetStats",
    "hostname_seed",
    "process_body",
    "scrape_offset",
    "series_cache",
    "status_error",
    "translate_error",
]

log = logging.getLogger(__name__)

SYNTHETIC_NAMES = (
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
)


class SeriesProcessor(Protocol):
    """What the loop needs of the series cache (:class:`kubescrape.scrape.cache.SeriesCache`)."""

    def process(
        self, body: bytes | BodyPieces, scrape_ts_ms: int, *, content_type: str = "", snappy: bool = False
    ) -> ScrapeResult: ...

    def stale_all(self, scrape_ts_ms: int) -> list[Chunk]: ...


@dataclass
class ScrapeReport:
    """The outcome of one scrape: the encoded chunks (synthetic series included) and what happened."""

    url: str
    ok: bool
    duration: float
    timestamp: float
    samples_scraped: int = 0
    samples_post_relabel: int = 0
    series_added: int = 0
    error: KubescrapeError | None = None
    chunks: list[Chunk] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)
    """Samples of this scrape left out, by reason (duplicates, out-of-bounds timestamps …)."""

    @property
    def samples(self) -> int:
        """Samples handed to the sink: scraped (after relabeling), staleness markers, synthetic series."""
        return sum(c.samples for c in self.chunks)


@dataclass
class TargetStats:
    """Running state of one target, for ``Agent.stats()`` and the demo's summary."""

    url: str
    up: bool | None = None
    last_error: str | None = None
    last_error_reason: str | None = None
    samples: int = 0
    duration: float = 0.0
    last_scrape: float | None = None
    scrapes: int = 0
    failures: int = 0
    missed_ticks: int = 0
    error: KubescrapeError | None = None
    """The last scrape's error, with its ``cause`` and ``fix`` (the status pages show both)."""
    samples_scraped: int = 0


def scrape_offset(target: Target, interval: float, now: float, seed: int = 0) -> float:
    """Seconds to wait before the first scrape, as Prometheus' ``Target.offset``.

    Each target gets a fixed phase within the interval, derived from a hash of its URL and labels (and
    ``seed``, e.g. the hostname, so agents on different nodes spread out): scrapes of many targets are
    spread evenly, and a restart keeps every target on the same phase.
    """
    if interval <= 0:
        return 0.0
    key = target.url + "\xff" + "\xff".join(f"{k}={v}" for k, v in sorted(target.labels))
    h = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") ^ seed
    interval_ns = max(1, int(interval * 1e9))
    now_ns = int(now * 1e9)
    base = interval_ns - now_ns % interval_ns
    wait = base + h % interval_ns
    if wait > interval_ns:
        wait -= interval_ns
    return wait / 1e9


def hostname_seed(hostname: str) -> int:
    """A deterministic offset seed from the agent's hostname (Prometheus seeds with its external labels)."""
    return int.from_bytes(hashlib.blake2b(hostname.encode(), digest_size=8).digest(), "big")


class ScrapeLoop:
    """Scrapes one target on its interval until cancelled. Never raises out of :meth:`run`."""

    def __init__(
        self,
        target: Target,
        *,
        client: ScrapeClient,
        sink: Sink | None = None,
        metrics: SelfMetrics | None = None,
        clock: Clock = SYSTEM_CLOCK,
        cache: SeriesProcessor | None = None,
        batch: int = 2000,
        offset_seed: int = 0,
    ) -> None:
        self.target = target
        self._client = client
        self.sink = sink
        """Where scraped chunks go (None: nowhere, e.g. ``--test``)."""
        self._metrics = metrics
        self._clock = clock
        self._cache: SeriesProcessor = cache if cache is not None else series_cache(target, batch=batch)
        self._offset_seed = offset_seed
        self.stats = TargetStats(url=target.url)
        self._task: asyncio.Task[None] | None = None
        self._last_state: tuple[str, str] | None = None
        # Routes this target's chunks to one remote-write shard, so its series stay in order.
        self._route_key = zlib.crc32(repr((target.url, target.labels)).encode()) or 1
        self._synthetic_labels = [encode_labels(synthetic_labels(target, name)) for name in SYNTHETIC_NAMES]
        if target.tls.use_tls and target.tls.insecure_skip_verify:
            log.warning(
                "TLS certificate verification is off for %s (insecure_skip_verify = true): the agent cannot "
                "tell the kubelet from an impostor. Fix: set tls_ca to the CA that signed the serving "
                "certificate and remove insecure_skip_verify", target.url,
            )

    # ---- scheduling ---------------------------------------------------------------------------------

    def start(self, *, jitter: bool = True) -> asyncio.Task[None]:
        """Start :meth:`run` as a task owned by this loop (stopped by :meth:`stop`)."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.run(jitter=jitter), name=f"scrape {self.target.url}")
        return self._task

    async def stop(self) -> None:
        """Cancel the task and wait for it to end."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def run(self, *, jitter: bool = True) -> None:
        """Scrape at ``start + k * interval`` for k = 0, 1, 2 …; ticks missed by a slow scrape are skipped,
        so the schedule never drifts and never bursts."""
        interval = self.target.interval
        if jitter:
            now = self._clock.time()
            await self._clock.sleep(scrape_offset(self.target, interval, now, self._offset_seed))
        start = self._clock.monotonic()
        k = 0
        while True:
            await self.scrape_and_append()
            now = self._clock.monotonic()
            due = math.floor((now - start) / interval) + 1 if interval > 0 else k + 1
            if due > k + 1:
                self.stats.missed_ticks += due - k - 1
                log.debug("scrape of %s took %.3fs: skipped %d tick(s)", self.target.url,
                          self.stats.duration, due - k - 1)
            k = max(k + 1, due)
            await self._clock.sleep(start + k * interval - now)

    async def scrape_and_append(self) -> ScrapeReport:
        """One scrape, then hand its chunks to the sink."""
        report = await self.scrape()
        if self.sink is not None and report.chunks:
            try:
                await self.sink.append(report.chunks)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the sink counts what it cannot take; the loop must go on regardless
                log.error("could not hand %d samples of %s to the remote-write queue: %s",
                          report.samples, self.target.url, e)
        return report

    # ---- one scrape --------------------------------------------------------------------------------

    async def scrape(self) -> ScrapeReport:
        """Scrape once and return the chunks (samples + synthetic series). Updates stats and self-metrics;
        never raises (except cancellation)."""
        url = self.target.url
        wall = self._clock.time()
        t0 = self._clock.monotonic()
        ts_ms = int(wall * 1000)
        result: ScrapeResult | None = None
        error: KubescrapeError | None = None
        try:
            fetched = await self.fetch()
            # Chunks bound for a sink are compressed as they are assembled (as they are spooled and sent).
            result = process_body(self._cache, fetched, ts_ms, snappy=self.sink is not None)
            del fetched
        except asyncio.CancelledError:
            raise
        except ScrapeError as e:
            e.target = e.target or url
            error = e
        except KubescrapeError as e:  # TokenError, TLSConfigError: local configuration, no request made
            error = e
        except Exception as e:
            log.exception("unexpected error scraping %s", url)
            error = ScrapeError(f"unexpected error scraping {url}: {e!r}",
                                "this is a bug in kubescrape; please report it with the log above",
                                target=url, reason="internal")
        if error is not None:
            # The error outlives this scrape (last-error report): it must not pin the body via frames.
            release_buffers(error)
        duration = self._clock.monotonic() - t0
        report = ScrapeReport(url=url, ok=error is None, duration=duration, timestamp=wall, error=error)
        if result is not None:
            report.chunks = [c._replace(key=self._route_key) for c in result.chunks]
            report.samples_scraped = result.samples_scraped
            report.samples_post_relabel = result.samples_post_relabel
            report.series_added = result.series_added
            report.dropped = _drops(result)
        else:
            # As Prometheus: after a failed scrape every series of the last good one is marked stale.
            report.chunks = [c._replace(key=self._route_key) for c in self._cache.stale_all(ts_ms)]
        report.chunks.append(self._synthetic_chunk(report, ts_ms))
        self._record(report)
        return report

    def _synthetic_chunk(self, report: ScrapeReport, ts_ms: int) -> Chunk:
        # On failure Prometheus reports up 0, the duration, and zero for the counts.
        values = (
            1.0 if report.ok else 0.0,
            report.duration,
            float(report.samples_scraped),
            float(report.samples_post_relabel),
            float(report.series_added),
        )
        data = b"".join(
            encode_timeseries(lb, v, ts_ms) for lb, v in zip(self._synthetic_labels, values, strict=True)
        )
        return Chunk(data, len(values), self._route_key)

    def _record(self, report: ScrapeReport) -> None:
        s = self.stats
        s.scrapes += 1
        s.up = report.ok
        s.duration = report.duration
        s.last_scrape = report.timestamp
        s.samples = report.samples_post_relabel
        s.samples_scraped = report.samples_scraped
        err = s.error = report.error
        if err is not None:
            s.failures += 1
            s.last_error = str(err)
            s.last_error_reason = err.reason
        else:
            s.last_error = s.last_error_reason = None
        m = self._metrics
        if m is not None:
            url = self.target.url
            m.scrapes.labels(target=url, result="success" if report.ok else "failure").inc()
            m.target_up.labels(target=url).set(1 if report.ok else 0)
            m.scrape_duration.labels(target=url).observe(report.duration)
            if err is not None:
                m.scrape_errors.labels(target=url, reason=err.reason).inc()
            else:
                m.samples_scraped.labels(target=url).inc(report.samples_scraped)
            for reason, count in report.dropped.items():
                m.scrape_samples_dropped.labels(target=url, reason=reason).inc(count)
        # Log on a change of state only: a target that is down for an hour logs once, not 240 times.
        state = (type(err).__name__, str(err)) if err is not None else None
        if state != self._last_state:
            if err is not None:
                log.warning("scrape of %s failed: %s", self.target.url, err)
            elif self._last_state is not None:
                log.info("scrape of %s works again (%d samples)", self.target.url, report.samples_scraped)
            self._last_state = state

    async def fetch(self) -> FetchResult:
        """The HTTP part of one scrape, done by the shared client. A target over its job's
        ``target_limit`` fails without a request, as in Prometheus (every target of the job is down).
        A gzip body stays compressed: the series cache inflates it piece by piece."""
        if self.target.forced_error:
            raise ScrapeError(self.target.forced_error,
                              "raise target_limit for this job, or drop targets with relabel rules",
                              target=self.target.url, reason="target_limit")
        return await self._client.fetch(self.target, inflate=False)


def series_cache(target: Target, *, batch: int = 2000) -> SeriesCache:
    """The series cache a loop uses for ``target``: its labeling, timestamps policy and limits (doctor
    parses with the same one)."""
    return SeriesCache(
        make_labeler(target), honor_timestamps=target.honor_timestamps,
        track_timestamps_staleness=target.track_timestamps_staleness, batch=batch,
        limits=ScrapeLimits(target.sample_limit, target.label_limit, target.label_name_length_limit,
                            target.label_value_length_limit),
    )


def process_body(
    cache: SeriesProcessor, fetched: FetchResult, scrape_ts_ms: int, *, snappy: bool = False
) -> ScrapeResult:
    """Hand a fetched body to the series cache with its Content-Type (which selects the text or the
    OpenMetrics parser); ``snappy`` compresses the chunks. A gzip body still compressed
    (``fetched.gzip``) is inflated and parsed piece by piece. Doctor parses through here too. Raises
    ParseError."""
    body = fetched.gzip if fetched.gzip is not None else fetched.body
    return cache.process(body, scrape_ts_ms, content_type=fetched.content_type, snappy=snappy)


def _drops(result: ScrapeResult) -> dict[str, int]:
    """Samples the cache left out, by reason: its ``dropped`` map (reason → samples) when it keeps one,
    otherwise the duplicates it counted."""
    dropped = getattr(result, "dropped", None)
    if dropped is not None:
        return {str(k): int(v) for k, v in dropped.items() if v}
    duplicates = getattr(result, "samples_duplicate", 0)
    return {"duplicate": duplicates} if duplicates else {}
