from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from kubescrape.client import FetchResult
from kubescrape.config.models import AgentConfig, GlobalConfig, InstanceConfig
from kubescrape.errors import (
    BodyTooLargeError,
    ConnectError,
    HTTPStatusError,
    ParseError,
    TLSError,
    TokenError,
)
from kubescrape.remote_write import Chunk
from kubescrape.remote_write.encode import decode_write_request, is_stale_nan
from kubescrape.scrape.loop import (
    ACCEPT_HEADER,
    ScrapeClient,
    ScrapeLoop,
    ScrapeReport,
    scrape_offset,
)
from kubescrape.scrape.targets import Target, build_targets
from kubescrape.selfmon import SelfMetrics
from kubescrape.testing import FakeClock
from tests.e2e.helpers import PLAIN_HTTP_ON_TLS_BODY, TLSFiles, free_port, metrics_server

EXPOSITION = """# HELP kubelet_running_pods Number of pods running.
# TYPE kubelet_running_pods gauge
kubelet_running_pods 7
# TYPE http_requests_total counter
http_requests_total{code="200",path="/metrics"} 1027
http_requests_total{code="500",path="/metrics"} 3
"""


def make_target(url: str, **options: Any) -> Target:
    config = AgentConfig(
        global_=GlobalConfig(hostname="node-1", interval=1.0),
        instances=[InstanceConfig(urls=[url], labels={"job": "kubelet"}, **options)],
    )
    return build_targets(config)[0]


def series(chunks: Sequence[Chunk]) -> dict[str, float]:
    """Decoded chunks as {name{sorted labels}: value}."""
    out: dict[str, float] = {}
    for labels, points in decode_write_request(b"".join(c.data for c in chunks)):
        name = labels.pop("__name__")
        key = name + "{" + ",".join(f"{k}={v}" for k, v in sorted(labels.items())) + "}"
        out[key] = points[-1][0]
    return out


def value_of(report: ScrapeReport, name: str) -> float:
    matches = [v for k, v in series(report.chunks).items() if k.startswith(name + "{")]
    assert len(matches) == 1, (name, series(report.chunks))
    return matches[0]


@pytest.fixture
async def client() -> AsyncIterator[ScrapeClient]:
    c = ScrapeClient()
    yield c
    await c.close()


async def scrape(target: Target, client: ScrapeClient, metrics: SelfMetrics | None = None) -> ScrapeReport:
    return await ScrapeLoop(target, client=client, metrics=metrics).scrape()


# ---- success paths ------------------------------------------------------------------------------


async def test_scrape_returns_samples_and_synthetic_series(client: ScrapeClient) -> None:
    metrics = SelfMetrics()
    async with metrics_server({"/metrics": EXPOSITION}) as server:
        target = make_target(server.url("/metrics"))
        report = await scrape(target, client, metrics)
    assert report.ok, report.error
    got = series(report.chunks)
    assert any(k.startswith("kubelet_running_pods{") and v == 7 for k, v in got.items())
    assert value_of(report, "up") == 1
    assert value_of(report, "scrape_samples_scraped") == 3
    assert value_of(report, "scrape_samples_post_metric_relabeling") == 3
    assert value_of(report, "scrape_series_added") == 3
    assert value_of(report, "scrape_duration_seconds") == pytest.approx(report.duration)
    assert report.samples == 3 + 5
    headers = server.requests[0]
    assert headers["Accept"] == ACCEPT_HEADER
    assert "gzip" in headers["Accept-Encoding"]
    assert float(headers["X-Prometheus-Scrape-Timeout-Seconds"]) == target.timeout
    assert metrics.registry.get_sample_value(
        "kubescrape_scrapes_total", {"target": target.url, "result": "success"}) == 1
    assert metrics.registry.get_sample_value("kubescrape_samples_scraped_total", {"target": target.url}) == 3
    assert metrics.registry.get_sample_value("kubescrape_target_up", {"target": target.url}) == 1
    # every chunk of one target carries the same non-zero routing key (one remote-write shard, in order)
    keys = {c.key for c in report.chunks}
    assert len(keys) == 1 and 0 not in keys
    other = await ScrapeLoop(make_target(server.url("/other")), client=client).scrape()
    assert {c.key for c in other.chunks} != keys


