"""The client side: TLS contexts, credential files, the scrape timeout on the clock, the error table's
messages, buffer release and the request headers. Real TLS and real HTTP on loopback; fake clocks only."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gzip
import logging
import os
import socket
import ssl
import threading
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from unittest import mock

import aiohttp
import pytest
from aiohttp import web

from kubescrape.agent import Agent
from kubescrape.client import (
    ACCEPT_HEADER,
    GzipBody,
    ScrapeClient,
    TLSConfig,
    client_ssl_context,
    clock_timeout,
    inflate_limited,
    inflate_module,
    read_gzip,
    remote_write_error,
    translate_error,
)
from kubescrape.config.models import AgentConfig, GlobalConfig, InstanceConfig
from kubescrape.errors import (
    BodyTooLargeError,
    ConnectError,
    HTTPStatusError,
    KubescrapeError,
    RemoteWriteError,
    ScrapeError,
    ScrapeTimeoutError,
    TLSConfigError,
    TLSError,
    TokenError,
)
from kubescrape.remote_write import Chunk
from kubescrape.remote_write.queue import WriterSettings
from kubescrape.remote_write.sender import Sender
from kubescrape.scrape.cache import BodyPieces, ScrapeResult
from kubescrape.scrape.loop import ScrapeLoop, ScrapeReport, series_cache
from kubescrape.scrape.targets import Target, build_targets
from kubescrape.selfmon import SelfMetrics
from kubescrape.testing import FakeClock
from tests.e2e.helpers import TLSFiles, free_port, metrics_server

METRICS = "# TYPE up_total counter\nup_total 1\n"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def make_target(url: str, **options: Any) -> Target:
    config = AgentConfig(global_=GlobalConfig(hostname="node-1", interval=30.0),
                         instances=[InstanceConfig(urls=[url], **options)])
    return build_targets(config)[0]


async def scrape(target: Target, *, clock: Any = None, metrics: SelfMetrics | None = None) -> ScrapeReport:
    client = ScrapeClient(clock=clock) if clock is not None else ScrapeClient()
    try:
        loop = (ScrapeLoop(target, client=client, clock=clock, metrics=metrics) if clock is not None
                else ScrapeLoop(target, client=client, metrics=metrics))
        return await loop.scrape()
    finally:
        await client.close()


@contextlib.asynccontextmanager
async def serve(
    handler: Handler, tls: ssl.SSLContext | None = None, method: str = "GET"
) -> AsyncIterator[str]:
    """An aiohttp server on loopback answering every ``method`` request with ``handler``; yields its base
    URL."""
    app = web.Application()
    app.router.add_route(method, "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=tls).start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def raw_server(on_connect: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
                     ) -> AsyncIterator[int]:
    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()


# ---- tls_ca replaces the system trust store (issue 15 #6) ----------------------------------------------


async def test_tls_ca_replaces_the_system_trust_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server with a certificate from a rogue CA that the *system* store trusts (SSL_CERT_FILE) must not
    be scraped when tls_ca names another CA: Prometheus' ca_file and Go's RootCAs replace the store."""
    rogue = TLSFiles.create(tmp_path / "rogue")
    mine = TLSFiles.create(tmp_path / "mine")
    monkeypatch.setenv("SSL_CERT_FILE", str(rogue.ca_file))
    async with metrics_server({"/metrics": METRICS}, tls=rogue) as server:
        url = server.url("/metrics")
        pinned = await scrape(make_target(url, use_tls=True, tls_ca=str(mine.ca_file)))
        system = await scrape(make_target(url, use_tls=True))  # no tls_ca: the (rogue) system store
    assert isinstance(pinned.error, TLSError) and pinned.error.reason == "cert_unknown_authority"
    assert system.ok, system.error


async def test_tls_options_without_use_tls_are_named_in_the_fix(tmp_path: Path) -> None:
    """As in Categraf, https without use_tls verifies against the system store: the fix says why the
    configured insecure_skip_verify made no difference."""
    files = TLSFiles.create(tmp_path)
    async with metrics_server({"/metrics": METRICS}, tls=files) as server:
        report = await scrape(make_target(server.url("/metrics"), insecure_skip_verify=True))
    assert isinstance(report.error, TLSError) and report.error.reason == "cert_unknown_authority"
    assert (report.error.fix or "").startswith(
        "insecure_skip_verify is not applied without use_tls = true (as in Categraf): add use_tls = true.")


