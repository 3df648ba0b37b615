"""The scrape side of a Prometheus configuration file: its discoveries feeding a :class:`ScrapeManager`.

One object the agent starts and stops: :meth:`DiscoveredScraping.start` registers every job, starts the
Kubernetes and kubelet discoveries (each supervising itself: errors are counted and retried with
backoff, never raised) and the manager; :meth:`stop` stops them in the reverse order and closes their
connections. Every task it starts is owned here and awaited on stop.
"""

from __future__ import annotations

from pathlib import Path

from kubescrape.clock import SYSTEM_CLOCK, Clock
from kubescrape.config.prometheus import (
    Discovery,
    PrometheusConfig,
    attach_jobs,
    load_prometheus_config,
    writer_settings,
)
from kubescrape.discovery.metrics import DiscoveryMetrics
from kubescrape.discovery.shard import Sharder, sharder_from_options
from kubescrape.remote_write import Sink
from kubescrape.remote_write.queue import WriterSettings
from kubescrape.scrape.loop import ScrapeClient, ScrapeLoop
from kubescrape.scrape.manager import ScrapeManager
from kubescrape.selfmon import SelfMetrics

__all__ = ["DiscoveredScraping", "from_prometheus_file"]


class DiscoveredScraping:
    """Discoveries + scrape manager for the ``scrape_configs`` of ``config``."""

    def __init__(self, config: PrometheusConfig, *, metrics: SelfMetrics | None = None,
                 clock: Clock = SYSTEM_CLOCK, sharder: Sharder | None = None, jitter: bool = True,
                 batch: int = 2000, offset_seed: int = 0) -> None:
        self.config = config
        self.client = ScrapeClient(metrics=metrics, clock=clock)
        self.sd_metrics = DiscoveryMetrics(metrics.registry if metrics is not None else None)
        self.manager = ScrapeManager(client=self.client, sink=None, metrics=metrics, clock=clock, batch=batch,
                                     offset_seed=offset_seed, sharder=sharder, jitter=jitter,
                                     sd_metrics=self.sd_metrics)
        self.discoveries: list[Discovery] = []

    @property
    def loops(self) -> list[ScrapeLoop]:
        """The scrape loops running now (one per target of this member's share)."""
        return [r.loop for r in self.manager.running.values()]

    async def start(self, sink: Sink | None) -> None:
        """Start discovering and scraping into ``sink``."""
        self.manager.sink = sink
        self.discoveries = attach_jobs(self.config, self.manager, metrics=self.sd_metrics)
        for d in self.discoveries:
            await d.start()
        self.manager.start()

    async def wait_synced(self, timeout: float) -> bool:
        """True once every discovery has listed (or polled) once."""
        for d in self.discoveries:
            if not await d.wait_synced(timeout):
                return False
        return True

    async def stop(self) -> None:
        """Stop discovering, then scraping; close every connection."""
        for d in self.discoveries:
            await d.stop()
            await d.client.close()
        await self.manager.stop()
        await self.client.close()


def from_prometheus_file(path: str | Path, *, strict: bool = False, shard_count: int = 1,
                         shard_index: str | int | None = None, shard_replication: int = 1,
                         metrics: SelfMetrics | None = None,
                         jitter: bool = True) -> tuple[list[WriterSettings], DiscoveredScraping]:
    """``kubescrape run --config FILE.yml``: the remote-write settings and the scraping of a Prometheus
    configuration file, with this member's shard. Raises :class:`~kubescrape.errors.ConfigError`."""
    cfg = load_prometheus_config(path, strict=strict)
    if metrics is not None and cfg.warnings:
        metrics.config_warnings.inc(len(cfg.warnings))
    sharder = sharder_from_options(shard_count, shard_index, shard_replication)
    return writer_settings(cfg), DiscoveredScraping(cfg, metrics=metrics, sharder=sharder, jitter=jitter)
