"""One emulated node: the kubelet's secure port (authn → authz → handler), healthz and kube-proxy.

The secure port answers like the kubelet's Go server:

* a TLS ClientHello is served over TLS (client certificates optional, verified against the CA);
* plain HTTP gets Go's ``HTTP/1.0 400 Bad Request`` / ``Client sent an HTTP request to an HTTPS
  server.`` (net/http does this when the first 5 bytes look like ``GET /``, ``HEAD ``, ``POST ``,
  ``PUT /`` or ``OPTIO``); anything else is dropped, like Go's "first record does not look like a
  TLS handshake"; like Go, the first 512 bytes are read before answering, so a small request gets
  the 400 and a clean close, not a reset;
* every request under the kubelet's API roots is authenticated (401 ``Unauthorized``), authorized
  (403 ``Forbidden (…)`` for the emulated version) and only then routed (404 for unknown paths).

Rendered payloads are cached for ``cache_ttl`` seconds so that several scrapers of one node (or a
scrape of ``/metrics`` and ``/metrics/cadvisor`` at the same instant) share one rendering.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
import socket
import ssl
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from aiohttp import web

from kubescrape.clock import SYSTEM_CLOCK, Clock
from kubescrape.emulator.authn import TEXT_PLAIN, UNAUTHORIZED_BODY, Authenticator
from kubescrape.emulator.authz import KubeletVersion, RBACAuthorizer, forbidden_body, request_attributes
from kubescrape.errors import EmulatorError

log = logging.getLogger(__name__)

GO_PLAIN_HTTP_RESPONSE = b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"
_GO_HTTP_PREFIXES = (b"GET /", b"HEAD ", b"POST ", b"PUT /", b"OPTIO")
_TLS_HANDSHAKE = 0x16
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
JSON_CONTENT_TYPE = "application/json"
# Go's http.NotFound for a path no handler owns; go-restful's own 404 for a path under a web service.
GO_NOT_FOUND = b"404 page not found\n"
RESTFUL_NOT_FOUND = b"404: Page Not Found"
# Roots the kubelet registers (web services and handlers); requests under them pass the auth filter.
KUBELET_ROOTS = (
    "/healthz", "/pods", "/stats", "/metrics", "/spec", "/logs", "/run", "/exec", "/attach",
    "/portForward", "/containerLogs", "/runningpods", "/debug", "/configz", "/checkpoint", "/cri",
)
_SNIFF_TIMEOUT = 10.0
# crypto/tls reads the record header through a bytes.Buffer, whose ReadFrom reads at least 512 bytes.
_GO_FIRST_READ = 512

__all__ = [
    "GO_PLAIN_HTTP_RESPONSE",
    "NodePayloadsLike",
    "NodeServer",
    "NodeSpec",
    "ServeStats",
    "SniffingTLSListener",
]


class NodePayloadsLike(Protocol):
    """What the node server needs from :class:`kubescrape.emulator.payloads.NodePayloads`."""

    def metrics(self) -> bytes: ...
    def cadvisor(self) -> bytes: ...
    def resource(self) -> bytes: ...
    def probes(self) -> bytes: ...
    def kube_proxy_metrics(self) -> bytes: ...
    def stats_summary(self) -> bytes: ...
    def pods_json(self) -> bytes: ...
    def configz(self) -> bytes: ...


@dataclass
class NodeSpec:
    """Identity and addresses of one emulated node."""

    index: int
    name: str
    address: str
    port: int
    healthz_port: int | None = None  # None = off, 0 = any free port
    proxy_port: int | None = None

    @property
    def url(self) -> str:
        """Base URL of the secure port."""
        return f"https://{self.address}:{self.port}"


@dataclass
class ServeStats:
    """Requests answered, by status, and body bytes sent (for the benchmark and the demo)."""

    by_status: Counter[int] = field(default_factory=Counter)
    body_bytes: int = 0
    plain_http_rejected: int = 0
    renders: int = 0

    @property
    def requests(self) -> int:
        return sum(self.by_status.values())


class SniffingTLSListener:
    """A listening socket that peeks at each new connection before deciding how to speak to it.

    The peek uses ``MSG_PEEK`` so that the ClientHello is still in the socket when the connection
    is handed to asyncio's TLS transport (``connect_accepted_socket``), which works the same on the
    default event loop and on uvloop.
    """

    def __init__(self, host: str, port: int, ssl_context: ssl.SSLContext,
                 protocol_factory: Callable[[], asyncio.Protocol], stats: ServeStats) -> None:
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.protocol_factory = protocol_factory
        self.stats = stats
        self._sock: socket.socket | None = None
        self._accept_task: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as e:
            sock.close()
            raise EmulatorError(f"cannot listen on {self.host}:{self.port}: {e.strerror}",
                                "pick another --port (or --address), or stop what is using it") from e
        sock.listen(1024)
        sock.setblocking(False)
        self._sock = sock
        self.port = sock.getsockname()[1]
        self._accept_task = asyncio.create_task(self._accept_loop(), name=f"accept {self.host}:{self.port}")

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._sock is not None
        while True:
            try:
                conn, _ = await loop.sock_accept(self._sock)
            except OSError as e:
                log.warning("accept on %s:%s failed: %s", self.host, self.port, e)
                await asyncio.sleep(0.05)
                continue
            conn.setblocking(False)
            task = asyncio.create_task(self._serve(conn))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    @staticmethod
    async def _readable(conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()

        def ready() -> None:
            if not fut.done():
                fut.set_result(None)

        loop.add_reader(conn.fileno(), ready)
        try:
            await fut
        finally:
            loop.remove_reader(conn.fileno())

    async def _peek(self, conn: socket.socket) -> bytes:
        """The first (up to) 5 bytes, left in the socket; fewer only at EOF."""
        while True:
            await self._readable(conn)
            head = conn.recv(5, socket.MSG_PEEK)
            if not head or head[0] == _TLS_HANDSHAKE or len(head) >= 5:
                return head
            await asyncio.sleep(0.005)  # a partial header: wait for the rest without spinning

    async def _serve(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        try:
            head = await asyncio.wait_for(self._peek(conn), _SNIFF_TIMEOUT)
        except (TimeoutError, OSError):
            conn.close()
            return
        if head[:1] == bytes([_TLS_HANDSHAKE]):
            try:
                await loop.connect_accepted_socket(self.protocol_factory, conn, ssl=self.ssl_context,
                                                   ssl_handshake_timeout=_SNIFF_TIMEOUT)
            except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as e:
                log.debug("TLS handshake from a client failed: %s", e)
                conn.close()
            return
        with contextlib.suppress(OSError):
            # Go's TLS record reader has already consumed one read() of up to 512 bytes — the whole of
            # a small request — when it answers. Read it too: closing a socket with unread data makes
            # Linux send RST, and the client would see "Connection reset by peer" instead of the 400.
            conn.recv(_GO_FIRST_READ)
            if head in _GO_HTTP_PREFIXES:
                self.stats.plain_http_rejected += 1
                conn.send(GO_PLAIN_HTTP_RESPONSE)
        conn.close()

    async def stop(self) -> None:
        if self._accept_task is not None:
            self._accept_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._accept_task
        for task in list(self._pending):
            task.cancel()
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _spec_json(spec: NodeSpec, pods: int) -> bytes:
    """A cAdvisor MachineInfo-shaped answer for ``/spec/``."""
    cores = 8 if pods <= 60 else 16
    return json.dumps({
        "num_cores": cores,
        "num_physical_cores": cores // 2,
        "num_sockets": 1,
        "cpu_frequency_khz": 2_600_000,
        "memory_capacity": cores * 4 * 1024 ** 3,
        "machine_id": f"{spec.index:032x}",
        "system_uuid": f"ec2{spec.index:05x}-0000-0000-0000-000000000000",
        "boot_id": f"{spec.index:08x}-b007-4000-8000-000000000000",
        "filesystems": [{"device": "/dev/nvme0n1p1", "capacity": 107_361_579_008, "type": "vfs",
                         "inodes": 52_428_800, "has_inodes": True}],
        "cloud_provider": "Unknown",
        "instance_type": "Unknown",
    }).encode()


class _CachedPayload:
    __slots__ = ("at", "body", "gz")

    def __init__(self, at: float, body: bytes) -> None:
        self.at = at
        self.body = body
        self.gz: bytes | None = None


class NodeServer:
    """The listeners of one node and the kubelet's request chain."""

    def __init__(self, spec: NodeSpec, *, ssl_context: ssl.SSLContext, authenticator: Authenticator,
                 authorizer: RBACAuthorizer, payloads: Callable[[], NodePayloadsLike],
                 version: KubeletVersion, fine_grained: bool | None = None, pods: int = 30,
                 clock: Clock = SYSTEM_CLOCK, cache_ttl: float = 1.0,
                 stats: ServeStats | None = None) -> None:
        self.spec = spec
        self.ssl_context = ssl_context
        self.authn = authenticator
        self.authz = authorizer
        self._payload_factory = payloads
        self._payloads: NodePayloadsLike | None = None
        self.version = version
        self.fine_grained = version.fine_grained_default if fine_grained is None else fine_grained
        self.pods = pods
        self.clock = clock
        self.cache_ttl = cache_ttl
        self.stats = stats if stats is not None else ServeStats()
        self._cache: dict[str, _CachedPayload] = {}
        self._runners: list[web.AppRunner] = []
        self._listener: SniffingTLSListener | None = None
        self._routes: dict[str, tuple[Callable[[], bytes], str]] = {
            "/metrics": (lambda: self.payloads.metrics(), METRICS_CONTENT_TYPE),
            "/metrics/cadvisor": (lambda: self.payloads.cadvisor(), METRICS_CONTENT_TYPE),
            "/metrics/resource": (lambda: self.payloads.resource(), METRICS_CONTENT_TYPE),
            "/metrics/probes": (lambda: self.payloads.probes(), METRICS_CONTENT_TYPE),
            "/stats/summary": (lambda: self.payloads.stats_summary(), JSON_CONTENT_TYPE),
            "/pods": (lambda: self.payloads.pods_json(), JSON_CONTENT_TYPE),
            "/configz": (lambda: self.payloads.configz(), JSON_CONTENT_TYPE),
            "/spec": (lambda: _spec_json(self.spec, self.pods), JSON_CONTENT_TYPE),
            "/healthz": (lambda: b"ok", TEXT_PLAIN),
        }

    @property
    def payloads(self) -> NodePayloadsLike:
        # Created on first use: a fleet of hundreds of idle nodes costs almost nothing.
        if self._payloads is None:
            self._payloads = self._payload_factory()
        return self._payloads

    @property
    def url(self) -> str:
        return self.spec.url

    def _render(self, key: str, render: Callable[[], bytes]) -> _CachedPayload:
        now = self.clock.monotonic()
        hit = self._cache.get(key)
        if hit is not None and now - hit.at < self.cache_ttl:
            return hit
        entry = _CachedPayload(now, render())
        self.stats.renders += 1
        self._cache[key] = entry
        return entry

    def _respond(self, status: int, body: bytes, content_type: str, *, gz: bool = False) -> web.Response:
        self.stats.by_status[status] += 1
        self.stats.body_bytes += len(body)
        headers = {"Content-Type": content_type}
        if gz:
            headers["Content-Encoding"] = "gzip"
        return web.Response(status=status, body=body, headers=headers)

    def _serve_payload(self, request: web.Request, key: str, render: Callable[[], bytes],
                       content_type: str) -> web.Response:
        entry = self._render(key, render)
        if len(entry.body) > 1024 and "gzip" in request.headers.get("Accept-Encoding", ""):
            if entry.gz is None:
                entry.gz = gzip.compress(entry.body, compresslevel=1)
            return self._respond(200, entry.gz, content_type, gz=True)
        return self._respond(200, entry.body, content_type)

    async def handle_secure(self, request: web.Request) -> web.Response:
        """authn → authz → handler, as the kubelet's restful filter chain."""
        path = request.path
        if not any(path == r or path.startswith(r + "/") for r in KUBELET_ROOTS):
            return self._respond(404, GO_NOT_FOUND, TEXT_PLAIN)
        transport = request.transport
        peercert = transport.get_extra_info("peercert") if transport is not None else None
        user = self.authn.authenticate(peercert, request.headers.get("Authorization"))
        if user is None:
            return self._respond(401, UNAUTHORIZED_BODY, TEXT_PLAIN)
        attrs = request_attributes(user.name, user.groups, request.method, path, self.spec.name,
                                   fine_grained=self.fine_grained)
        if not self.authz.authorize(attrs):
            return self._respond(403, forbidden_body(attrs, self.version), TEXT_PLAIN)
        key = "/spec" if path == "/spec/" else ("/healthz" if path.startswith("/healthz/") else path)
        route = self._routes.get(key)
        if route is None or request.method not in ("GET", "HEAD"):
            return self._respond(404, RESTFUL_NOT_FOUND, TEXT_PLAIN)
        render, content_type = route
        return self._serve_payload(request, key, render, content_type)

    async def handle_healthz(self, request: web.Request) -> web.Response:
        if request.path != "/healthz":
            return self._respond(404, GO_NOT_FOUND, TEXT_PLAIN)
        return self._respond(200, b"ok", TEXT_PLAIN)

    async def handle_proxy(self, request: web.Request) -> web.Response:
        if request.path == "/metrics":
            return self._serve_payload(request, "kube-proxy", lambda: self.payloads.kube_proxy_metrics(),
                                       METRICS_CONTENT_TYPE)
        if request.path == "/healthz":
            return self._respond(200, b"ok", TEXT_PLAIN)
        return self._respond(404, GO_NOT_FOUND, TEXT_PLAIN)

    @staticmethod
    def _app(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        return app

    async def _http_site(self, handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
                         port: int) -> int:
        runner = web.AppRunner(self._app(handler), access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        self._runners.append(runner)
        site = web.TCPSite(runner, self.spec.address, port, reuse_address=True)
        try:
            await site.start()
        except OSError as e:
            raise EmulatorError(f"cannot listen on {self.spec.address}:{port}: {e.strerror}",
                                "pick other ports (--healthz-port/--proxy-port, 0 = off)") from e
        sockets = getattr(site._server, "sockets", None) or ()
        return int(sockets[0].getsockname()[1]) if sockets else port

    async def start(self) -> None:
        """Bind the secure port and, unless their port is None, the healthz and kube-proxy listeners."""
        runner = web.AppRunner(self._app(self.handle_secure), access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        self._runners.append(runner)
        assert runner.server is not None
        self._listener = SniffingTLSListener(self.spec.address, self.spec.port, self.ssl_context,
                                             runner.server, self.stats)
        try:
            await self._listener.start()
            self.spec.port = self._listener.port
            if self.spec.healthz_port is not None:
                self.spec.healthz_port = await self._http_site(self.handle_healthz, self.spec.healthz_port)
            if self.spec.proxy_port is not None:
                self.spec.proxy_port = await self._http_site(self.handle_proxy, self.spec.proxy_port)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        if self._listener is not None:
            await self._listener.stop()
            self._listener = None
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()