def test_context_with_tls_ca_holds_only_that_ca(tmp_path: Path) -> None:
    files = TLSFiles.create(tmp_path)
    ctx = client_ssl_context(TLSConfig(ca_file=str(files.ca_file)))
    assert ctx is not None and len(ctx.get_ca_certs()) == 1


# ---- tls_max_version, tls_server_name (issue 15 #8) ------------------------------------------------------


def negotiated_version(versions: list[str]) -> Handler:
    async def handle(request: web.Request) -> web.Response:
        ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
        versions.append(ssl_object.version() if ssl_object is not None else "none")
        return web.Response(text=METRICS)

    return handle


@pytest.mark.parametrize(("max_version", "expected"), [(None, "TLSv1.3"), ("1.2", "TLSv1.2")])
async def test_max_version_is_honoured(tmp_path: Path, max_version: str | None, expected: str) -> None:
    from kubescrape.emulator.pki import server_ssl_context

    files = TLSFiles.create(tmp_path)
    versions: list[str] = []
    async with serve(negotiated_version(versions), server_ssl_context(files.server)) as base:
        target = make_target(base + "/metrics", use_tls=True, tls_ca=str(files.ca_file),
                             tls_max_version=max_version)
        report = await scrape(target)
    assert report.ok, report.error
    assert versions == [expected]


def test_max_version_below_min_version_is_a_config_error() -> None:
    with pytest.raises(TLSConfigError, match="lower than tls_min_version"):
        client_ssl_context(TLSConfig(min_version="1.3", max_version="1.2"))


@dataclasses.dataclass(frozen=True)
class WriterWithServerName(WriterSettings):
    server_name: str | None = None


async def test_writer_tls_server_name_is_applied(tmp_path: Path) -> None:
    from kubescrape.emulator.pki import server_ssl_context

    files = TLSFiles.create(tmp_path, ips=(), dns_names=("backend.example",))

    async def accept(_: web.Request) -> web.Response:
        return web.Response(status=204)

    async with serve(accept, server_ssl_context(files.server), method="POST") as base:
        url = base + "/api/v1/write"
        without = Sender(WriterSettings(url=url, name="w", ca_file=str(files.ca_file)), metrics=SelfMetrics())
        with pytest.raises(Exception, match=r"not valid for the name '127\.0\.0\.1'"):
            await without.send_once(b"", 0)
        await without.close()
        named = Sender(WriterWithServerName(url=url, name="w2", ca_file=str(files.ca_file),
                                            server_name="backend.example"), metrics=SelfMetrics())
        await named.send_once(b"", 0)
        await named.close()


# ---- credential files never block the event loop (issue 15 #10) ------------------------------------------


@contextlib.contextmanager
def fifo_rescuer(path: Path) -> Iterator[list[bool]]:
    """If anything blocks opening ``path`` for reading, open it for writing (once) so the read sees EOF and
    the test ends; ``rescued[0]`` says whether that was ever needed, i.e. whether a reader blocked."""
    rescued = [False]
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(0.2):
            try:
                fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # ENXIO: no reader waiting, which is how it should stay
                continue
            rescued[0] = True
            os.close(fd)
            return

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield rescued
    finally:
        stop.set()
        thread.join()


async def test_fifo_token_file_is_a_clear_error_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "token"
    os.mkfifo(fifo)
    with fifo_rescuer(fifo) as rescued:
        target = make_target(f"http://127.0.0.1:{free_port()}/metrics", bearer_token_file=str(fifo))
        report = await scrape(target)
    assert not rescued[0], "the agent blocked reading the FIFO"
    assert isinstance(report.error, TokenError)
    assert "FIFO" in report.error.cause and report.error.fix


async def test_fifo_token_keeps_self_metrics_answering(tmp_path: Path) -> None:
    fifo = tmp_path / "token"
    os.mkfifo(fifo)

    class Discard:
        async def append(self, chunks: Sequence[Chunk]) -> None:
            return None

    config = AgentConfig(global_=GlobalConfig(hostname="node-1", interval=30.0), instances=[
        InstanceConfig(urls=[f"http://127.0.0.1:{free_port()}/metrics"], bearer_token_file=str(fifo))])
    with fifo_rescuer(fifo) as rescued:
        agent = Agent(config, sink=Discard(), listen="127.0.0.1:0", jitter=False)
        await agent.start()
        try:
            assert agent.listen_address is not None
            url = "http://{}:{}/metrics".format(*agent.listen_address)
            async with aiohttp.ClientSession() as session:
                for _ in range(50):  # until the first scrape is recorded
                    async with session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as resp:
                        assert resp.status == 200
                        text = await resp.text()
                    if 'reason="token"' in text:
                        break
                    await asyncio.sleep(0.05)
        finally:
            await agent.stop()
    assert not rescued[0]
    assert 'kubescrape_scrape_errors_total{reason="token"' in text


