"""From discovered target groups to running scrape loops.

:func:`populate_labels` is Prometheus' ``PopulateLabels`` (scrape/target.go):
For each discovered label set: add the job's defaults (``job``, ``__scheme__``, ``__metrics_path__``,
``__scrape_interval__``, ``__scrape_timeout__``, ``__param_<name>``) where discovery did not set them,
apply the job's ``relabel_configs`` (a dropped set is no target), require an ``__address__``, default
``instance`` to it, and keep as target labels the ones not starting with ``__``. The scrape URL is
``__scheme__://__address____metrics_path__?__param_*``.

:class:`ScrapeManager` is Prometheus' scrape manager in small: discovery hands it target groups per job
(:meth:`ScrapeManager.update`, synchronous, from any discovery callback); its own task reconciles at
most every ``reconcile_interval`` seconds: a target that appears gets a :class:`ScrapeLoop`, one that
disappears has its loop stopped and every series it last reported — its scraped series and ``up`` and
the other synthetic ones — marked stale at once (Prometheus' end-of-run staleness), so a removed
target's series end in the receiver instead of lingering for five minutes. Shutdown stops loops
without markers, as Prometheus does, so a restarted agent continues the series. With a
:class:`~kubescrape.discovery.Sharder` only this member's share of the targets is scraped.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlencode

from kubescrape.clock import SYSTEM_CLOCK, Clock
from kubescrape.discovery.metrics import DiscoveryMetrics
from kubescrape.discovery.shard import Sharder
from kubescrape.discovery.targetgroup import TargetGroup
from kubescrape.relabel import RelabelConfig, relabel
from kubescrape.remote_write import Chunk, Sink
from kubescrape.remote_write.encode import STALE_NAN, encode_labels, encode_timeseries
from kubescrape.scrape.cache import ScrapeLimits, SeriesCache
from kubescrape.scrape.loop import SYNTHETIC_NAMES, ScrapeClient, ScrapeLoop
from kubescrape.scrape.targets import Target, make_labeler, synthetic_labels
from kubescrape.selfmon import SelfMetrics

log = logging.getLogger(__name__)

__all__ = ["DiscoveredTarget", "ScrapeManager", "ScrapeSettings", "populate_labels", "route_key"]


def _duration(seconds: float) -> str:
    """Prometheus' model.Duration text: ``15s``, ``1m``, ``1m30s``, ``500ms``."""
    ms = round(seconds * 1000)
    if ms == 0:
        return "0s"
    out = ""
    for unit, size in (("y", 365 * 86_400_000), ("w", 7 * 86_400_000), ("d", 86_400_000), ("h", 3_600_000),
                       ("m", 60_000), ("s", 1000), ("ms", 1)):
        if ms >= size:
            out += f"{ms // size}{unit}"
            ms %= size
    return out


@dataclass(frozen=True)
class ScrapeSettings:
    """What a scrape job adds to its discovered targets."""

    job: str
    scheme: str = "http"
    metrics_path: str = "/metrics"
    interval: float = 60.0
    timeout: float = 10.0
    params: Mapping[str, Sequence[str]] = field(default_factory=dict)
    relabel_configs: Sequence[RelabelConfig] = ()


@dataclass(frozen=True)
class DiscoveredTarget:
    """A target after relabeling: its final labels and the URL to scrape."""

    labels: tuple[tuple[str, str], ...]
    url: str
    discovered: tuple[tuple[str, str], ...]

    @property
    def label_dict(self) -> dict[str, str]:
        """The final target labels."""
        return dict(self.labels)


def populate_labels(discovered: Mapping[str, str], settings: ScrapeSettings) -> DiscoveredTarget | None:
    """The target for one discovered label set, or None when relabeling drops it or it has no address."""
    lb = dict(discovered)
    defaults = {
        "job": settings.job,
        "__scrape_interval__": _duration(settings.interval),
        "__scrape_timeout__": _duration(settings.timeout),
        "__metrics_path__": settings.metrics_path,
        "__scheme__": settings.scheme,
    }
    for name, values in settings.params.items():
        if values:
            defaults[f"__param_{name}"] = values[0]
    for k, v in defaults.items():
        lb.setdefault(k, v)
    pre = tuple(sorted(lb.items()))
    out = relabel(lb, settings.relabel_configs)
    if out is None or not out.get("__address__"):
        return None
    out.setdefault("instance", out["__address__"])
    params = {k[len("__param_"):]: v for k, v in out.items() if k.startswith("__param_")}
    url = f"{out.get('__scheme__', 'http')}://{out['__address__']}{out.get('__metrics_path__', '')}"
    if params:
        url += "?" + urlencode(sorted(params.items()))
    final = tuple(sorted((k, v) for k, v in out.items() if not k.startswith("__")))
    return DiscoveredTarget(final, url, pre)


def route_key(target: Target) -> int:
    """The remote-write routing key a :class:`ScrapeLoop` gives its target's chunks; staleness markers
    must travel the same way so they never overtake the target's last samples."""
    return zlib.crc32(repr((target.url, target.labels)).encode()) or 1


@dataclass
class _Running:
    loop: ScrapeLoop
    cache: SeriesCache


@dataclass
class _Job:
    settings: ScrapeSettings
    template: Target
    groups: dict[str, TargetGroup] = field(default_factory=dict)


