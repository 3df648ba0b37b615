"""The scrape manager's bookkeeping of discovered targets (no network: loops are built, never started)."""

from __future__ import annotations

from kubescrape.config.models import AgentConfig, GlobalConfig, InstanceConfig
from kubescrape.discovery.targetgroup import TargetGroup
from kubescrape.scrape.loop import ScrapeClient
from kubescrape.scrape.manager import ScrapeManager


def manager_with_job(target_limit: int) -> tuple[ScrapeManager, AgentConfig]:
    inst = InstanceConfig(job_name="pods", target_limit=target_limit)
    config = AgentConfig(global_=GlobalConfig(hostname="node-1", interval=15.0), instances=[inst])
    manager = ScrapeManager(client=ScrapeClient(), sink=None, jitter=False)
    manager.add_job(config, inst)
    return manager, config


def pods(*addresses: str) -> list[TargetGroup]:
    return [TargetGroup(f"pod/default/p{i}", ({"__address__": a},)) for i, a in enumerate(addresses)]


def test_a_discovered_job_over_target_limit_fails_every_target_like_prometheus() -> None:
    manager, _ = manager_with_job(target_limit=2)
    manager.update("pods", pods("10.0.0.1:9100", "10.0.0.2:9100"))
    assert [t.forced_error for t in manager.desired().values()] == [None, None]
    manager.update("pods", pods("10.0.0.1:9100", "10.0.0.2:9100", "10.0.0.3:9100"))
    errors = {t.forced_error for t in manager.desired().values()}
    assert errors == {"target_limit exceeded (number of targets: 3, limit: 2)"}
    assert len(manager.desired()) == 3


def test_without_a_limit_every_discovered_target_is_scraped() -> None:
    manager, _ = manager_with_job(target_limit=0)
    manager.update("pods", pods(*(f"10.0.0.{i}:9100" for i in range(1, 6))))
    assert len(manager.desired()) == 5
    assert all(t.forced_error is None for t in manager.desired().values())
