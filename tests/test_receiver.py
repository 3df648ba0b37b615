"""The embedded remote-write receiver over real HTTP on loopback."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator

import aiohttp
import pytest

from kubescrape.receiver import Receiver
from kubescrape.remote_write.encode import (
    REMOTE_WRITE_HEADERS,
    STALE_NAN,
    compress,
    encode_labels,
    encode_timeseries,
    is_stale_nan,
)
from kubescrape.scrape.cache import SeriesCache

NOW = 1_764_000_000_000


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver(max_series=50) as running:
        yield running


def _body(*series: tuple[list[tuple[str, str]], float, int]) -> bytes:
    return compress(
        b"".join(encode_timeseries(encode_labels(labels), value, ts) for labels, value, ts in series)
    )


async def _post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, str]:
    timeout = aiohttp.ClientTimeout(total=5)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.post(
            url, data=body, headers=REMOTE_WRITE_HEADERS if headers is None else headers
        ) as response,
    ):
        return response.status, await response.text()


async def test_accepts_remote_write_and_keeps_last_values(receiver: Receiver) -> None:
    assert receiver.url.startswith("http://127.0.0.1:")
    assert receiver.url.endswith("/api/v1/write")
    labels = [("__name__", "up"), ("job", "kubelet")]
    status, _ = await _post(receiver.url, _body((labels, 1.0, NOW), (labels, 0.0, NOW + 1)))
    assert status == 204
    status, _ = await _post(
        receiver.url.replace("/api/v1/write", "/prometheus/v1/write"),
        _body(([("__name__", "m"), ("pod", "ü")], math.inf, NOW)),
    )
    assert status == 204
    assert receiver.series_count() == 2
    assert receiver.last_value("up", {"job": "kubelet"}) == 0.0
    assert receiver.sample_count("up", {"job": "kubelet"}) == 2
    assert receiver.last_value("m", [("pod", "ü")]) == math.inf
    assert receiver.last_value("up") is None  # a different series: labels must match exactly
    assert receiver.stats.requests == 2
    assert receiver.stats.samples == 3
    assert receiver.stats.series == 2
    assert receiver.stats.errors == 0
    assert receiver.stats.bytes > 0


async def test_stale_nan_is_stored_bit_exact(receiver: Receiver) -> None:
    status, _ = await _post(receiver.url, _body(([("__name__", "gone")], STALE_NAN, NOW)))
    assert status == 204
    value = receiver.last_value("gone")
    assert value is not None and is_stale_nan(value)


async def test_end_to_end_from_series_cache(receiver: Receiver) -> None:
    text = 'a{x="1"} 1.5 1763999990000\nb 2\n# TYPE c counter\nc_total 7\n'
    cache = SeriesCache(lambda name, labels: [("__name__", name), *labels, ("job", "t")], batch=2)
    result = cache.process(text.encode(), NOW)
    for chunk in result.chunks:
        status, _ = await _post(receiver.url, compress(chunk.data))
        assert status == 204
    assert await receiver.wait_for_samples(3, timeout=2)
    assert receiver.last_value("a", {"x": "1", "job": "t"}) == 1.5
    assert receiver.last_value("c_total", {"job": "t"}) == 7.0


@pytest.mark.parametrize(
    ("headers", "body", "fragment"),
    [
        ({**REMOTE_WRITE_HEADERS, "Content-Encoding": "gzip"}, b"x", "Content-Encoding"),
        ({"Content-Type": "application/x-protobuf"}, b"x", "Content-Encoding"),
        ({**REMOTE_WRITE_HEADERS, "Content-Type": "application/json"}, b"x", "Content-Type"),
        ({**REMOTE_WRITE_HEADERS, "X-Prometheus-Remote-Write-Version": "2.0.0"}, b"x", "Version"),
        (REMOTE_WRITE_HEADERS, b"\xff\xff\xff\xff\xffnot snappy", "snappy"),
        (REMOTE_WRITE_HEADERS, compress(b"\x0a\xff\xff\xff\x0f"), "protobuf"),
        # A series whose only label is job="xx": no metric name.
        (REMOTE_WRITE_HEADERS, compress(b"\x0a\x0b\x0a\x09\x0a\x03job\x12\x02xx"), "__name__"),
    ],
    ids=["gzip", "no-encoding", "json", "version-2", "not-snappy", "not-protobuf", "no-name"],
)
async def test_rejects_garbage_with_a_clear_400(
    receiver: Receiver, headers: dict[str, str], body: bytes, fragment: str
) -> None:
    status, text = await _post(receiver.url, body, headers)
    assert status == 400
    assert fragment in text
    assert receiver.stats.errors == 1
    assert receiver.series_count() == 0
    assert fragment in receiver.last_error


async def test_only_post_on_write_paths(receiver: Receiver) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        async with session.get(receiver.url) as response:
            assert response.status == 405
        async with session.post(receiver.url.replace("/api/v1/write", "/metrics"), data=b"") as response:
            assert response.status == 404


async def test_series_are_bounded(receiver: Receiver) -> None:
    body = _body(*[([("__name__", "m"), ("i", str(i))], float(i), NOW) for i in range(80)])
    status, _ = await _post(receiver.url, body)
    assert status == 204
    assert receiver.series_count() == 50
    assert receiver.stats.samples == 80
    assert receiver.stats.series_dropped == 30


async def test_stop_releases_the_port() -> None:
    first = Receiver()
    url = await first.start()
    await first.stop()
    port = int(url.split(":")[2].split("/")[0])
    second = Receiver()
    try:
        assert await second.start(port=port) == url
    finally:
        await second.stop()
    with pytest.raises(aiohttp.ClientConnectionError):
        await _post(url, _body(([("__name__", "m")], 1.0, 1)))


async def test_wait_for_samples_times_out(receiver: Receiver) -> None:
    assert not await receiver.wait_for_samples(1, timeout=0.05)


async def _get_json(url: str) -> tuple[int, object]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.json()


async def test_series_endpoint_reads_back_what_arrived() -> None:
    written: list[list[tuple[dict[str, str], list[tuple[float, int]]]]] = []
    async with Receiver(on_write=written.append) as running:
        base = running.url.removesuffix("/api/v1/write")
        labels = [("__name__", "up"), ("job", "kubelet")]
        other = [("__name__", "m"), ("job", "cadvisor")]
        assert (await _post(running.url, _body((labels, 1.0, NOW), (other, math.nan, NOW))))[0] == 204
        status, data = await _get_json(f"{base}/series?name=up")
        assert status == 200
        row = {"labels": {"__name__": "up", "job": "kubelet"}, "samples": 1, "value": 1.0,
               "timestamp_ms": NOW}
        assert data == {"series": [row], "total_series": 2}
        status, data = await _get_json(f"{base}/series")
        assert isinstance(data, dict) and len(data["series"]) == 2
        (nan_row,) = [row for row in data["series"] if row["labels"]["__name__"] == "m"]
        assert nan_row["value"] == "nan"  # JSON has no NaN
        async with aiohttp.ClientSession() as session, session.get(base + "/") as response:
            assert (await response.text()).startswith("2 samples in 1 requests, 2 series, 0 rejected")
    # the --print hook saw the decoded series of the request
    assert len(written) == 1 and {ls["__name__"] for ls, _ in written[0]} == {"up", "m"}