async def test_a_failed_scrape_marks_the_series_of_the_last_good_one_stale(client: ScrapeClient) -> None:
    async with metrics_server({"/metrics": EXPOSITION}) as server:
        loop = ScrapeLoop(make_target(server.url("/metrics")), client=client)
        first = await loop.scrape()
        del server.pages["/metrics"]  # now 404
        second = await loop.scrape()
        third = await loop.scrape()
    assert first.ok and not second.ok and not third.ok
    first_decoded = decode_write_request(b"".join(c.data for c in first.chunks))
    scraped = {labels["__name__"] for labels, _ in first_decoded}
    decoded = decode_write_request(b"".join(c.data for c in second.chunks))
    stale = {labels["__name__"] for labels, points in decoded if all(is_stale_nan(v) for v, _ in points)}
    assert stale == scraped - {"up", "scrape_duration_seconds", "scrape_samples_scraped",
                               "scrape_samples_post_metric_relabeling", "scrape_series_added"}
    markers = sum(1 for _, points in decoded if all(is_stale_nan(v) for v, _ in points))
    assert markers == first.samples_post_relabel
    assert value_of(second, "up") == 0
    assert third.samples == 5  # only the synthetic series: markers are written once


async def test_enable_compression_false_asks_for_identity(client: ScrapeClient) -> None:
    async with metrics_server({"/metrics": EXPOSITION}) as server:
        report = await scrape(make_target(server.url("/metrics"), enable_compression=False), client)
    assert report.ok, report.error
    assert server.requests[0]["Accept-Encoding"] == "identity"
    assert report.samples_scraped == 3


async def test_gzip_body_is_decompressed_and_limit_applies_after(client: ScrapeClient) -> None:
    big = "".join(f'm{{i="{i}"}} {i}\n' for i in range(2000))  # ~30 kB, compresses to a few kB
    async with metrics_server({"/metrics": big}) as server:
        ok = await scrape(make_target(server.url("/metrics"), body_size_limit=1 << 20), client)
        too_big = await scrape(make_target(server.url("/metrics"), body_size_limit=10_000), client)
    assert ok.ok and ok.samples_scraped == 2000
    assert isinstance(too_big.error, BodyTooLargeError)
    assert "body_size_limit" in str(too_big.error)
    assert value_of(too_big, "up") == 0


async def test_headers_and_basic_auth_are_sent(client: ScrapeClient) -> None:
    async with metrics_server({"/metrics": EXPOSITION}) as server:
        target = make_target(server.url("/metrics"), headers={"X-Scope-OrgID": "team-a"},
                             username="prom", password="secret")
        report = await scrape(target, client)
    assert report.ok
    assert server.requests[0]["X-Scope-OrgID"] == "team-a"
    assert server.requests[0]["Authorization"] == "Basic cHJvbTpzZWNyZXQ="


# ---- bearer tokens ------------------------------------------------------------------------------


async def test_401_rereads_token_and_retries_once(tmp_path: Path, client: ScrapeClient) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("token-A")
    metrics = SelfMetrics()
    rotated = False

    async with metrics_server({"/metrics": EXPOSITION}, tokens={"token-A"}) as server:
        target = make_target(server.url("/metrics"), bearer_token_file=str(token_file))
        loop = ScrapeLoop(target, client=ScrapeClient(metrics=metrics), metrics=metrics)
        assert (await loop.scrape()).ok

        def rotate() -> None:
            # Rotation lands between the agent's stat and the server's check; the new file has the same
            # size and mtime, so only the 401 tells the agent to read it again.
            nonlocal rotated
            if not rotated:
                rotated = True
                st = token_file.stat()
                token_file.write_text("token-B")
                os.utime(token_file, ns=(st.st_atime_ns, st.st_mtime_ns))
                server.tokens = {"token-B"}

        server.before = rotate
        server.requests.clear()
        report = await loop.scrape()
        await loop._client.close()
    assert report.ok, report.error
    assert len(server.requests) == 2
    assert [r["Authorization"] for r in server.requests] == ["Bearer token-A", "Bearer token-B"]
    assert metrics.registry.get_sample_value("kubescrape_token_reloads_total", {"file": str(token_file)}) == 1


async def test_wrong_token_fails_with_401_after_one_retry(tmp_path: Path, client: ScrapeClient) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("wrong")
    metrics = SelfMetrics()
    async with metrics_server({"/metrics": EXPOSITION}, tokens={"right"}) as server:
        target = make_target(server.url("/metrics"), bearer_token_file=str(token_file))
        report = await scrape(target, client, metrics)
    assert server.statuses == [401, 401]
    err = report.error
    assert isinstance(err, HTTPStatusError)
    assert err.status == 401 and err.reason == "http_401"
    assert "401 Unauthorized" in str(err) and "bearer_token_file" in str(err)
    assert value_of(report, "up") == 0
    assert value_of(report, "scrape_samples_scraped") == 0
    assert metrics.registry.get_sample_value(
        "kubescrape_scrape_errors_total", {"target": target.url, "reason": "http_401"}) == 1


