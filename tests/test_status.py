"""The status pages and /api/v1/targets over real HTTP on loopback, fed by a hand-made source: formatting,
redaction, error and fix, the dropped-target bound, the writers' ledger read from the self-metrics."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from kubescrape.config.models import AgentConfig
from kubescrape.errors import HTTPStatusError
from kubescrape.scrape.loop import TargetStats
from kubescrape.scrape.targets import Target, build_targets
from kubescrape.selfmon import SelfMetrics, make_app
from kubescrape.status import (
    add_routes,
    error_parts,
    format_duration,
    rfc3339,
)


@dataclass
class Loop:
    target: Target
    stats: TargetStats


@dataclass
class Writer:
    name: str
    url: str
    pending_samples: int = 0
    last_error: str = ""
    queue_bytes: int = 0


@dataclass
class Snapshot:
    writers: list[Writer] = field(default_factory=list)


@dataclass
class Source:
    config: AgentConfig
    loops: list[Loop]
    metrics: SelfMetrics = field(default_factory=SelfMetrics)
    writers: list[Writer] = field(default_factory=list)

    def stats(self) -> Snapshot:
        return Snapshot(self.writers)


def make_config(dropped: int = 1) -> AgentConfig:
    return AgentConfig.model_validate({
        "global": {"hostname": "node-a", "interval": 15},
        "writers": [{"url": "http://127.0.0.1:9/api/v1/write", "basic_auth_user": "u",
                     "basic_auth_pass": "writer-secret-1"}],
        "instances": [
            {"urls": ["https://127.0.0.1:10250/metrics"], "job": "kubelet", "timeout": 5,
             "bearer_token_string": "inline-token-2"},
            {"urls": [f"http://127.0.0.1:{9100 + i}/metrics" for i in range(dropped + 1)], "job": "node",
             "password": "pass-word-3", "username": "me",
             "target_relabel_configs": [{"source_labels": ["__address__"], "regex": "127.0.0.1:9100",
                                         "action": "keep"}]},
        ],
    })


def make_source(config: AgentConfig) -> Source:
    loops = [Loop(t, TargetStats(url=t.url)) for t in build_targets(config)]
    kubelet = loops[0].stats
    kubelet.up, kubelet.last_scrape, kubelet.duration, kubelet.samples = False, 1_700_000_000.25, 0.012, 0
    kubelet.error = HTTPStatusError("https://127.0.0.1:10250/metrics answered 401 Unauthorized",
                                    "check bearer_token_file", status=401)
    kubelet.last_error = str(kubelet.error)
    node = loops[1].stats
    node.up, node.last_scrape, node.duration = True, 1_700_000_001, 0.5
    node.samples, node.samples_scraped = 40, 42
    return Source(config, loops)


SOURCE = web.AppKey("source", Source)


@pytest_asyncio.fixture
async def client() -> AsyncIterator[TestClient[web.Request, web.Application]]:
    source = make_source(make_config(dropped=3))
    app = add_routes(web.Application(), source, keep_dropped_targets=2)
    app[SOURCE] = source
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        yield c


async def get(client: TestClient[web.Request, web.Application], path: str) -> str:
    resp = await client.get(path)
    assert resp.status == 200, path
    return await resp.text()


@pytest.mark.parametrize(("seconds", "text"), [
    (15, "15s"), (90, "1m30s"), (0.5, "500ms"), (0, "0s"), (3600, "1h"), (86_400 * 8, "1w1d"),
    (1.25, "1s250ms"),
])
def test_format_duration_as_prometheus(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_rfc3339() -> None:
    assert rfc3339(0) == "1970-01-01T00:00:00Z"
    assert rfc3339(1.5) == "1970-01-01T00:00:01.5Z"
    assert rfc3339(None) == "0001-01-01T00:00:00Z"


def test_error_parts_from_the_object_or_the_text() -> None:
    assert error_parts(TargetStats(url="u", error=HTTPStatusError("c", "f"))) == ("c", "f")
    stats = TargetStats(url="u", last_error="cause text; fix: do this")
    assert error_parts(stats) == ("cause text", "do this")
    assert error_parts(Writer("w", "u", last_error="no fix here")) == ("no fix here", None)
    assert error_parts(Writer("w", "u")) is None
    assert error_parts(None) is None


async def test_targets_page(client: TestClient[web.Request, web.Application]) -> None:
    page = await get(client, "/targets")
    assert "kubelet <span class=\"count\">(0/1 up)</span>" in page
    assert "node <span class=\"count\">(1/1 up)</span>" in page
    assert "answered 401 Unauthorized" in page and "<b>Fix:</b> check bearer_token_file" in page
    assert page.count('class="target"') == 2 and " hidden" not in page.split("<section", 1)[1]
    unhealthy = await get(client, "/targets?state=unhealthy")
    assert unhealthy.count('data-health="up" data-search') == 1
    row = unhealthy.split('data-health="up"', 1)[1].split(">", 1)[0]
    assert row.endswith(" hidden")  # still in the page for the script, hidden without it
    assert 'id="pool-node" hidden' in unhealthy
    assert "checked" in unhealthy
    search = await get(client, "/targets?q=10250")
    assert 'id="pool-kubelet">' in search and 'id="pool-node" hidden' in search
    nothing = await get(client, "/targets?q=nothing-matches")
    assert '<p id="none" class="muted">' in nothing


async def test_api_targets(client: TestClient[web.Request, web.Application]) -> None:
    data = json.loads(await get(client, "/api/v1/targets"))["data"]
    kubelet, node = data["activeTargets"]
    assert kubelet["health"] == "down" and kubelet["lastError"].startswith("https://127.0.0.1:10250/metrics "
                                                                           "answered 401")
    assert kubelet["lastScrape"] == "2023-11-14T22:13:20.25Z" and kubelet["lastScrapeDuration"] == 0.012
    assert kubelet["scrapeInterval"] == "15s" and kubelet["scrapeTimeout"] == "5s"
    assert kubelet["globalUrl"] == "https://node-a:10250/metrics"
    assert node["health"] == "up" and node["lastError"] == "" and node["lastSamplesScraped"] == 42
    assert node["labels"] == {"agent_hostname": "node-a", "instance": "http://127.0.0.1:9100/metrics",
                              "job": "node"}
    # keep_dropped_targets = 2 of the 3 dropped
    assert [d["discoveredLabels"]["__address__"] for d in data["droppedTargets"]] == [
        "127.0.0.1:9101", "127.0.0.1:9102"]


async def test_never_scraped_target_is_unknown(client: TestClient[web.Request, web.Application]) -> None:
    source = client.app[SOURCE]
    source.loops[1].stats = TargetStats(url=source.loops[1].target.url)
    node = json.loads(await get(client, "/api/v1/targets?scrapePool=node&state=active"))["data"]
    assert node["droppedTargets"] == []
    (target,) = node["activeTargets"]
    assert target["health"] == "unknown" and target["lastScrape"] == "0001-01-01T00:00:00Z"
    assert target["lastScrapeDuration"] == 0


async def test_service_discovery_is_bounded(client: TestClient[web.Request, web.Application]) -> None:
    page = await get(client, "/service-discovery")
    assert page.count("dropped by target_relabel_configs rule #1 (action: keep)") == 2
    assert "1 more dropped target(s) not listed (keep_dropped_targets = 2)" in page
    assert "node <span class=\"count\">(1 active / 4 discovered)</span>" in page


async def test_relabel_page(client: TestClient[web.Request, web.Application]) -> None:
    page = await get(client, "/service-discovery")
    links = [part.split('"', 1)[0] for part in page.split('href="/targets/')[1:]]
    pages = [await get(client, f"/targets/{link}") for link in links]
    dropped = [p for p in pages if "dropped here" in p]
    assert len(dropped) == 2
    assert "Rule #1: keep" in dropped[0] and "regex: 127.0.0.1:9100" in dropped[0]
    kept = [p for p in pages if "Final labels" in p]
    assert len(kept) == 2
    assert any("has no target_relabel_configs" in p for p in kept)
    resp = await client.get("/targets/000000000000/relabel")
    assert resp.status == 404


async def test_config_page_hides_secrets(client: TestClient[web.Request, web.Application]) -> None:
    page = await get(client, "/config")
    for secret in ("writer-secret-1", "inline-token-2", "pass-word-3"):
        assert secret not in page
    assert page.count("&lt;secret&gt;") == 3
    assert "global:" in page and "username: me" in page


async def test_secrets_are_scrubbed_from_every_response(
    client: TestClient[web.Request, web.Application],
) -> None:
    # Even where a secret ends up in an error message, it never leaves the agent.
    source = client.app[SOURCE]
    source.loops[0].stats.error = HTTPStatusError("the server echoed pass-word-3 & inline-token-2", "none")
    source.loops[0].stats.last_error = str(source.loops[0].stats.error)
    for path in ("/targets", "/api/v1/targets"):
        text = await get(client, path)
        assert "pass-word-3" not in text and "inline-token-2" not in text
    assert "the server echoed &lt;secret&gt; &amp; &lt;secret&gt;" in await get(client, "/targets")


def writer_source(pending_gauge: float | None) -> Source:
    source = make_source(make_config())
    m = source.metrics
    source.writers = [Writer("w1", "http://u:pw-77@127.0.0.1:9/api/v1/write", pending_samples=10,
                             last_error="w1 answered 503; fix: check the backend", queue_bytes=3 << 20)]
    m.samples_appended.labels("w1").inc(100)
    m.samples_sent.labels("w1").inc(80)
    m.samples_dropped.labels("w1", "http_400").inc(4)
    m.samples_dropped.labels("w1", "queue_full").inc(1)
    m.samples_evicted.labels("w1").inc(5)
    m.shards.labels("w1").set(2)
    if pending_gauge is not None:
        m.samples_pending.labels("w1").set(pending_gauge)
    return source


@pytest.mark.parametrize(("pending", "verdict"), [
    (None, "pending 10: <span class=\"up\">balanced</span>"),  # from WriterStats
    (10, "pending 10: <span class=\"up\">balanced</span>"),  # from the self-metrics
    (5, "pending 5: <span class=\"down\">off by 5 sample(s)</span>"),
])
async def test_writers_ledger(pending: float | None, verdict: str) -> None:
    app = add_routes(web.Application(), writer_source(pending))
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        page = await get(c, "/writers")
    assert "appended 100 = sent 80 + dropped 5 + evicted 5 + " + verdict in page
    assert "5 (http_400: 4, queue_full: 1)" in page
    assert "w1 answered 503" in page and "<b>Fix:</b> check the backend" in page
    assert "pw-77" not in page and ">http://127.0.0.1:9/api/v1/write<" in page  # userinfo never shown
    assert '<span class="state failing">failing</span>' in page
    assert "3.0 MiB" in page  # the queue's bytes in memory


async def test_index_links_every_page(client: TestClient[web.Request, web.Application]) -> None:
    page = await get(client, "/")
    for path in ("/targets", "/service-discovery", "/writers", "/config", "/api/v1/targets", "/metrics"):
        assert f'href="{path}"' in page
    assert "1/2 up" in page


async def test_a_target_from_elsewhere_is_listed() -> None:
    source = make_source(make_config())
    extra = build_targets(AgentConfig.model_validate(
        {"instances": [{"urls": ["http://10.0.0.7:10249/metrics"], "job": "kube-proxy"}]}))[0]
    source.loops.append(Loop(extra, TargetStats(url=extra.url, up=True, last_scrape=1.0)))
    app = add_routes(web.Application(), source)
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        data: dict[str, Any] = json.loads(await get(c, "/api/v1/targets?scrapePool=kube-proxy"))["data"]
    (target,) = data["activeTargets"]
    assert target["health"] == "up" and target["discoveredLabels"]["__address__"] == "10.0.0.7:10249"


async def test_every_response_of_the_listener_is_scrubbed() -> None:
    config = AgentConfig.model_validate({"instances": [
        {"urls": ["http://bob:tgt-pass-1234@127.0.0.1:9/metrics"], "job": "j"}]})
    source = make_source_plain(config)
    source.metrics.target_up.labels(target="http://bob:tgt-pass-1234@127.0.0.1:9/metrics").set(0)
    app = add_routes(make_app(source.metrics), source)
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        metrics = await get(c, "/metrics")
    assert "tgt-pass-1234" not in metrics
    assert 'kubescrape_target_up{target="http://bob:<secret>@127.0.0.1:9/metrics"} 0.0' in metrics


def make_source_plain(config: AgentConfig) -> Source:
    return Source(config, [Loop(t, TargetStats(url=t.url)) for t in build_targets(config)])
