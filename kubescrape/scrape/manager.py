"""From discovered target groups to running scrape loops: Prometheus' scrape manager in small.

Discovery hands :class:`ScrapeManager` target groups per job (:meth:`ScrapeManager.update`, synchronous,
from any discovery callback); its own task reconciles: each discovered label set becomes a target exactly
as a ``static_configs`` target of the same job does (:func:`kubescrape.scrape.targets.populate_labels`,
``target_url``, the job's options), a target that appears gets a :class:`ScrapeLoop`, one that
disappears has its loop stopped and every series it last reported — its scraped series and ``up`` and the
other synthetic ones — marked stale at once (Prometheus' end-of-run staleness), so a removed target's
series end in the receiver instead of lingering for five minutes. Shutdown stops loops without markers,
as Prometheus does, so a restarted agent continues the series. With a
:class:`~kubescrape.discovery.Sharder` only this member's share of the targets is scraped; the share is
decided on the final target (labels and URL), so discovered label sets that relabel into one target go
to one member.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import zlib
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any

from kubescrape.clock import SYSTEM_CLOCK, Clock
from kubescrape.config.models import AgentConfig, InstanceConfig
from kubescrape.discovery.metrics import DiscoveryMetrics
from kubescrape.discovery.shard import Sharder
from kubescrape.discovery.targetgroup import TargetGroup
from kubescrape.remote_write import Chunk, Sink
from kubescrape.remote_write.encode import STALE_NAN, encode_labels, encode_timeseries
from kubescrape.scrape.cache import SeriesCache
from kubescrape.scrape.loop import SYNTHETIC_NAMES, ScrapeClient, ScrapeLoop, series_cache
from kubescrape.scrape.targets import (
    DEFAULT_SCRAPE_TIMEOUT,
    Target,
    _label_duration,
    _make_target,
    populate_labels,
    synthetic_labels,
    target_url,
)
from kubescrape.selfmon import SelfMetrics
from kubescrape.supervisor import Supervisor

log = logging.getLogger(__name__)

__all__ = ["ScrapeManager", "job_target", "route_key"]

TargetKey = tuple[str, str, tuple[tuple[str, str], ...]]


def job_target(config: AgentConfig, inst: InstanceConfig, lset: dict[str, str]) -> Target | None:
    """The target a discovered label set of scrape job ``inst`` becomes (None: dropped by relabeling, or
    refused as Prometheus refuses it), built as ``build_targets`` builds the job's static targets."""
    interval = inst.scrape_interval or config.global_.interval
    timeout = inst.scrape_timeout or min(DEFAULT_SCRAPE_TIMEOUT, interval)
    job = inst.job_name or ""
    try:
        full = populate_labels(lset, job_name=job, scheme=inst.scheme, metrics_path=inst.metrics_path,
                               params=inst.params, interval=interval, timeout=timeout,
                               relabel_configs=inst.target_relabel_configs)
    except ValueError as exc:
        log.debug("job %r: discovered target %s is not scraped: %s", job, lset.get("__address__"), exc)
        return None
    if full is None:
        return None
    url = target_url(full, inst.params)
    labels = tuple(sorted((k, v) for k, v in full.items() if not k.startswith("__")))
    t_interval = _label_duration(full.get("__scrape_interval__", ""), interval, "interval")
    t_timeout = _label_duration(full.get("__scrape_timeout__", ""), timeout, "timeout")
    target = _make_target(inst, url, labels, t_interval, t_timeout, inst.username or None,
                          inst.password or None, ())
    return dataclasses.replace(target, external_labels=tuple(sorted(config.global_.labels.items())),
                               write_relabel_configs=tuple(inst.write_relabel_configs))


def _runner(loop: ScrapeLoop, jitter: bool) -> Callable[[], Coroutine[Any, Any, None]]:
    return lambda: loop.run(jitter=jitter)


def _scrapes(loop: ScrapeLoop) -> Callable[[], int]:
    return lambda: loop.stats.scrapes


def route_key(target: Target) -> int:
    """The remote-write routing key a :class:`ScrapeLoop` gives its target's chunks; staleness markers
    must travel the same way so they never overtake the target's last samples."""
    return zlib.crc32(repr((target.url, target.labels)).encode()) or 1


