"""Metrics endpoints of the emulated application pods that ask to be scraped.

A pod annotated ``prometheus.io/scrape: "true"`` (with ``prometheus.io/port`` and ``…/path``) has a
loopback pod IP (see :func:`kubescrape.emulator.payloads_pods.app_pod_ip`), and here a real HTTP
listener on ``podIP:port`` answers its path with a small application registry whose counters grow
with the clock. :meth:`AppServers.sync` follows pod churn: listeners of pods that went away close,
those of new pods open. One aiohttp server serves every listener; the pod is found by the local
address the request arrived on.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from aiohttp import web

from kubescrape.clock import SYSTEM_CLOCK, Clock
from kubescrape.emulator.apistore import Json

log = logging.getLogger(__name__)

__all__ = ["AppEndpoint", "AppServers", "app_endpoints"]

_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class AppEndpoint:
    """One annotated pod's metrics endpoint."""

    ip: str
    port: int
    path: str
    namespace: str
    pod: str
    app: str
    uid: str


def app_endpoints(pods: Iterable[Json]) -> list[AppEndpoint]:
    """The endpoints of pods annotated for scraping whose IP is on loopback."""
    out = []
    for p in pods:
        meta = p["metadata"]
        ann = meta.get("annotations") or {}
        ip = p.get("status", {}).get("podIP", "")
        if ann.get("prometheus.io/scrape") != "true" or not ip.startswith("127."):
            continue
        try:
            port = int(ann.get("prometheus.io/port", ""))
        except ValueError:
            continue
        out.append(AppEndpoint(ip, port, ann.get("prometheus.io/path", "/metrics"), meta["namespace"],
                               meta["name"], (meta.get("labels") or {}).get("app.kubernetes.io/name", ""),
                               meta["uid"]))
    return out


def app_metrics(ep: AppEndpoint, now: float, started: float) -> bytes:
    """A small application registry: request counters, a latency histogram, build info."""
    seed = int(hashlib.sha256(ep.uid.encode()).hexdigest()[:8], 16)
    rate = 1.0 + seed % 50
    up = max(0.0, now - started)
    ok = int(rate * up)
    err = int(rate * up / 97)
    lines = [
        "# HELP http_requests_total Requests served, by status code.",
        "# TYPE http_requests_total counter",
        f'http_requests_total{{code="200",handler="/"}} {ok}',
        f'http_requests_total{{code="500",handler="/"}} {err}',
        "# HELP http_request_duration_seconds Request latency.",
        "# TYPE http_request_duration_seconds histogram",
    ]
    cum = 0
    for le, share in (("0.005", 0.4), ("0.05", 0.4), ("0.5", 0.15), ("+Inf", 0.05)):
        cum += int(ok * share)
        lines.append(f'http_request_duration_seconds_bucket{{le="{le}"}} {cum}')
    lines += [
        f"http_request_duration_seconds_sum {ok * 0.021:.3f}",
        f"http_request_duration_seconds_count {cum}",
        "# HELP app_build_info Build information.",
        "# TYPE app_build_info gauge",
        f'app_build_info{{app="{ep.app}",version="1.{seed % 9}.{seed % 31}"}} 1',
        "# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.",
        "# TYPE process_start_time_seconds gauge",
        f"process_start_time_seconds {started:.2f}",
    ]
    return ("\n".join(lines) + "\n").encode()


class AppServers:
    """Listeners for the annotated pods' metrics endpoints, kept in step with the pods."""

    def __init__(self, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.clock = clock
        self._by_addr: dict[tuple[str, int], tuple[AppEndpoint, float]] = {}
        self._servers: dict[tuple[str, int], asyncio.AbstractServer] = {}
        self._runner: web.AppRunner | None = None
        self.requests = 0

    async def start(self) -> None:
        """Prepare the shared HTTP server (listeners come with :meth:`sync`)."""
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()

    @property
    def endpoints(self) -> list[AppEndpoint]:
        """The endpoints being served."""
        return [ep for (ep, _) in self._by_addr.values()]

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        sock = request.transport.get_extra_info("sockname") if request.transport is not None else None
        entry = self._by_addr.get((sock[0], sock[1])) if sock else None
        if entry is None:
            # The pod is gone but a kept-alive connection outlived its listener: drop it, as a dead pod would.
            if request.transport is not None:
                request.transport.abort()
            raise ConnectionResetError("the pod is gone")
        if request.path != entry[0].path:
            return web.Response(status=404, text="404 page not found\n")
        ep, started = entry
        return web.Response(body=app_metrics(ep, self.clock.time(), started),
                            headers={"Content-Type": _CONTENT_TYPE})

    async def sync(self, endpoints: Iterable[AppEndpoint]) -> None:
        """Open listeners for new endpoints, close those of pods that are gone."""
        assert self._runner is not None and self._runner.server is not None
        wanted = {(ep.ip, ep.port): ep for ep in endpoints}
        for addr in [a for a in self._servers if a not in wanted or wanted[a] != self._by_addr[a][0]]:
            server = self._servers.pop(addr)
            self._by_addr.pop(addr, None)
            server.close()
        loop = asyncio.get_running_loop()
        for addr, ep in wanted.items():
            if addr in self._servers:
                continue
            try:
                server = await loop.create_server(self._runner.server, ep.ip, ep.port, reuse_address=True)
            except OSError as e:
                log.warning("cannot serve the metrics of pod %s/%s on %s:%s: %s", ep.namespace, ep.pod,
                            ep.ip, ep.port, e)
                continue
            self._servers[addr] = server
            self._by_addr[addr] = (ep, self.clock.time())

    async def stop(self) -> None:
        """Close every listener."""
        for server in self._servers.values():
            server.close()
        self._servers.clear()
        self._by_addr.clear()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
