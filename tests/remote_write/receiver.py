"""A scripted remote-write receiver on loopback for sender/queue tests (real aiohttp server)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web

from kubescrape.remote_write.encode import decode_write_request, decompress, encode_labels, encode_timeseries

Series = tuple[tuple[str, str], ...]


def chunk_bytes(name: str, values: list[tuple[float, int]], **labels: str) -> bytes:
    """Encoded timeseries fields, one sample each, for series ``name{labels}``."""
    lb = encode_labels([("__name__", name), *labels.items()])
    return b"".join(encode_timeseries(lb, v, ts) for v, ts in values)


@dataclass
class Receiver:
    """Answers from ``script`` (status, headers, body) in order, then 200; records accepted requests."""

    script: list[tuple[int, dict[str, str], str]] = field(default_factory=list)
    accepted: list[list[tuple[dict[str, str], list[tuple[float, int]]]]] = field(default_factory=list)
    requests: int = 0
    headers: list[dict[str, str]] = field(default_factory=list)
    delay: float = 0.0
    url: str = ""

    def samples(self) -> list[tuple[str, float, int]]:
        """Accepted samples as (series text, value, ts) in arrival order."""
        out: list[tuple[str, float, int]] = []
        for req in self.accepted:
            for labels, samples in req:
                key = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
                out.extend((key, v, ts) for v, ts in samples)
        return out

    async def handle(self, request: web.Request) -> web.Response:
        import asyncio

        self.requests += 1
        self.headers.append(dict(request.headers))
        body = await request.read()
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.script:
            status, headers, text = self.script.pop(0)
            if status >= 300:
                return web.Response(status=status, headers=headers, text=text)
        self.accepted.append(decode_write_request(decompress(body)))
        return web.Response(status=204)


@asynccontextmanager
async def running_receiver(receiver: Receiver | None = None) -> AsyncIterator[Receiver]:
    rec = receiver or Receiver()
    app = web.Application()
    app.router.add_post("/api/v1/write", rec.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    rec.url = f"http://127.0.0.1:{port}/api/v1/write"
    try:
        yield rec
    finally:
        await runner.cleanup()