async def test_401_without_credentials_says_to_mount_a_token(client: ScrapeClient) -> None:
    async with metrics_server({"/metrics": EXPOSITION}, tokens={"x"}) as server:
        report = await scrape(make_target(server.url("/metrics")), client)
    assert server.statuses == [401]  # no token file: nothing to re-read, no retry
    assert isinstance(report.error, HTTPStatusError)
    assert "/var/run/secrets/kubernetes.io/serviceaccount/token" in str(report.error.fix)


async def test_missing_token_file_fails_the_scrape(tmp_path: Path, client: ScrapeClient) -> None:
    target = make_target("https://127.0.0.1:1/metrics", bearer_token_file=str(tmp_path / "nope"))
    report = await scrape(target, client)
    assert isinstance(report.error, TokenError)
    assert value_of(report, "up") == 0


async def test_403_includes_the_kubelet_body_and_rbac_fix(client: ScrapeClient) -> None:
    body = ("Forbidden (user=system:serviceaccount:flashcat:categraf-daemonset, verb=get, resource=nodes, "
            "subresource=metrics)")

    async def forbidden(_: web.Request) -> web.Response:
        return web.Response(status=403, text=body)

    async with _app_server(forbidden) as url:
        report = await scrape(make_target(url), client)
    err = report.error
    assert isinstance(err, HTTPStatusError) and err.status == 403
    assert body in str(err)
    assert "nodes/metrics" in str(err.fix) and "ClusterRoleBinding" in str(err.fix)


# ---- transport and TLS errors ------------------------------------------------------------------


async def test_connection_refused(client: ScrapeClient) -> None:
    metrics = SelfMetrics()
    target = make_target(f"http://127.0.0.1:{free_port()}/metrics")
    report = await scrape(target, client, metrics)
    assert isinstance(report.error, ConnectError)
    assert "refused" in str(report.error)
    assert value_of(report, "up") == 0
    assert metrics.registry.get_sample_value("kubescrape_target_up", {"target": target.url}) == 0


async def test_unknown_authority(tmp_path: Path, client: ScrapeClient) -> None:
    tls = TLSFiles.create(tmp_path / "server")
    other = TLSFiles.create(tmp_path / "other")
    async with metrics_server({"/metrics": EXPOSITION}, tls=tls) as server:
        url = server.url("/metrics")
        report = await scrape(make_target(url, use_tls=True, tls_ca=str(other.ca_file)), client)
        good = await scrape(make_target(url, use_tls=True, tls_ca=str(tls.ca_file)), client)
        skip = await scrape(make_target(url, use_tls=True, insecure_skip_verify=True), client)
    assert isinstance(report.error, TLSError)
    assert "unknown authority" in str(report.error) and "tls_ca" in str(report.error.fix)
    assert good.ok, good.error
    assert skip.ok, skip.error


async def test_hostname_mismatch_and_tls_server_name(tmp_path: Path, client: ScrapeClient) -> None:
    tls = TLSFiles.create(tmp_path / "server", ips=(), dns_names=("node-1.cluster.local",))
    async with metrics_server({"/metrics": EXPOSITION}, tls=tls) as server:
        bad = await scrape(make_target(server.url("/metrics"), use_tls=True, tls_ca=str(tls.ca_file)), client)
        good = await scrape(make_target(server.url("/metrics"), use_tls=True, tls_ca=str(tls.ca_file),
                                        tls_server_name="node-1.cluster.local"), client)
    assert isinstance(bad.error, TLSError)
    assert "tls_server_name" in str(bad.error.fix)
    assert good.ok, good.error


