"""One scene for the status-page tests: three static targets (one up, one answering 401, one refused), a
target dropped by a relabel rule, a real agent with its listener on loopback remote-writing to a real
Prometheus that scrapes the same three targets itself. Every credential kind is configured, so the tests
can check that none of them ever shows."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from kubescrape.agent import Agent
from kubescrape.config.models import AgentConfig
from kubescrape.emulator.pki import write_private
from kubescrape.prometheus import Prometheus, running_prometheus
from tests.e2e.helpers import MetricsServer, free_port, metrics_server

PAGE = """# HELP node_load1 1m load average.
# TYPE node_load1 gauge
node_load1 0.25
# TYPE http_requests_total counter
http_requests_total{code="200"} 1027
http_requests_total{code="500"} 3
"""

# Generous: on a loaded machine a 1 s timeout can fail a scrape that should succeed.
INTERVAL = 3

# Every secret the configuration holds; none may appear in any page or API answer.
TOKEN = "eyJhbGciOiJSUzI1NiJ9.kubescrape-test-token-7f3a9c"
SECRETS = {
    "token": TOKEN,
    "password": "target-password-5e1d",
    "bearer_token_string": "inline-bearer-9b2e44",
    "writer_basic_auth_pass": "writer-pass-c0ffee",
    "writer_url_password": "url-pass-d00d",
    "authorization_header": "Bearer header-token-a11ce",
}


@dataclass
class Scene:
    agent: Agent
    prometheus: Prometheus
    up: MetricsServer
    unauthorized: MetricsServer
    refused_url: str
    base_url: str

    def url(self, path: str) -> str:
        return self.base_url + path


def scene_config(up: MetricsServer, unauthorized: MetricsServer, refused_url: str, token_file: Path,
                 write_url: str) -> AgentConfig:
    down_host_port = f"127.0.0.1:{free_port()}"
    return AgentConfig.model_validate({
        "global": {"hostname": "node-a", "interval": INTERVAL},
        "writers": [
            {"url": write_url, "basic_auth_user": "kubescrape",
             "basic_auth_pass": SECRETS["writer_basic_auth_pass"],
             "headers": {"Authorization": SECRETS["authorization_header"], "X-Scope-OrgID": "tenant-1"}},
            # A backend that is down, with the credentials in its URL.
            {"url": f"http://kubescrape:{SECRETS['writer_url_password']}@{down_host_port}/api/v1/write",
             "max_backoff": 0.5},
        ],
        "instances": [
            {"urls": [up.url("/metrics")], "job": "up", "timeout": INTERVAL},
            {"urls": [unauthorized.url("/metrics")], "job": "unauthorized", "timeout": INTERVAL,
             "bearer_token_file": str(token_file)},
            {"urls": [refused_url], "job": "refused", "timeout": INTERVAL, "username": "scraper",
             "password": SECRETS["password"]},
            {"urls": [up.url("/metrics?debug=1"), up.url("/internal/metrics")], "job": "relabeled",
             "timeout": INTERVAL, "bearer_token_string": SECRETS["bearer_token_string"],
             "target_relabel_configs": [
                 {"target_label": "env", "replacement": "prod"},
                 {"source_labels": ["__metrics_path__"], "regex": "/internal/.*", "action": "drop"},
                 {"source_labels": ["__param_debug"], "target_label": "debug"},
             ]},
        ],
    })


def prometheus_config(up: MetricsServer, unauthorized: MetricsServer, refused_url: str) -> str:
    def target(url: str) -> str:
        return url.split("//", 1)[1].split("/", 1)[0]

    jobs = [("up", up.url("/metrics")), ("unauthorized", unauthorized.url("/metrics")),
            ("refused", refused_url)]
    lines = ["global:", f"  scrape_interval: {INTERVAL}s", f"  scrape_timeout: {INTERVAL}s",
             "scrape_configs:"]
    for job, url in jobs:
        lines += [f"  - job_name: {job}", "    static_configs:", f"      - targets: ['{target(url)}']"]
    return "\n".join(lines) + "\n"


async def get(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with session.get(url) as r:
        return r.status, await r.text()


def prometheus_targets(prom: Prometheus, **params: str) -> Any:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    with urllib.request.urlopen(f"{prom.url}/api/v1/targets?{query}", timeout=10) as r:
        return json.loads(r.read())


async def wait_scraped(scene: Scene, timeout: float = 60.0) -> None:
    """Until both Prometheus and the agent scraped every active target at least once."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while True:
            prom = await asyncio.to_thread(prometheus_targets, scene.prometheus)
            _, text = await get(session, scene.url("/api/v1/targets?state=active"))
            ours = json.loads(text)
            ready = (len(prom["data"]["activeTargets"]) == 3
                     and all(t["health"] != "unknown" for t in prom["data"]["activeTargets"])
                     and all(t["health"] != "unknown" for t in ours["data"]["activeTargets"]))
            if ready:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"targets not scraped after {timeout}s: prometheus={prom} ours={ours}")
            await asyncio.sleep(0.25)


@contextlib.asynccontextmanager
async def status_scene(workdir: Path) -> AsyncIterator[Scene]:
    """The scene above, running for the duration of the block."""
    token_file = workdir / "token"
    write_private(token_file, TOKEN.encode(), 0o600)
    async with metrics_server({"/metrics": PAGE, "/internal/metrics": PAGE}) as up, \
            metrics_server({"/metrics": PAGE}, tokens={"the-only-accepted-token"}) as unauthorized:
        refused_url = f"http://127.0.0.1:{free_port()}/metrics"
        with running_prometheus(workdir / "prometheus",
                                config_yaml=prometheus_config(up, unauthorized, refused_url)) as prom:
            config = scene_config(up, unauthorized, refused_url, token_file, prom.write_url)
            async with Agent(config, listen="127.0.0.1:0", jitter=False, shutdown_timeout=2) as agent:
                assert agent.listen_address is not None
                host, port = agent.listen_address
                yield Scene(agent, prom, up, unauthorized, refused_url, f"http://{host}:{port}")
