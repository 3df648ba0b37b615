"""An embedded Prometheus remote-write receiver: ``kubescrape receive``, the demo's receiver when no
Prometheus is installed, and the tests'.

It accepts ``POST /api/v1/write`` and ``/prometheus/v1/write`` with a snappy-compressed protobuf
``WriteRequest``, answers 204 on success and 400 with a message that says what is wrong on anything
else, and keeps, per series, the number of samples and the last value in memory (a bounded number of
series; samples of series beyond the bound are counted, not stored).

Read back what arrived with ``GET /series`` (JSON: every stored series with its labels, sample count and
last value; ``?name=METRIC`` keeps one metric) and ``GET /`` (one line of totals).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TextIO

import cramjam
from aiohttp import web
from google.protobuf.message import DecodeError

from kubescrape.remote_write.encode import decode_write_request, decompress

__all__ = ["DEFAULT_LISTEN", "DEFAULT_WRITE_URL", "WRITE_PATHS", "Receiver", "ReceiverStats", "run_command"]

WRITE_PATHS = ("/api/v1/write", "/prometheus/v1/write")
QUERY_PATH = "/series"
# Where ``kubescrape receive`` listens by default, and so where ``emulate --write-config`` points the agent.
DEFAULT_LISTEN = "127.0.0.1:9201"
DEFAULT_WRITE_URL = f"http://{DEFAULT_LISTEN}{WRITE_PATHS[0]}"

SeriesKey = tuple[tuple[str, str], ...]
TimeSeries = list[tuple[dict[str, str], list[tuple[float, int]]]]


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

    def __init__(self, *, max_series: int = 100_000, max_body_bytes: int = 64 << 20,
                 on_write: Callable[[TimeSeries], None] | None = None) -> None:
        """``on_write`` is called with the decoded series of every accepted request (``--print``)."""
        self.stats = ReceiverStats()
        self._on_write = on_write
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
        app.router.add_get(QUERY_PATH, self._handle_series)
        app.router.add_get("/", self._handle_summary)
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

    def summary(self) -> str:
        """One line of totals since start."""
        st = self.stats
        line = (f"{st.samples:,} samples in {st.requests:,} requests, {len(self._series):,} series, "
                f"{st.errors:,} rejected")
        if st.series_dropped:
            line += f", {st.series_dropped:,} new series beyond --max-series not stored"
        if self.last_error:
            line += f" (last rejection: {self.last_error})"
        return line

    async def _handle_summary(self, request: web.Request) -> web.Response:
        return web.Response(text=self.summary() + "\n")

    async def _handle_series(self, request: web.Request) -> web.Response:
        name = request.query.get("name")
        rows: list[dict[str, object]] = []
        for key, entry in self._series.items():
            labels = dict(key)
            if name is not None and labels.get("__name__") != name:
                continue
            rows.append({"labels": labels, "samples": entry.samples,
                         "value": _json_float(entry.last_value), "timestamp_ms": entry.last_timestamp_ms})
        return web.json_response({"series": rows, "total_series": len(self._series)})

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
        if self._on_write is not None:
            self._on_write(timeseries)
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


def _json_float(value: float) -> float | str:
    # JSON has no NaN/Inf; Prometheus' API writes every value as a string for the same reason.
    return value if math.isfinite(value) else str(value)


def format_series(timeseries: TimeSeries) -> list[str]:
    """Exposition-style lines, ``name{labels} value timestamp_ms``, one per sample (``receive --print``)."""
    lines: list[str] = []
    for labels, samples in timeseries:
        name = labels.get("__name__", "")
        rest = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()) if k != "__name__")
        series = f"{name}{{{rest}}}" if rest else name
        lines.extend(f"{series} {_format_value(value)} {ts}" for value, ts in samples)
    return lines


def _format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _split_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"--listen {listen!r} is not host:port; use e.g. {DEFAULT_LISTEN}")
    return host.strip("[]") or "127.0.0.1", int(port)


async def serve(receiver: Receiver, host: str, port: int, *, summary_interval: float, duration: float,
                out: TextIO) -> None:
    """Listen until SIGINT/SIGTERM (or ``duration`` seconds), printing a summary line every
    ``summary_interval`` seconds while samples arrive (0 = no summaries)."""
    from kubescrape._signals import stop_on_signals

    url = await receiver.start(host, port)
    base = url.removesuffix(WRITE_PATHS[0])
    print(f"receiving remote write at {url} (also {base}{WRITE_PATHS[1]})", file=out, flush=True)
    print(f"read back: {base}{QUERY_PATH} (JSON; ?name=METRIC for one metric), {base}/ (totals)",
          file=out, flush=True)
    started = time.monotonic()
    last_samples = 0
    with stop_on_signals() as stop:
        try:
            while not stop.is_set():
                wait = summary_interval or 3600.0
                if duration:
                    wait = min(wait, max(0.0, started + duration - time.monotonic()))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), wait)
                if duration and time.monotonic() - started >= duration:
                    break
                if summary_interval and receiver.stats.samples != last_samples:
                    rate = (receiver.stats.samples - last_samples) / summary_interval
                    last_samples = receiver.stats.samples
                    print(f"{receiver.summary()}; {rate:,.0f} samples/s over the last "
                          f"{summary_interval:g}s", file=out, flush=True)
        finally:
            await receiver.stop()
    print(f"stopped: {receiver.summary()}", file=out, flush=True)


def run_command(*, listen: str, print_samples: bool, summary_interval: float, max_series: int,
                duration: float) -> int:
    """``kubescrape receive``: returns the process exit code."""
    try:
        host, port = _split_listen(listen)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    def show(timeseries: TimeSeries) -> None:
        for line in format_series(timeseries):
            sys.stdout.write(line + "\n")
        sys.stdout.flush()

    # With --print, samples go to stdout and everything else to stderr, so stdout can be piped on.
    receiver = Receiver(max_series=max_series, on_write=show if print_samples else None)
    try:
        asyncio.run(serve(receiver, host, port, summary_interval=summary_interval, duration=duration,
                          out=sys.stderr if print_samples else sys.stdout))
    except OSError as e:
        print(f"error: cannot listen on {host}:{port}: {e.strerror or e}", file=sys.stderr)
        print("fix:   pass another --listen address (port 0 picks a free one), or stop what is using it",
              file=sys.stderr)
        return 2
    return 0