def test_device_and_fifo_as_tls_files_are_config_errors(tmp_path: Path) -> None:
    fifo = tmp_path / "ca.crt"
    os.mkfifo(fifo)
    with fifo_rescuer(fifo) as rescued, pytest.raises(TLSConfigError, match="FIFO"):
        client_ssl_context(TLSConfig(ca_file=str(fifo)))
    assert not rescued[0]
    with pytest.raises(TLSConfigError, match="character device"):
        client_ssl_context(TLSConfig(ca_file="/dev/zero"))


# ---- the scrape timeout runs on the clock (issue 11 §5) --------------------------------------------------


async def test_scrape_timeout_is_measured_by_the_injected_clock() -> None:
    clock = FakeClock(autojump=False)
    arrived = asyncio.Event()

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        arrived.set()
        with contextlib.suppress(ConnectionError):
            await reader.read()  # never answers; ends when the client gives up
        writer.close()

    async with raw_server(hang) as port:
        target = make_target(f"http://127.0.0.1:{port}/metrics", timeout=7)
        task = asyncio.create_task(scrape(target, clock=clock))
        await asyncio.wait_for(arrived.wait(), 10)
        clock.advance(6.9)
        await asyncio.sleep(0.05)
        assert not task.done()
        clock.advance(0.2)
        report = await asyncio.wait_for(task, 10)
    assert isinstance(report.error, ScrapeTimeoutError)
    assert "did not answer within 7s" in report.error.cause
    assert report.duration == pytest.approx(7.1)


async def test_clock_timeout_passes_an_outside_cancel_through() -> None:
    clock = FakeClock(autojump=False)

    async def body() -> None:
        async with clock_timeout(clock, 5):
            await asyncio.Event().wait()

    task = asyncio.create_task(body())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_clock_timeout_does_nothing_when_the_block_is_quick() -> None:
    clock = FakeClock(autojump=False)
    async with clock_timeout(clock, 5):
        await asyncio.sleep(0)
    clock.advance(10)
    await asyncio.sleep(0)  # a leftover watchdog would cancel us here
    assert asyncio.current_task() is not None and asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


# ---- messages: timeout vs refused vs reset, redirects, credential sources (issue 15 #11) ----------------


