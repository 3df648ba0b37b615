"""The remote-write POST path without aiohttp: kept-alive connections, the answers it reads itself, and
what it leaves to aiohttp (a redirect, a connection that ends before the answer)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvloop
from aiohttp import web

from kubescrape.emulator.pki import server_ssl_context
from kubescrape.errors import RemoteWriteError
from kubescrape.remote_write.post import MAX_ANSWER_BYTES, Poster
from kubescrape.remote_write.queue import WriterSettings
from kubescrape.remote_write.sender import Sender
from kubescrape.selfmon import SelfMetrics
from tests.e2e.helpers import TLSFiles
from tests.remote_write.receiver import Receiver, chunk_bytes, running_receiver

HEADERS = {"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy"}


@dataclass
class RawServer:
    """A loopback server that answers each request with the next scripted raw bytes (then closes the
    connection when the entry says so); records each request's head and body."""

    script: list[tuple[bytes, bool]]
    requests: list[tuple[bytes, bytes]] = field(default_factory=list)
    connections: int = 0
    url: str = ""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                self.requests.append((head, await reader.readexactly(length)))
                if not self.script:
                    await asyncio.sleep(3600)  # never answers
                answer, close = self.script.pop(0)
                writer.write(answer)
                await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def raw_server(script: list[tuple[bytes, bool]]) -> AsyncIterator[RawServer]:
    srv = RawServer(script)
    server = await asyncio.start_server(srv.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    srv.url = f"http://127.0.0.1:{port}/api/v1/write?tenant=a"
    try:
        yield srv
    finally:
        server.close()


def poster(url: str, timeout: float = 5.0) -> Poster:
    return Poster(url, HEADERS, ssl_context=None, server_name=None, timeout=timeout, dial_timeout=2.0,
                  max_idle=2)


async def test_requests_share_one_kept_alive_connection() -> None:
    m = SelfMetrics()
    async with running_receiver() as rec:
        s = Sender(WriterSettings(url=rec.url, name="w"), metrics=m)
        for i in range(5):
            assert (await s.deliver(chunk_bytes("up", [(1.0, 1000 + i)], job="k"), 1)).accepted
        assert s._poster is not None and s._poster.connections == 1
        await s.close()
    assert [ts for _, _, ts in rec.samples()] == [1000, 1001, 1002, 1003, 1004]
    assert rec.requests == 5


async def test_request_line_headers_and_body_as_sent() -> None:
    async with raw_server([(b"HTTP/1.1 204 No Content\r\n\r\n", False)]) as srv:
        p = poster(srv.url)
        answer = await p.post(b"\x00body\xff")
        p.close()
    assert answer is not None and answer.status == 204 and answer.body == b""
    head, body = srv.requests[0]
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /api/v1/write?tenant=a HTTP/1.1"
    assert f"Host: 127.0.0.1:{srv.url.split(':')[2].split('/')[0]}".encode() in lines
    assert b"Content-Encoding: snappy" in lines and b"Content-Length: 6" in lines
    assert body == b"\x00body\xff"


async def test_a_configured_host_header_is_sent_instead_of_the_urls() -> None:
    async with raw_server([(b"HTTP/1.1 204 No Content\r\n\r\n", False)]) as srv:
        p = Poster(srv.url, {**HEADERS, "host": "metrics.example"}, ssl_context=None, server_name=None,
                   timeout=5.0, dial_timeout=2.0, max_idle=1)
        assert await p.post(b"x") is not None
        p.close()
    lines = srv.requests[0][0].split(b"\r\n")
    assert [line for line in lines if line.lower().startswith(b"host:")] == [b"Host: metrics.example"]


@pytest.mark.parametrize(("raw", "body", "reused"), [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", b"hello", True),
    (b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"6;ext=1\r\nout of\r\n7\r\n bounds\r\n0\r\nX-Trailer: t\r\n\r\n", b"out of bounds", True),
    (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n", b"", True),
    (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", b"ok", False),
])
async def test_answers_by_length_chunked_interim_and_connection_close(raw: bytes, body: bytes,
                                                                       reused: bool) -> None:
    async with raw_server([(raw, False), (raw, False)]) as srv:
        p = poster(srv.url)
        first = await p.post(b"a")
        second = await p.post(b"b")
        p.close()
    assert first is not None and second is not None
    assert first.body == second.body == body
    assert srv.connections == (1 if reused else 2)


async def test_an_answer_delimited_by_the_end_of_the_connection() -> None:
    async with raw_server([(b"HTTP/1.0 503 Service Unavailable\r\nRetry-After: 7\r\n\r\nbusy", True)]) as srv:
        p = poster(srv.url)
        answer = await p.post(b"a")
        p.close()
    assert answer is not None and answer.status == 503 and answer.body == b"busy"
    assert answer.headers["retry-after"] == "7"


async def test_a_connection_closed_before_the_answer_or_a_huge_answer_is_left_to_the_caller() -> None:
    huge = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (MAX_ANSWER_BYTES + 1)
    async with raw_server([(b"", True), (huge, True)]) as srv:
        p = poster(srv.url)
        assert await p.post(b"a") is None
        assert await p.post(b"b") is None
        p.close()


async def test_no_answer_within_the_timeout_raises_timeout_error() -> None:
    async with raw_server([]) as srv:
        p = poster(srv.url, timeout=0.2)
        with pytest.raises(TimeoutError):
            await p.post(b"a")
        p.close()


async def test_sender_recovers_when_the_backend_closes_an_idle_connection() -> None:
    """The backend answers and closes (keep-alive off): the next send still gets through."""
    ok = b"HTTP/1.1 204 No Content\r\n\r\n"
    async with raw_server([(ok, True), (ok, True), (ok, True)]) as srv:
        s = Sender(WriterSettings(url=srv.url, name="w"), metrics=SelfMetrics())
        for _ in range(3):
            await s.send_once(b"x", 1)
            await asyncio.sleep(0.05)  # the close reaches the client while the connection is idle
        await s.close()
    assert len(srv.requests) == 3


async def test_sender_error_from_an_answer_read_without_aiohttp() -> None:
    raw = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 29\r\n\r\nout of order sample\nsecond line"
    async with raw_server([(raw, False)]) as srv:
        s = Sender(WriterSettings(url=srv.url, name="w"), metrics=SelfMetrics())
        with pytest.raises(RemoteWriteError) as ei:
            await s.send_once(b"x", 1)
        await s.close()
    assert ei.value.status == 400 and not ei.value.retryable
    assert "out of order sample" in str(ei.value) and "second line" not in str(ei.value)
    assert len(srv.requests) == 1, "answered without aiohttp: sent once"


async def test_a_redirect_is_followed_by_aiohttp() -> None:
    redirect = (307, {"Location": "/api/v1/write"}, "")
    rec = Receiver(script=[redirect, redirect])
    async with running_receiver(rec):
        s = Sender(WriterSettings(url=rec.url, name="w"), metrics=SelfMetrics())
        assert (await s.deliver(chunk_bytes("up", [(1.0, 5)]), 1)).accepted
        await s.close()
    assert rec.requests == 3 and rec.samples() == [("__name__=up", 1.0, 5)]


@asynccontextmanager
async def tls_receiver(tls: TLSFiles) -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/api/v1/write", rec.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ssl_context(tls.server))
    await site.start()
    rec.url = f"https://127.0.0.1:{runner.addresses[0][1]}/api/v1/write"
    try:
        yield rec
    finally:
        await runner.cleanup()


async def test_https_writer_verifies_the_backend_and_keeps_the_connection(tmp_path: Path) -> None:
    tls = TLSFiles.create(tmp_path / "tls")
    other = TLSFiles.create(tmp_path / "other")
    async with tls_receiver(tls) as rec:
        s = Sender(WriterSettings(url=rec.url, name="w", ca_file=str(tls.ca_file)), metrics=SelfMetrics())
        for i in range(3):
            assert (await s.deliver(chunk_bytes("up", [(1.0, i)]), 1)).accepted
        assert s._poster is not None and s._poster.connections == 1
        await s.close()
        wrong = Sender(WriterSettings(url=rec.url, name="w", ca_file=str(other.ca_file)),
                       metrics=SelfMetrics())
        with pytest.raises(RemoteWriteError) as ei:
            await wrong.send_once(b"x", 1)
        await wrong.close()
    assert [ts for _, _, ts in rec.samples()] == [0, 1, 2]
    assert ei.value.retryable and "certificate" in str(ei.value).lower()


@pytest.mark.parametrize("scenario", [
    test_requests_share_one_kept_alive_connection,
    test_an_answer_delimited_by_the_end_of_the_connection,
    test_a_connection_closed_before_the_answer_or_a_huge_answer_is_left_to_the_caller,
    test_sender_recovers_when_the_backend_closes_an_idle_connection,
    test_sender_error_from_an_answer_read_without_aiohttp,
    test_a_redirect_is_followed_by_aiohttp,
])
def test_the_same_on_uvloop_as_the_agent_runs(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """The agent runs on uvloop, whose transports and errors differ from asyncio's own."""
    uvloop.run(scenario())


def test_https_on_uvloop(tmp_path: Path) -> None:
    uvloop.run(test_https_writer_verifies_the_backend_and_keeps_the_connection(tmp_path))


def test_answers_on_uvloop() -> None:
    raw = (b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"6;ext=1\r\nout of\r\n7\r\n bounds\r\n0\r\nX-Trailer: t\r\n\r\n")
    uvloop.run(test_answers_by_length_chunked_interim_and_connection_close(raw, b"out of bounds", True))


async def test_a_dial_that_hangs_waits_once_and_is_reported_as_a_connect_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A black-holed backend (SYNs dropped): the dial never completes. Faked at the loop, as no loopback
    # address drops SYNs reliably; the real connect path is the one the other tests use.
    dials = 0

    async def hang(*args: Any, **kwargs: Any) -> Any:
        nonlocal dials
        dials += 1
        await asyncio.sleep(3600)

    monkeypatch.setattr(asyncio.get_running_loop(), "create_connection", hang)
    s = Sender(WriterSettings(url="http://127.0.0.1:9/api/v1/write", name="w", dial_timeout=0.05,
                              timeout=30.0), metrics=SelfMetrics())
    with pytest.raises(RemoteWriteError) as ei:
        await s.send_once(b"x", 1)
    await s.close()
    assert dials == 1
    # The request was not sent again through aiohttp (which would have found port 9 closed: "refused").
    assert ei.value.retryable
    assert "connecting to 127.0.0.1:9 timed out" in str(ei.value)
    assert ei.value.fix is not None and "firewall" in ei.value.fix