class ScrapeManager:
    """Scrape loops for every discovered target of every job, started and stopped as discovery changes."""

    def __init__(self, *, client: ScrapeClient, sink: Sink | None, metrics: SelfMetrics | None = None,
                 clock: Clock = SYSTEM_CLOCK, batch: int = 2000, offset_seed: int = 0,
                 sharder: Sharder | None = None, jitter: bool = True,
                 reconcile_interval: float = 0.0, sd_metrics: DiscoveryMetrics | None = None) -> None:
        self.client = client
        self.sink = sink
        self.metrics = metrics
        self.clock = clock
        self.batch = batch
        self.offset_seed = offset_seed
        self.sharder = sharder or Sharder()
        self.jitter = jitter
        self.reconcile_interval = reconcile_interval
        self.sd_metrics = sd_metrics
        self.jobs: dict[str, _Job] = {}
        self.running: dict[tuple[str, str, tuple[tuple[str, str], ...]], _Running] = {}
        self.stale_samples = 0
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def add_job(self, settings: ScrapeSettings, template: Target) -> None:
        """Register a job: ``template`` holds every option of its targets but the URL and labels."""
        self.jobs[settings.job] = _Job(settings, template)

    def update(self, job: str, groups: Iterable[TargetGroup]) -> None:
        """New target groups for ``job`` from its discovery (a group without targets removes its source)."""
        state = self.jobs[job]
        for g in groups:
            if g.targets:
                state.groups[g.source] = g
            else:
                state.groups.pop(g.source, None)
        self._changed.set()

    def desired(self) -> dict[tuple[str, str, tuple[tuple[str, str], ...]], Target]:
        """Every target this member should scrape now, keyed by (job, URL, labels)."""
        out: dict[tuple[str, str, tuple[tuple[str, str], ...]], Target] = {}
        for name, job in self.jobs.items():
            for group in job.groups.values():
                for ls in group.label_sets():
                    t = populate_labels(ls, job.settings)
                    # Shard on the final target: discovered sets that relabel into one target go together.
                    if t is None or not self.sharder.keep({**t.label_dict, "__url__": t.url}):
                        continue
                    out[(name, t.url, t.labels)] = dataclasses.replace(job.template, url=t.url, name=t.url,
                                                                        labels=t.labels)
        return out

    async def reconcile(self) -> tuple[int, int]:
        """Start loops for new targets, stop (with staleness markers) those that are gone."""
        want = self.desired()
        gone = [k for k in self.running if k not in want]
        for key in gone:
            await self._retire(self.running.pop(key))
        started = 0
        for key, target in want.items():
            if key in self.running:
                continue
            cache = SeriesCache(make_labeler(target), honor_timestamps=target.honor_timestamps,
                                batch=self.batch,
                                limits=ScrapeLimits(target.sample_limit, target.label_limit,
                                                    target.label_name_length_limit,
                                                    target.label_value_length_limit))
            loop = ScrapeLoop(target, client=self.client, sink=self.sink, metrics=self.metrics,
                              clock=self.clock, cache=cache, batch=self.batch, offset_seed=self.offset_seed)
            loop.start(jitter=self.jitter)
            self.running[key] = _Running(loop, cache)
            started += 1
        if self.sd_metrics is not None:
            for name in self.jobs:
                self.sd_metrics.targets.labels(job=name).set(sum(1 for k in self.running if k[0] == name))
        if started or gone:
            log.info("targets: %d started, %d stopped, %d running", started, len(gone), len(self.running))
        return started, len(gone)

    def staleness_chunks(self, target: Target, cache: SeriesCache, ts_ms: int) -> list[Chunk]:
        """Stale markers for every series ``target`` last reported, synthetic ones included."""
        key = route_key(target)
        chunks = [c._replace(key=key) for c in cache.stale_all(ts_ms)]
        data = b"".join(encode_timeseries(encode_labels(synthetic_labels(target, name)), STALE_NAN, ts_ms)
                        for name in SYNTHETIC_NAMES)
        chunks.append(Chunk(data, len(SYNTHETIC_NAMES), key))
        return chunks

    async def _retire(self, running: _Running) -> None:
        loop = running.loop
        await loop.stop()
        if self.sink is None or loop.stats.scrapes == 0:
            return
        chunks = self.staleness_chunks(loop.target, running.cache, int(self.clock.time() * 1000))
        try:
            await self.sink.append(chunks)
            self.stale_samples += sum(c.samples for c in chunks)
            if self.sd_metrics is not None:
                self.sd_metrics.stale_markers.inc(sum(c.samples for c in chunks))
        except Exception as e:  # the sink counts what it refuses; a failed append must not stop the manager
            log.error("could not queue the staleness markers of %s: %s", loop.target.url, e)

    async def _run(self) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()
            try:
                await self.reconcile()
            except Exception:
                log.exception("reconciling the scrape targets failed; retrying on the next change")
            if self.reconcile_interval > 0:
                await self.clock.sleep(self.reconcile_interval)

    def start(self) -> None:
        """Start reconciling (a task owned by the manager)."""
        if self._task is None:
            self._changed.set()
            self._task = asyncio.create_task(self._run(), name="scrape manager")

    async def stop(self) -> None:
        """Stop reconciling and every loop (no staleness markers: the agent goes away, not the targets)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        running, self.running = self.running, {}
        await asyncio.gather(*(r.loop.stop() for r in running.values()))