async def reset_immediately(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    writer.transport.abort()


async def test_refused_and_reset_are_told_apart() -> None:
    refused = await scrape(make_target(f"http://127.0.0.1:{free_port()}/metrics"))
    async with raw_server(reset_immediately) as port:
        reset = await scrape(make_target(f"http://127.0.0.1:{port}/metrics"))
    assert isinstance(refused.error, ConnectError) and refused.error.reason == "connect_refused"
    assert "refused" in refused.error.cause
    assert isinstance(reset.error, ConnectError) and reset.error.reason == "connect_reset"
    assert "closed the connection" in reset.error.cause and "refused" not in reset.error.cause


def test_writer_messages_tell_timeout_refused_and_reset_apart() -> None:
    url = "http://backend:9090/api/v1/write"
    timeout = remote_write_error(TimeoutError(), url, "w", timeout=5)
    refused = remote_write_error(ConnectionRefusedError(111, "Connection refused"), url, "w")
    reset = remote_write_error(aiohttp.ServerDisconnectedError(), url, "w")
    assert "did not answer within 5s" in timeout.cause and "slow or overloaded" in (timeout.fix or "")
    assert "refused" in refused.cause and "up and listens" in (refused.fix or "")
    assert "closed the connection" in reset.cause
    assert all(e.retryable for e in (timeout, refused, reset))
    assert "connection failed" not in timeout.cause


def _cert_error(code: int, message: str) -> ssl.SSLCertVerificationError:
    e = ssl.SSLCertVerificationError(1, "certificate verify failed")
    e.verify_code = code
    e.verify_message = message
    return e


@pytest.mark.parametrize(("error", "reason"), [
    (_cert_error(10, "certificate has expired"), "cert_expired"),
    (_cert_error(9, "certificate is not yet valid"), "cert_not_yet_valid"),
    (_cert_error(62, "Hostname mismatch"), "cert_name_mismatch"),
    (_cert_error(19, "self-signed certificate in certificate chain"), "cert_unknown_authority"),
    (_cert_error(27, "certificate not trusted"), "cert_unknown_authority"),
    (ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"), "tls_plain_http"),
    (ssl.SSLError(1, "[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert certificate required"),
     "tls_client_cert_required"),
    (ssl.SSLError(1, "[SSL: UNSUPPORTED_PROTOCOL] unsupported protocol"), "tls_version"),
    (ssl.SSLError(1, "[SSL: TLSV1_ALERT_INTERNAL_ERROR] tlsv1 alert internal error"), "tls_no_serving_cert"),
    (TimeoutError(), "timeout"),
    (aiohttp.ConnectionTimeoutError(), "connect_timeout"),
    (socket.gaierror(-2, "Name or service not known"), "dns"),
    (ConnectionRefusedError(111, "Connection refused"), "connect_refused"),
    (ConnectionResetError(104, "Connection reset by peer"), "connect_reset"),
    (aiohttp.ServerDisconnectedError(), "connect_reset"),
    (aiohttp.ClientPayloadError("Response payload is not completed"), "payload"),
    (OSError(113, "No route to host"), "connect"),
])
def test_error_table_rows(error: BaseException, reason: str) -> None:
    scrape = translate_error(error, "https://10.0.0.1:10250/metrics", timeout=3)
    write = remote_write_error(error, "https://backend:9090/api/v1/write", "w", timeout=3)
    assert scrape.reason == reason
    assert scrape.fix and write.fix and write.retryable
    assert scrape.fix != write.fix  # each side gets the advice that fits it


def test_certificate_verify_code_27_is_an_unknown_authority() -> None:
    e = ssl.SSLCertVerificationError(1, "certificate verify failed")
    e.verify_code = 27
    e.verify_message = "certificate not trusted"
    error = translate_error(e, "https://10.0.0.1:10250/metrics")
    assert error.reason == "cert_unknown_authority" and "tls_ca" in (error.fix or "")


async def test_a_redirect_reports_the_final_url() -> None:
    async def handle(request: web.Request) -> web.StreamResponse:
        if request.path == "/metrics":
            raise web.HTTPFound("/moved/metrics")
        return web.Response(status=404, text="404 page not found")

    async with serve(handle) as base:
        report = await scrape(make_target(base + "/metrics"))
    assert isinstance(report.error, HTTPStatusError) and report.error.status == 404
    assert report.error.target == base + "/moved/metrics"
    final = f"{base}/moved/metrics"
    assert report.error.cause.startswith(f"{final} (redirected from {base}/metrics) answered 404")


async def unauthorized(_: web.Request) -> web.Response:
    return web.Response(status=401, text="Unauthorized")


@pytest.mark.parametrize(("options", "named"), [
    ({"bearer_token_string": "abc"}, "bearer_token_string"),
    ({"username": "alice", "password": "pw"}, "basic auth (username 'alice'"),
])
async def test_401_advice_names_the_configured_credential_source(options: dict[str, str], named: str) -> None:
    async with serve(unauthorized) as base:
        report = await scrape(make_target(base + "/metrics", **options))
    assert isinstance(report.error, HTTPStatusError) and report.error.status == 401
    assert named in report.error.cause and named in (report.error.fix or "")
    assert "bearer_token_file" not in str(report.error)


async def test_401_advice_names_the_client_certificate(tmp_path: Path) -> None:
    from kubescrape.emulator.pki import server_ssl_context

    files = TLSFiles.create(tmp_path)
    files.ca.issue_client("me").write(tmp_path / "c.crt", tmp_path / "c.key")
    async with serve(unauthorized, server_ssl_context(files.server)) as base:
        report = await scrape(make_target(base + "/metrics", use_tls=True, tls_ca=str(files.ca_file),
                                          tls_cert=str(tmp_path / "c.crt"), tls_key=str(tmp_path / "c.key")))
    assert isinstance(report.error, HTTPStatusError)
    assert f"the client certificate tls_cert ({tmp_path / 'c.crt'})" in report.error.cause


# ---- plain-http credentials (issue 16) -------------------------------------------------------------------


def test_credentials_over_plain_http_to_a_remote_host_warn_once(caplog: pytest.LogCaptureFixture) -> None:
    client = ScrapeClient()
    remote = make_target("http://10.1.2.3:10249/metrics", bearer_token_string="t")
    local = make_target("http://127.0.0.1:10249/metrics", bearer_token_string="t")
    tls = make_target("https://10.1.2.3:10250/metrics", bearer_token_string="t", use_tls=True)
    anonymous = make_target("http://10.1.2.3:10249/metrics")
    with caplog.at_level(logging.WARNING, logger="kubescrape.client"):
        assert client.warn_plain_credentials(remote) is not None
        assert client.warn_plain_credentials(remote) is not None
        for quiet in (local, tls, anonymous):
            assert client.warn_plain_credentials(quiet) is None
    assert len([r for r in caplog.records if "plain http://" in r.getMessage()]) == 1


async def test_doctor_flags_credentials_over_plain_http() -> None:
    from kubescrape.doctor import diagnose

    # A documentation address (RFC 5737): not loopback; the url step comes before any connection.
    d = await diagnose(make_target("http://192.0.2.1:10249/metrics", username="u", password="p", timeout=1),
                       timeout=0.5)
    (url_step,) = [s for s in d.steps if s.name == "url"]
    assert url_step.warning is not None and "basic auth over plain http://" in url_step.warning


# ---- bounded memory: a failed scrape releases its body at once (issue 15 #2) ----------------------------


async def test_an_oversized_body_is_released_without_the_cycle_collector() -> None:
    chunk = b"x" * (1 << 20)

    async def huge(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        with contextlib.suppress(ConnectionError):
            for _ in range(16):
                await resp.write(chunk)
        return resp

    async with serve(huge) as base:
        target = make_target(base + "/metrics", body_size_limit=4 << 20, enable_compression=False)
        await scrape(target)  # warm up: imports, session, TLS-free connection pools
        tracemalloc.start()
        try:
            report = await scrape(target)
            held, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert isinstance(report.error, BodyTooLargeError)
    # The report (and its error) is alive here; the ~4 MiB read before the limit must not be.
    assert held < 1 << 20, f"{held} bytes still held after a failed scrape"


# ---- request headers and the content type (issue 15 #3) --------------------------------------------------


def test_accept_header_is_what_prometheus_sends() -> None:
    assert ACCEPT_HEADER == (
        "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
        "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
    )


async def test_the_content_type_reaches_a_cache_that_takes_it() -> None:
    seen: list[str] = []

    class Cache:
        def process(
            self, body: bytes | BodyPieces, scrape_ts_ms: int, *, content_type: str = "", snappy: bool = False
        ) -> ScrapeResult:
            seen.append(content_type)
            return ScrapeResult([], 1, 1, 0)

        def stale_all(self, scrape_ts_ms: int) -> list[Chunk]:
            return []

    async def om(_: web.Request) -> web.Response:
        return web.Response(body=b"a 1\n# EOF\n",
                            headers={"Content-Type": "application/openmetrics-text; version=1.0.0"})

    requests: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        requests.append(request.headers.get("Accept", ""))
        return await om(request)

    client = ScrapeClient()
    async with serve(handle) as base:
        loop = ScrapeLoop(make_target(base + "/metrics"), client=client, cache=Cache())
        report = await loop.scrape()
    await client.close()
    assert report.ok, report.error
    assert seen == ["application/openmetrics-text; version=1.0.0"]
    assert requests == [ACCEPT_HEADER]


async def test_drops_reported_by_the_cache_are_counted_per_target() -> None:
    class Cache:
        def process(
            self, body: bytes | BodyPieces, scrape_ts_ms: int, *, content_type: str = "", snappy: bool = False
        ) -> ScrapeResult:
            return ScrapeResult([], 5, 3, 0, samples_duplicate=2, dropped={"duplicate": 2})

        def stale_all(self, scrape_ts_ms: int) -> list[Chunk]:
            return []

    metrics = SelfMetrics()
    client = ScrapeClient()
    async with serve(ok) as base:
        target = make_target(base + "/metrics")
        report = await ScrapeLoop(target, client=client, cache=Cache(), metrics=metrics).scrape()
    await client.close()
    assert report.dropped == {"duplicate": 2}
    assert metrics.registry.get_sample_value(
        "kubescrape_scrape_samples_dropped_total", {"target": target.url, "reason": "duplicate"}) == 2


async def ok(_: web.Request) -> web.Response:
    return web.Response(text=METRICS)


async def test_writer_401_names_the_configured_credentials() -> None:
    async def refuse(_: web.Request) -> web.Response:
        return web.Response(status=401, text="bad credentials")

    errors = []
    async with serve(refuse, method="POST") as base:
        url = base + "/api/v1/write"
        for settings in (WriterSettings(url=url, name="a", basic_auth=("alice", "pw")),
                         WriterSettings(url=url, name="b", headers=(("Authorization", "Bearer x"),)),
                         WriterSettings(url=url, name="c")):
            sender = Sender(settings, metrics=SelfMetrics())
            with pytest.raises(RemoteWriteError) as info:
                await sender.send_once(b"", 0)
            await sender.close()
            errors.append(info.value)
    basic, header, anonymous = errors
    assert "basic auth (basic_auth_user 'alice')" in (basic.fix or "")
    assert "the Authorization header in headers" in (header.fix or "")
    assert "none were sent" in (anonymous.fix or "")
    assert not any(e.retryable for e in errors)


def test_the_alert_internal_error_names_the_pending_serving_csr_and_both_commands() -> None:
    e = ssl.SSLError(1, "[SSL: TLSV1_ALERT_INTERNAL_ERROR] tlsv1 alert internal error (_ssl.c:1006)")
    error = translate_error(e, "https://10.0.0.1:10250/metrics")
    assert "alert internal_error" in error.cause and "kubernetes.io/kubelet-serving CSR" in error.cause
    assert "`kubectl get csr`" in (error.fix or "")
    assert "`kubectl certificate approve <name>`" in (error.fix or "")
    assert "tls_cert" not in (error.fix or "") and "TLS version" not in (error.fix or "")


# ---- gzip bodies: inflated by ISA-L when available, same bytes, corrupt streams are clear errors --------


def gzip_handler(body: bytes) -> Handler:
    async def handle(_: web.Request) -> web.Response:
        return web.Response(body=body, headers={"Content-Encoding": "gzip",
                                                "Content-Type": "text/plain; version=0.0.4"})
    return handle


def test_gzip_is_inflated_by_isal_when_it_is_installed() -> None:
    isal_zlib = pytest.importorskip("isal.isal_zlib")
    assert inflate_module() is isal_zlib


async def test_a_gzip_body_arrives_byte_for_byte() -> None:
    text = "".join(f'container_cpu_usage_seconds_total{{id="/pod{i}",image="r/{i % 7}"}} {i}.5 {i}\n'
                   for i in range(30_000)).encode()  # several MB of text: many inflate calls
    client = ScrapeClient()
    try:
        async with serve(gzip_handler(gzip.compress(text, 6))) as base:
            result = await client.fetch(make_target(base + "/metrics", body_size_limit=0))
    finally:
        await client.close()
    assert result.body == text


@pytest.mark.parametrize("damage", ["truncated", "garbage", "bad_crc", "too_large"])
async def test_a_corrupt_gzip_body_is_a_clear_scrape_error(damage: str) -> None:
    good = gzip.compress(b"up 1\n" * 10_000)
    body = {"truncated": good[: len(good) // 2], "garbage": b"\x1f\x8b\x08\x00garbage" * 50,
            "bad_crc": good[:-8] + bytes(8 * [0x55]), "too_large": good}[damage]
    async with serve(gzip_handler(body)) as base:
        target = make_target(base + "/metrics", body_size_limit=40_000)
        report = await scrape(target)
        # The scrape loop inflates in pieces; its error is the one of the body inflated whole.
        client = ScrapeClient()
        try:
            with pytest.raises(ScrapeError) as whole:
                await client.fetch(target)
        finally:
            await client.close()
    assert not report.ok
    assert isinstance(report.error, KubescrapeError)
    assert base in str(report.error)
    assert (type(report.error), str(report.error)) == (type(whole.value), str(whole.value))


async def test_a_gzip_body_read_in_pieces_is_the_body_inflated_whole() -> None:
    text = b"".join(b'container_memory_rss{id="/pod%d"} %d\n' % (i, i * 7) for i in range(60_000))
    for compressed in (gzip.compress(text, 6), gzip.compress(text[:1000]) + gzip.compress(text[1000:])):
        body = await read_gzip(ChunkedStream(compressed), len(text), "https://node:10250/metrics")  # type: ignore[arg-type]
        assert isinstance(body, GzipBody) and body.compressed_size == len(compressed)
        pieces = list(body.pieces())
        assert len(pieces) > 4 and max(map(len, pieces)) <= 1 << 18
        assert b"".join(pieces) == body.whole() == text


@pytest.mark.parametrize("damage", ["truncated", "garbage", "bad_crc", "too_large", "trailing_garbage"])
async def test_a_gzip_body_in_pieces_fails_as_the_whole_body_does(damage: str) -> None:
    text = b"up 1\n" * 100_000
    good = gzip.compress(text)
    compressed = {"truncated": good[: len(good) // 2], "garbage": b"\x1f\x8b\x08\x00garbage" * 50,
                  "bad_crc": good[:-8] + bytes(8 * [0x55]), "too_large": good,
                  "trailing_garbage": good + b"\x00junk"}[damage]
    limit = len(text) - 1 if damage == "too_large" else 0
    body = await read_gzip(ChunkedStream(compressed), limit, "https://node:10250/metrics")  # type: ignore[arg-type]
    assert isinstance(body, GzipBody)
    with pytest.raises(ScrapeError) as in_pieces:
        for _ in body.pieces():
            pass
    # The same error as a whole inflation gives: a fresh body read whole says the same.
    fresh = await read_gzip(ChunkedStream(compressed), limit, "https://node:10250/metrics")  # type: ignore[arg-type]
    assert isinstance(fresh, GzipBody)
    with pytest.raises(ScrapeError) as whole:
        fresh.whole()
    assert type(in_pieces.value) is type(whole.value)
    assert in_pieces.value.reason == whole.value.reason
    assert str(in_pieces.value) == str(whole.value)
    assert "node:10250" in str(in_pieces.value)
    # Read whole after the pieces failed, the body is not inflated again (a gzip bomb costs once).
    refuse = mock.patch("kubescrape.client._inflate_whole", side_effect=AssertionError("inflated again"))
    with refuse, pytest.raises(ScrapeError) as again:
        body.whole()
    assert again.value is in_pieces.value


def test_bytes_after_a_gzip_stream_are_named_as_such() -> None:
    """Bytes after a complete gzip stream that never form a member are reported as trailing bytes, not
    as a stream cut short; a stream cut short is still reported as such."""
    good = gzip.compress(b"up 1\n" * 1000)
    for tail in (b"junk", b"\x00junk", gzip.compress(b"up 1\n")[:6]):
        body = GzipBody([good + tail], 0, "https://node:10250/metrics")
        with pytest.raises(ScrapeError, match=f"sent {len(tail)} bytes after its gzip stream") as err:
            body.whole()
        assert err.value.reason == "gzip" and "nothing may follow the gzip stream" in str(err.value)
    cut = GzipBody([good + gzip.compress(b"up 2\n" * 5000)[:-30]], 0, "https://node:10250/metrics")
    with pytest.raises(ScrapeError, match="ends early"):
        cut.whole()


async def test_a_scrape_parses_a_gzip_body_in_pieces_into_the_same_samples() -> None:
    text = "".join(f'container_cpu_usage_seconds_total{{id="/pod{i}",image="r/{i % 7}"}} {i}.5\n'
                   for i in range(30_000)).encode()  # ~2.5 MB: many pieces
    client = ScrapeClient()
    try:
        async with serve(gzip_handler(gzip.compress(text, 6))) as base:
            target = make_target(base + "/metrics")
            streamed = await client.fetch(target, inflate=False)
            whole = await client.fetch(target)
            report = await scrape(target)
    finally:
        await client.close()
    assert streamed.body == b"" and streamed.gzip is not None and whole.gzip is None and whole.body == text
    assert report.ok and report.samples_scraped == 30_000
    ts = 1_764_000_000_000
    results = [series_cache(target, batch=500).process(body, ts) for body in (streamed.gzip, whole.body)]
    assert [c.data for c in results[0].chunks] == [c.data for c in results[1].chunks]


async def test_a_gzip_bomb_stops_at_the_limit_without_inflating_it_all() -> None:
    bomb = gzip.compress(b"0" * (64 << 20), 9)  # 64 MiB of text in ~64 KiB
    async with serve(gzip_handler(bomb)) as base:
        target = make_target(base + "/metrics", body_size_limit=1 << 20)
        client = ScrapeClient()
        tracemalloc.start()
        try:
            with pytest.raises(BodyTooLargeError, match="body_size_limit = 1048576"):
                await client.fetch(target)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
            await client.close()
    assert peak < 8 << 20  # the limit plus one inflate step, not the 64 MiB


async def test_an_encoding_other_than_gzip_is_refused_with_the_fix() -> None:
    async def brotli(_: web.Request) -> web.Response:
        return web.Response(body=b"\x0b\x02\x80up 1\n\x03", headers={"Content-Encoding": "br"})

    async with serve(brotli) as base:
        report = await scrape(make_target(base + "/metrics"))
    assert isinstance(report.error, ScrapeError) and report.error.reason == "content_encoding"
    assert "Content-Encoding: br" in report.error.cause and "enable_compression" in (report.error.fix or "")


async def test_a_gzip_error_page_is_read_inflated_into_the_message() -> None:
    text = (b"Forbidden (user=system:serviceaccount:flashcat:categraf, verb=get, resource=nodes, "
            b"subresource=metrics)")

    async def forbidden(_: web.Request) -> web.Response:
        return web.Response(status=403, body=gzip.compress(text), headers={"Content-Encoding": "gzip"})

    async with serve(forbidden) as base:
        report = await scrape(make_target(base + "/metrics"))
    assert isinstance(report.error, HTTPStatusError) and report.error.status == 403
    assert "subresource=metrics" in str(report.error)


class ChunkedStream:
    """A response body stream handing out fixed-size chunks (what ``inflate_limited`` reads)."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    async def iter_chunked(self, n: int) -> AsyncIterator[bytes]:
        for i in range(0, len(self._data), n):
            yield self._data[i : i + n]


async def inflate(data: bytes, limit: int = 0) -> bytes:
    return await inflate_limited(ChunkedStream(data), limit, "https://node:10250/metrics")  # type: ignore[arg-type]


async def test_a_whole_gzip_body_is_inflated_into_one_allocation() -> None:
    text = b"".join(b'container_memory_rss{id="/pod%d"} %d\n' % (i, i * 7) for i in range(200_000))
    compressed = gzip.compress(text, 6)
    tracemalloc.start()
    try:
        body = await inflate(compressed, limit=len(text))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert body == text
    # The compressed bytes (read chunks and their join) and the body once: no inflated parts to join.
    assert peak < 2 * len(compressed) + len(text) + (1 << 20)


async def test_concatenated_gzip_members_are_read_in_a_row() -> None:
    first, second = b"up 1\n" * 5000, b'kubelet_running_pods{node="a"} 3\n' * 5000
    assert await inflate(gzip.compress(first) + gzip.compress(second)) == first + second


async def test_a_trailer_announcing_the_wrong_size_is_refused() -> None:
    good = gzip.compress(b"up 1\n" * 10_000)
    for size in (49_999, 50_001, 1):
        bad = good[:-4] + size.to_bytes(4, "little")
        with pytest.raises(ScrapeError) as caught:
            await inflate(bad)
        assert caught.value.reason == "gzip"


async def test_a_long_gzip_header_still_fits_a_body_within_the_limit() -> None:
    text = b"up 1\n" * 1000
    plain = gzip.compress(text)
    # FNAME flag with a 100 KiB file name: the compressed body is larger than the inflated one.
    named = plain[:3] + bytes([plain[3] | 0x08]) + plain[4:10] + b"n" * (100 << 10) + b"\0" + plain[10:]
    assert await inflate(named, limit=len(text)) == text
    with pytest.raises(BodyTooLargeError):
        await inflate(named, limit=len(text) - 1)


async def test_an_incompressible_body_over_the_limit_fails_while_it_is_read() -> None:
    noise = os.urandom(4 << 20)
    compressed = gzip.compress(noise, 0)  # stored blocks: larger than the input
    with pytest.raises(BodyTooLargeError, match="body_size_limit = 1048576"):
        await inflate(compressed, limit=1 << 20)
    assert await inflate(compressed, limit=len(noise)) == noise