@dataclass
class _Running:
    loop: ScrapeLoop
    cache: SeriesCache
    task: str = ""  # its name in the supervisor, when one runs it


@dataclass
class _Job:
    config: AgentConfig
    inst: InstanceConfig
    # source -> this member's targets of that group, built when the group arrives: a watch event costs
    # the relabeling of its own group, not of every target of the job.
    targets: dict[str, list[Target]] = field(default_factory=dict)


class ScrapeManager:
    """Scrape loops for every discovered target of every job, started and stopped as discovery changes."""

    def __init__(self, *, client: ScrapeClient, sink: Sink | None, metrics: SelfMetrics | None = None,
                 clock: Clock = SYSTEM_CLOCK, batch: int = 2000, offset_seed: int = 0,
                 sharder: Sharder | None = None, jitter: bool = True,
                 reconcile_interval: float = 0.0, sd_metrics: DiscoveryMetrics | None = None,
                 supervisor: Supervisor | None = None) -> None:
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
        self.supervisor = supervisor
        self.jobs: dict[str, _Job] = {}
        self.running: dict[TargetKey, _Running] = {}
        self.stale_samples = 0
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def add_job(self, config: AgentConfig, inst: InstanceConfig) -> None:
        """Register scrape job ``inst`` (its ``job_name``) of ``config``."""
        self.jobs[inst.job_name or ""] = _Job(config, inst)

    def update(self, job: str, groups: Iterable[TargetGroup]) -> None:
        """New target groups for ``job`` from its discovery (a group without targets removes its source)."""
        state = self.jobs[job]
        for g in groups:
            kept = []
            for ls in g.label_sets():
                t = job_target(state.config, state.inst, ls)
                # Shard on the final target: discovered sets that relabel into one target go together.
                if t is not None and self.sharder.keep({**dict(t.labels), "__url__": t.url}):
                    kept.append(t)
            if kept:
                state.targets[g.source] = kept
            else:
                state.targets.pop(g.source, None)
        self._changed.set()

    def desired(self) -> dict[TargetKey, Target]:
        """Every target this member should scrape now, keyed by (job, URL, labels). A job with more targets
        than its ``target_limit`` keeps them all, each failing without a request, as Prometheus does."""
        out: dict[TargetKey, Target] = {}
        for name, job in self.jobs.items():
            targets = [t for group in job.targets.values() for t in group]
            limit = job.inst.target_limit
            if limit and len(targets) > limit:
                message = f"target_limit exceeded (number of targets: {len(targets)}, limit: {limit})"
                targets = [dataclasses.replace(t, forced_error=message) for t in targets]
            for t in targets:
                out[(name, t.url, t.labels)] = t
        return out

    async def reconcile(self) -> tuple[int, int]:
        """Start loops for new targets, stop (with staleness markers) those that are gone."""
        want = self.desired()
        # A target whose target_limit verdict changed is restarted with the new one.
        gone = [k for k in self.running
                if k not in want or self.running[k].loop.target.forced_error != want[k].forced_error]
        for key in gone:
            await self._retire(self.running.pop(key))
        started = 0
        for key, target in want.items():
            if key in self.running:
                continue
            cache = series_cache(target, batch=self.batch)
            loop = ScrapeLoop(target, client=self.client, sink=self.sink, metrics=self.metrics,
                              clock=self.clock, cache=cache, batch=self.batch, offset_seed=self.offset_seed)
            running = _Running(loop, cache)
            if self.supervisor is not None:
                # The agent's supervisor owns the loop like a static target's: failures counted, restarted.
                running.task = f"scrape {key[0]} {target.url} {hash(key) & 0xFFFFFFFF:08x}"
                self.supervisor.start(running.task, _runner(loop, self.jitter), progress=_scrapes(loop))
            else:
                loop.start(jitter=self.jitter)
            self.running[key] = running
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

    async def _stop_loop(self, running: _Running) -> None:
        if self.supervisor is not None and running.task:
            await self.supervisor.stop([running.task])
        else:
            await running.loop.stop()

    async def _retire(self, running: _Running) -> None:
        loop = running.loop
        await self._stop_loop(running)
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
        await asyncio.gather(*(self._stop_loop(r) for r in running.values()))
