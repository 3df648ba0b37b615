"""End to end: the generated manifests' Categraf config (``kubescrape.deploy``) scrapes the emulated
kubelet's ``/metrics/cadvisor`` over real TLS with a bearer token into a real Prometheus; one pod's
containers stop. With ``track_timestamps_staleness = true`` (the generated setting) their series, which
carry cAdvisor's own timestamps, are marked stale at the next scrape; with it off they linger (Prometheus'
5 min lookback) while the same pod's spec series (no timestamps) are gone. See
bench/cadvisor_timestamps.py for the measurement."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from kubescrape.agent import Agent
from kubescrape.config.categraf import load_categraf
from kubescrape.deploy import SA_CA_FILE, SA_TOKEN_FILE, config_toml, prometheus_toml
from kubescrape.emulator.payloads import NodePayloads
from kubescrape.emulator.pki import write_private
from tests.e2e.helpers import TLSFiles, metrics_server
from tests.e2e.prom import Prometheus

STATS = "container_cpu_usage_seconds_total"
SPEC = "container_spec_memory_limit_bytes"


async def wait_for(check: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(check):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


def generated_config(dest: Path, *, writer_url: str, urls: dict[str, str], token_file: Path, ca_file: Path,
                     track: bool) -> Path:
    """The generated ConfigMaps' TOML, pointed at the test's servers and files, scraping every 0.5 s."""
    short = "interval = 0.5\nallow_short_intervals = true\n"
    main = config_toml(writer_url).replace("interval = 15\n", short)
    inputs = prometheus_toml().replace(SA_TOKEN_FILE, str(token_file)).replace(SA_CA_FILE, str(ca_file))
    for old, new in urls.items():
        assert f'"{old}"' in inputs, old
        inputs = inputs.replace(f'"{old}"', f'"{new}"')
    if not track:
        assert "track_timestamps_staleness = true" in inputs
        inputs = inputs.replace("track_timestamps_staleness = true", "track_timestamps_staleness = false")
    (dest / "input.prometheus").mkdir(parents=True)
    (dest / "config.toml").write_text(main)
    (dest / "input.prometheus" / "prometheus.toml").write_text(inputs)
    return dest


@pytest.mark.parametrize("track", [True, False], ids=["tracked", "untracked"])
async def test_a_stopped_containers_cadvisor_series_go_stale_with_track_timestamps_staleness(
    tmp_path: Path, prometheus: Prometheus, track: bool
) -> None:
    tls = TLSFiles.create(tmp_path / "pki")
    token_file = tmp_path / "token"
    write_private(token_file, b"token-1")
    node = NodePayloads("node-1", "10.0.0.1", 4, seed=5)
    victim = node.pods()[-1].name
    stopped: set[str] = set()
    served: set[int] = set()  # the explicit timestamps served on the victim's cpu usage lines

    def render() -> None:
        # cAdvisor's view now: new housekeeping timestamps every scrape; a stopped pod's cgroups are gone.
        text = node.cadvisor().decode()
        served.update(int(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                      if line.startswith(STATS) and f'pod="{victim}"' in line)
        if stopped:
            text = "".join(line for line in text.splitlines(keepends=True) if f'pod="{victim}"' not in line)
        kubelet.pages["/metrics/cadvisor"] = text

    async with metrics_server({"/metrics": "kubelet_running_pods 4\n", "/metrics/cadvisor": ""},
                              tokens={"token-1"}, tls=tls) as kubelet, \
            metrics_server({"/metrics": "kubeproxy_sync_proxy_rules_last_timestamp_seconds 1\n"}) as proxy:
        kubelet.before = render
        conf = generated_config(
            tmp_path / "conf", writer_url=prometheus.write_url, token_file=token_file, ca_file=tls.ca_file,
            track=track,
            urls={"http://127.0.0.1:10249/metrics": proxy.url("/metrics"),
                  "https://$HOSTIP:10250/metrics": kubelet.url("/metrics"),
                  "https://$HOSTIP:10250/metrics/cadvisor": kubelet.url("/metrics/cadvisor")},
        )
        config = load_categraf(conf, env={"HOSTNAME": "node-1", "HOSTIP": "127.0.0.1"})
        stats = f'{STATS}{{job="cadvisor",pod="{victim}"}}'
        spec = f'{SPEC}{{job="cadvisor",pod="{victim}"}}'
        async with Agent(config) as agent:
            await wait_for(lambda: prometheus.query(stats) != [] and prometheus.query(spec) != [],
                           what="the pod's series to arrive")
            # Honored: stored at cAdvisor's housekeeping time, not at the scrape time.
            stamps = {round(float(r["value"][1]) * 1000) for r in prometheus.query(f"timestamp({stats})")}
            assert stamps and stamps <= served
            stopped.add(victim)
            await wait_for(lambda: prometheus.query(spec) == [], what="the spec series to be marked stale")
            if track:
                await wait_for(lambda: prometheus.query(stats) == [],
                               what="the stats series to be marked stale")
            else:
                # No marker for series with their own timestamps: still answered, seconds after the stop.
                scrapes = {t.url: t.scrapes for t in agent.stats().targets}
                await wait_for(lambda: all(t.scrapes >= scrapes[t.url] + 4 for t in agent.stats().targets),
                               what="four more scrapes")
                assert prometheus.query(stats) != []
            # The other pods' series are untouched either way.
            assert prometheus.query(f'{STATS}{{job="cadvisor",pod!="{victim}",pod!=""}}') != []
            assert agent.stats().failures == 0, [t.last_error for t in agent.stats().targets]
