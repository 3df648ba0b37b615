"""The discovered side of a configuration: the jobs with ``kubernetes_sd_configs`` (or
``kubelet_sd_configs``), their discoveries feeding a :class:`ScrapeManager`.

One object the agent starts and stops next to its static targets' loops: :meth:`DiscoveredScraping.start`
registers every discovered job, starts its discoveries (each supervising itself: errors are counted and
retried with backoff, never raised) and the manager; :meth:`stop` stops them in the reverse order and
closes their connections. Every task it starts is owned here and awaited on stop.
"""

from __future__ import annotations

from kubescrape.clock import SYSTEM_CLOCK, Clock
from kubescrape.config.models import AgentConfig, has_discovery
from kubescrape.discovery.config import Discovery, job_discoveries, parse_sd_configs
from kubescrape.discovery.metrics import DiscoveryMetrics
from kubescrape.discovery.shard import Sharder
from kubescrape.discovery.targetgroup import TargetGroup
from kubescrape.remote_write import Sink
from kubescrape.scrape.loop import ScrapeClient, ScrapeLoop
from kubescrape.scrape.manager import ScrapeManager
from kubescrape.selfmon import SelfMetrics
from kubescrape.supervisor import Supervisor

__all__ = ["DiscoveredScraping", "has_discovery"]


class DiscoveredScraping:
    """Discoveries + scrape manager for the discovered jobs of ``config`` (validated at construction:
    a bad ``kubernetes_sd_configs`` entry raises :class:`~kubescrape.errors.ConfigError`)."""

    def __init__(self, config: AgentConfig, *, metrics: SelfMetrics | None = None,
                 clock: Clock = SYSTEM_CLOCK, sharder: Sharder | None = None, jitter: bool = True,
                 offset_seed: int = 0, client: ScrapeClient | None = None,
                 supervisor: Supervisor | None = None) -> None:
        self.config = config
        self._own_client = client is None
        self.client = client or ScrapeClient(metrics=metrics, clock=clock)
        self.sd_metrics = DiscoveryMetrics(metrics.registry if metrics is not None else None)
        self.manager = ScrapeManager(client=self.client, sink=None, metrics=metrics, clock=clock,
                                     batch=config.writer_opt.batch, offset_seed=offset_seed, sharder=sharder,
                                     jitter=jitter, sd_metrics=self.sd_metrics, supervisor=supervisor)
        self.discoveries: list[Discovery] = []
        for inst in config.instances:
            if inst.job_name is None:
                continue
            if not any(parse_sd_configs(config, inst)):
                continue
            self.manager.add_job(config, inst)

            def feed(groups: list[TargetGroup], name: str = inst.job_name) -> None:
                self.manager.update(name, groups)

            self.discoveries += job_discoveries(config, inst, feed, metrics=self.sd_metrics)

    @property
    def loops(self) -> list[ScrapeLoop]:
        """The scrape loops running now (one per target of this member's share)."""
        return [r.loop for r in self.manager.running.values()]

    async def start(self, sink: Sink | None) -> None:
        """Start discovering and scraping into ``sink``."""
        self.manager.sink = sink
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
        """Stop discovering, then scraping; close every connection this object opened."""
        for d in self.discoveries:
            await d.stop()
            await d.client.close()
        await self.manager.stop()
        if self._own_client:
            await self.client.close()
