"""A fault-injecting HTTP proxy for remote-write tests: answers from a script of faults (an error status,
optionally with ``Retry-After``, or a delay) and forwards everything else to the real receiver."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web


@dataclass(frozen=True)
class Fault:
    """One scripted answer: ``status`` (None = forward upstream) after ``delay`` seconds."""

    status: int | None = None
    retry_after: str | None = None
    delay: float = 0.0


@dataclass
class FaultProxy:
    """Proxy on 127.0.0.1; ``faults`` are consumed one per request, then everything is forwarded."""

    upstream: str
    faults: list[Fault] = field(default_factory=list)
    # (monotonic arrival time, status answered) per request
    log: list[tuple[float, int]] = field(default_factory=list)
    url: str = ""
    _runner: web.AppRunner | None = None
    _session: aiohttp.ClientSession | None = None

    async def handle(self, request: web.Request) -> web.Response:
        import asyncio

        arrived = time.monotonic()
        body = await request.read()
        fault = self.faults.pop(0) if self.faults else Fault()
        if fault.delay:
            await asyncio.sleep(fault.delay)
        if fault.status is not None:
            headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
            self.log.append((arrived, fault.status))
            return web.Response(status=fault.status, headers=headers, text=f"injected {fault.status}\n")
        assert self._session is not None
        fwd = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with self._session.post(self.upstream, data=body, headers=fwd) as resp:
            text = await resp.read()
            self.log.append((arrived, resp.status))
            return web.Response(status=resp.status, body=text)

    async def start(self) -> str:
        self._session = aiohttp.ClientSession()
        app = web.Application()
        app.router.add_post("/api/v1/write", self.handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/api/v1/write"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()