async def test_plain_http_on_tls_port_gets_https_fix(client: ScrapeClient) -> None:
    async def go_tls_listener(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Go's net/http answers a plain-HTTP request on a TLS port with this 400 (the kubelet does).
        await reader.read(1024)
        writer.write(b"HTTP/1.0 400 Bad Request\r\n\r\n" + PLAIN_HTTP_ON_TLS_BODY)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(go_tls_listener, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        report = await scrape(make_target(f"http://127.0.0.1:{port}/metrics"), client)
    finally:
        server.close()
        await server.wait_closed()
    assert isinstance(report.error, TLSError)
    assert "use https:// and use_tls = true" in str(report.error.fix)


async def test_https_to_plain_http_port(client: ScrapeClient) -> None:
    async with metrics_server({"/metrics": EXPOSITION}) as server:
        url = server.url("/metrics").replace("http://", "https://")
        report = await scrape(make_target(url, use_tls=True, insecure_skip_verify=True), client)
    assert isinstance(report.error, TLSError)
    assert "use http://" in str(report.error.fix)


async def test_parse_error_fails_the_whole_scrape(client: ScrapeClient) -> None:
    async with metrics_server({"/metrics": "good 1\nbad{ 2\n"}) as server:
        report = await scrape(make_target(server.url("/metrics")), client)
    assert isinstance(report.error, ParseError)
    assert report.error.target == report.url
    assert set(series(report.chunks)) == {
        k for k in series(report.chunks) if k.split("{")[0].startswith(("up", "scrape_"))
    }
    assert value_of(report, "up") == 0


async def test_errors_are_logged_once_per_change_of_state(
    client: ScrapeClient, caplog: pytest.LogCaptureFixture
) -> None:
    target = make_target(f"http://127.0.0.1:{free_port()}/metrics")
    loop = ScrapeLoop(target, client=client)
    with caplog.at_level(logging.INFO, logger="kubescrape.scrape.loop"):
        for _ in range(3):
            await loop.scrape()
    failures = [r for r in caplog.records if "failed" in r.getMessage()]
    assert len(failures) == 1 and failures[0].levelno == logging.WARNING
    assert loop.stats.scrapes == 3 and loop.stats.failures == 3 and loop.stats.up is False


# ---- scheduling ---------------------------------------------------------------------------------


class TimedLoop(ScrapeLoop):
    """A loop whose HTTP fetch is replaced: records when it scrapes, takes ``durations`` to answer."""

    def __init__(
        self, target: Target, clock: FakeClock, durations: dict[int, float], stop_after: int
    ) -> None:
        super().__init__(target, client=ScrapeClient(), clock=clock)
        self.fake_clock = clock
        self.times: list[float] = []
        self.durations = durations
        self.stop_after = stop_after
        self.done = asyncio.Event()

    async def fetch(self) -> FetchResult:
        self.times.append(self.fake_clock.monotonic())
        if len(self.times) >= self.stop_after:
            self.done.set()
            await asyncio.Event().wait()  # park here until cancelled
        await self.fake_clock.sleep(self.durations.get(len(self.times), 0.0))
        return FetchResult(b"m 1\n", "text/plain", self.target.url)


async def test_fixed_rate_schedule_without_drift_skips_missed_ticks() -> None:
    clock = FakeClock(start=1_700_000_000.25)
    target = make_target("http://127.0.0.1:1/metrics", interval_times=10)  # 10 s
    assert target.interval == 10
    # scrape 2 takes 0.7 s (no drift: next one still on the grid); scrape 4 takes 25 s (ticks 5, 6 missed)
    loop = TimedLoop(target, clock, durations={2: 0.7, 4: 25.0}, stop_after=7)
    task = loop.start()
    await asyncio.wait_for(loop.done.wait(), 5)
    await loop.stop()
    assert task.done()
    offset = scrape_offset(target, 10, 1_700_000_000.25)
    expected = [offset + 10 * k for k in (0, 1, 2, 3, 6, 7, 8)]
    assert loop.times == pytest.approx(expected)
    assert loop.stats.missed_ticks == 2


async def test_no_jitter_scrapes_at_once() -> None:
    clock = FakeClock()
    loop = TimedLoop(make_target("http://127.0.0.1:1/metrics"), clock, durations={}, stop_after=3)
    loop.start(jitter=False)
    await asyncio.wait_for(loop.done.wait(), 5)
    await loop.stop()
    assert loop.times == pytest.approx([0.0, 1.0, 2.0])


def test_offset_is_deterministic_and_phase_stable() -> None:
    a = make_target("https://127.0.0.1:10250/metrics")
    b = make_target("https://127.0.0.1:10250/metrics/cadvisor")
    now = 1_700_000_123.4
    oa = scrape_offset(a, 15, now)
    assert 0 <= oa <= 15
    assert scrape_offset(a, 15, now) == oa
    assert scrape_offset(b, 15, now) != oa
    # Restarting later keeps the same phase within the interval.
    later = now + 1234.5
    assert (now + oa) % 15 == pytest.approx((later + scrape_offset(a, 15, later)) % 15)
    assert scrape_offset(a, 15, now, seed=42) != oa


async def test_run_never_raises_when_the_sink_fails(client: ScrapeClient) -> None:
    class BrokenSink:
        calls = 0

        async def append(self, chunks: Sequence[Chunk]) -> None:
            BrokenSink.calls += 1
            raise RuntimeError("disk full")

    async with metrics_server({"/metrics": EXPOSITION}) as server:
        loop = ScrapeLoop(make_target(server.url("/metrics")), client=client, sink=BrokenSink())
        report = await loop.scrape_and_append()
        await loop.scrape_and_append()
    assert report.ok
    assert BrokenSink.calls == 2


# ---- helpers ------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _app_server(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> AsyncIterator[str]:
    """A plain-HTTP server on loopback answering /metrics with ``handler``; yields its URL."""
    app = web.Application()
    app.router.add_get("/metrics", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/metrics"
    finally:
        await runner.cleanup()
