"""An embedded Prometheus remote-write receiver, for the demo (when no Prometheus is installed) and tests.

It accepts ``POST /api/v1/write`` and ``/prometheus/v1/write`` with a snappy-compressed protobuf
``WriteRequest``, answers 204 on success and 400 with a message that says what is wrong on anything
else, and keeps, per series, the number of samples and the last value in memory (a bounded number of
series; samples of series beyond the bound are counted, not stored).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import cramjam
from aiohttp import web
from google.protobuf.message import DecodeError

from kubescrape.remote_write.encode import decode_write_request, decompress

__all__ = ["WRITE_PATHS", "Receiver", "ReceiverStats"]

WRITE_PATHS = ("/api/v1/write", "/prometheus/v1/write")

SeriesKey = tuple[tuple[str, str], ...]


@dataclass
class ReceiverStats:
    """Counters since start. ``bytes`` counts compressed request bodies of accepted requests."""

    requests: int = 0
    samples: int = 0
    series: int = 0
    errors: int = 0
    bytes: int = 0
    series_dropped: int = 0


@dataclass
class _Series:
    samples: int
    last_value: float
    last_timestamp_ms: int


def _key(name: str, labels: Mapping[str, str] | Iterable[tuple[str, str]]) -> SeriesKey:
    pairs = dict(labels.items() if isinstance(labels, Mapping) else labels)
    pairs["__name__"] = name
    return tuple(sorted((k, v) for k, v in pairs.items() if v))


class Receiver:
    """Remote-write endpoint on loopback. ``await start()`` returns the write URL."""

    def __init__(self, *, max_series: int = 100_000, max_body_bytes: int = 64 << 20) -> None:
        self.stats = ReceiverStats()
        self.last_error = ""
        self._max_series = max_series
        self._max_body = max_body_bytes
        self._series: dict[SeriesKey, _Series] = {}
        self._runner: web.AppRunner | None = None
        self._received = asyncio.Event()
        self.url = ""

    def make_app(self) -> web.Application:
        """The aiohttp application (routes for both write paths)."""
        app = web.Application(client_max_size=self._max_body)
        for path in WRITE_PATHS:
            app.router.add_post(path, self._handle_write)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on ``host:port`` (0 picks a free port); return ``http://host:port/api/v1/write``."""
        if self._runner is not None:
            return self.url
        runner = web.AppRunner(self.make_app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        bound_host, bound_port = runner.addresses[0][:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        self.url = f"http://{shown}:{bound_port}{WRITE_PATHS[0]}"
        return self.url

    async def stop(self) -> None:
        """Stop listening; stored series and stats stay readable."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> Receiver:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def series_count(self) -> int:
        """Number of distinct series stored."""
        return len(self._series)

    def last_value(
        self, name: str, labels: Mapping[str, str] | Iterable[tuple[str, str]] = ()
    ) -> float | None:
        """Last value received for the series ``name{labels}`` (all its labels), or ``None``."""
        series = self._series.get(_key(name, labels))
        return series.last_value if series else None

    def sample_count(self, name: str, labels: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> int:
        """Samples received for the series ``name{labels}``."""
        series = self._series.get(_key(name, labels))
        return series.samples if series else 0

    def series(self) -> list[dict[str, str]]:
        """Label sets of every stored series (``__name__`` included)."""
        return [dict(key) for key in self._series]

    async def wait_for_samples(self, count: int, timeout: float = 5.0) -> bool:
        """Wait until at least ``count`` samples were accepted in total; ``False`` on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.stats.samples < count:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self._received.clear()
            try:
                await asyncio.wait_for(self._received.wait(), remaining)
            except TimeoutError:
                return self.stats.samples >= count
        return True

    def _reject(self, message: str) -> web.Response:
        self.stats.errors += 1
        self.last_error = message
        return web.Response(status=400, text=message + "\n")

    async def _handle_write(self, request: web.Request) -> web.Response:
        self.stats.requests += 1
        encoding = request.headers.get("Content-Encoding", "")
        if encoding.lower() != "snappy":
            return self._reject(
                f"unsupported Content-Encoding {encoding!r}: remote write 1.0 bodies are snappy "
                "block-compressed protobuf; send Content-Encoding: snappy"
            )
        content_type = request.headers.get("Content-Type", "")
        if content_type and content_type.split(";")[0].strip().lower() != "application/x-protobuf":
            return self._reject(
                f"unsupported Content-Type {content_type!r}: send Content-Type: application/x-protobuf"
            )
        version = request.headers.get("X-Prometheus-Remote-Write-Version", "")
        if version and not version.startswith("0.1"):
            return self._reject(
                f"unsupported X-Prometheus-Remote-Write-Version {version!r}: this receiver speaks 0.1.0 "
                "(remote write 1.0)"
            )
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            self.stats.errors += 1
            self.last_error = "request body too large"
            raise
        try:
            raw = decompress(body)
        except cramjam.DecompressionError as exc:
            return self._reject(f"body is not snappy block-compressed (framed snappy is not accepted): {exc}")
        try:
            timeseries = decode_write_request(raw)
        except DecodeError as exc:
            return self._reject(f"body is not a protobuf WriteRequest: {exc}")
        for labels, _ in timeseries:
            if not labels.get("__name__"):
                return self._reject(f"series {labels} has no __name__ label")
        self._store(timeseries)
        self.stats.bytes += len(body)
        self._received.set()
        return web.Response(status=204)

    def _store(self, timeseries: list[tuple[dict[str, str], list[tuple[float, int]]]]) -> None:
        series_map = self._series
        for labels, samples in timeseries:
            if not samples:
                continue
            self.stats.samples += len(samples)
            key = tuple(sorted(labels.items()))
            entry = series_map.get(key)
            value, timestamp = samples[-1]
            if entry is None:
                if len(series_map) >= self._max_series:
                    self.stats.series_dropped += 1
                    continue
                series_map[key] = _Series(len(samples), value, timestamp)
                self.stats.series = len(series_map)
            else:
                entry.samples += len(samples)
                entry.last_value = value
                entry.last_timestamp_ms = timestamp
