"""Differential acceptance: every payload of the corpus is served over HTTP on loopback to a real
Prometheus 2.42 and to kubescrape's scrape path; ``up`` must agree, and so must the stored samples where
both accept the payload.

The corpus is ``tests/data/acceptance/index.json``: one entry per payload (file, Content-Type, optional
scrape limits). Bodies are exact bytes; ``@NOW_S@``-style placeholders are filled in when the payloads
are armed, relative to that moment. All payloads run against ONE Prometheus, one job each. The server
answers an empty body until Prometheus has scraped every job once, so Prometheus' head already holds
"now" when timestamped payloads arrive (a fresh head would take a 1970 sample as its first).

kubescrape's side is the real scrape path: the Categraf configuration (with the payload's limits as
instance options) is loaded and resolved into targets, and each target is scraped once by a
:class:`~kubescrape.scrape.loop.ScrapeLoop` over HTTP, as ``kubescrape run --test`` does.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import math
import sys
import time
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from kubescrape.agent import Agent
from kubescrape.config.categraf import load_categraf
from kubescrape.prometheus import Prometheus, prometheus_available
from kubescrape.remote_write.encode import decode_write_request
from kubescrape.scrape.loop import ScrapeClient, ScrapeLoop
from kubescrape.scrape.targets import build_targets
from tests.e2e.helpers import metrics_server

CORPUS = Path(__file__).resolve().parent.parent / "data" / "acceptance"
SYNTHETIC = {
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
}
# (labels without job/instance) -> (value, timestamp in ms)
Stored = dict[tuple[tuple[str, str], ...], tuple[float, int]]
# up, the samples, and (kubescrape only) the scrape's own timestamp in ms
Scraped = tuple[bool, Stored, int]


def require_prometheus() -> None:
    if not prometheus_available():
        pytest.fail(
            "the Debian package 'prometheus' is not installed: run `bash scripts/test`, which installs it"
        )


def load_corpus() -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = json.loads((CORPUS / "index.json").read_text())
    return entries


def fill(body: bytes, now: float) -> bytes:
    """Fill the time placeholders relative to ``now`` (seconds)."""
    ms = int(now * 1000)
    values = {
        b"@NOW_S@": str(int(now)),
        b"@NOW_S3@": f"{now:.3f}",
        b"@CREATED_S@": str(int(now) - 3600),
        b"@RECENT_MS@": str(ms - 60_000),
        b"@OLD_MS@": str(ms - 2 * 3600_000),
        b"@AHEAD_MS@": str(ms + 20 * 60_000),
    }
    for key, value in values.items():
        body = body.replace(key, value.encode())
    return body


def encode(body: bytes, encoding: str) -> bytes:
    """The body as the corpus entry's ``encoding`` sends it (whole, damaged or unusual gzip)."""
    if not encoding:
        return body
    if encoding == "deflate":
        return zlib.compress(body)
    if encoding == "gzip_empty":
        return b""
    whole = gzip.compress(body)
    if encoding == "gzip":
        return whole
    if encoding == "gzip_two_members":
        half = body.index(b"\n", len(body) // 2) + 1
        return gzip.compress(body[:half]) + gzip.compress(body[half:])
    if encoding == "gzip_no_trailer":
        # Every byte of the text is in the deflate stream (a sync flush), but the stream never ends.
        packer = zlib.compressobj(wbits=31)
        return packer.compress(body) + packer.flush(zlib.Z_SYNC_FLUSH)
    if encoding == "gzip_bad_crc":
        return whole[:-8] + bytes(b ^ 0xFF for b in whole[-8:-4]) + whole[-4:]
    if encoding == "gzip_trailing_garbage":
        return whole + b"not gzip\n"
    raise ValueError(f"unknown corpus encoding {encoding!r}")


class CorpusServer:
    """Serves each payload at ``/<name>`` with its Content-Type; an empty text body until armed."""

    def __init__(self, corpus: list[dict[str, Any]]) -> None:
        self.raw = {e["name"]: (CORPUS / e["file"]).read_bytes() for e in corpus}
        self.types = {e["name"]: e["content_type"] for e in corpus}
        self.encodings = {e["name"]: e.get("encoding", "") for e in corpus}
        self.bodies: dict[str, bytes] = {}
        self.hits: dict[str, int] = dict.fromkeys(self.raw, 0)
        self.armed = False
        self.port = 0
        self._runner: web.AppRunner | None = None

    def arm(self, now: float) -> None:
        self.bodies = {name: encode(fill(body, now), self.encodings[name]) for name, body in self.raw.items()}
        self.hits = dict.fromkeys(self.raw, 0)
        self.armed = True

    async def handle(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self.raw:
            raise web.HTTPNotFound()
        if not self.armed:
            return web.Response(body=b"", headers={"Content-Type": "text/plain; version=0.0.4"})
        self.hits[name] += 1
        headers = {"Content-Type": self.types[name]}
        if self.encodings[name]:
            headers["Content-Encoding"] = "deflate" if self.encodings[name] == "deflate" else "gzip"
        return web.Response(body=self.bodies[name], headers=headers)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/{name}", self.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def corpus_server() -> AsyncIterator[CorpusServer]:
    server = CorpusServer(load_corpus())
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def prometheus_yml(corpus: list[dict[str, Any]], port: int) -> str:
    lines = ["global:", "  scrape_interval: 1s", "  scrape_timeout: 1s", "scrape_configs:"]
    for e in corpus:
        lines += [
            f"  - job_name: {e['name']}",
            f"    metrics_path: /{e['name']}",
            f"    static_configs: [{{targets: ['127.0.0.1:{port}']}}]",
        ]
        lines += [f"    {key}: {value}" for key, value in e.get("limits", {}).items()]
    return "\n".join(lines) + "\n"


def categraf_config(dest: Path, corpus: list[dict[str, Any]], port: int) -> Path:
    (dest / "input.prometheus").mkdir(parents=True)
    # No agent_hostname label and instance = host:port, so the target labels are Prometheus' (the label
    # limits count them).
    (dest / "config.toml").write_text("[global]\ninterval = 1\nomit_hostname = true\n")
    instances = [
        f'[[instances]]\nurls = ["http://127.0.0.1:{port}/{e["name"]}"]\nurl_label_value = "{{{{.Host}}}}"\n'
        f'labels = {{ job = "{e["name"]}" }}\n'
        + "".join(f"{key} = {value}\n" for key, value in e.get("limits", {}).items())
        for e in corpus
    ]
    (dest / "input.prometheus" / "prometheus.toml").write_text("\n".join(instances))
    return dest


def _key(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in labels.items() if k not in ("job", "instance")))


async def scrape_with_kubescrape(config_dir: Path) -> dict[str, Scraped]:
    """Scrape every payload once through ScrapeLoop; per job: up, the samples it would send, its time."""
    targets = build_targets(load_categraf(config_dir))
    client = ScrapeClient()
    out: dict[str, Scraped] = {}
    try:
        for target in targets:
            report = await ScrapeLoop(target, client=client).scrape()
            stored: Stored = {}
            for chunk in report.chunks:
                for labels, points in decode_write_request(chunk.data):
                    if labels["__name__"] not in SYNTHETIC:
                        stored.setdefault(_key(labels), points[-1])
            out[target.label_dict["job"]] = (report.ok, stored, int(report.timestamp * 1000))
    finally:
        await client.close()
    return out


def read_prometheus(prom: Prometheus, job: str, at: float) -> tuple[bool, Stored]:
    """``up`` of the job's last scrape and the last stored sample of each of its series."""
    [up] = prom.query(f'up{{job="{job}"}}')
    stored: Stored = {}
    # Evaluated 11 min ahead so that samples with their own (accepted) future timestamps are included.
    for series in prom.query(f'{{job="{job}"}}[2h]', at=at + 660):
        labels = series["metric"]
        if labels["__name__"] in SYNTHETIC:
            continue
        ts, value = series["values"][-1]
        stored[_key(labels)] = (float(value), round(float(ts) * 1000))
    return up["value"][1] == "1", stored


def same_samples(ours: Stored, theirs: Stored, scrape_ms: int) -> bool:
    """Same series and values; timestamps compared where the payload gave its own (where ours is not
    the scrape's time)."""
    if set(ours) != set(theirs):
        return False
    for key, (value, ts) in ours.items():
        their_value, their_ts = theirs[key]
        if not (value == their_value or (math.isnan(value) and math.isnan(their_value))):
            return False
        if ts != scrape_ms and ts != their_ts:
            return False
    return True


async def test_kubescrape_accepts_what_prometheus_accepts(
    corpus_server: CorpusServer, tmp_path: Path
) -> None:
    require_prometheus()
    corpus = load_corpus()
    jobs = [e["name"] for e in corpus]
    (tmp_path / "prometheus").mkdir()
    prom = Prometheus(tmp_path / "prometheus", config_yaml=prometheus_yml(corpus, corpus_server.port))
    # Started off the event loop: the corpus server must answer while Prometheus comes up.
    await asyncio.to_thread(prom.start)
    try:
        # Every job scraped (the empty body) once: Prometheus' head now ends at the present.
        deadline = time.monotonic() + 30
        while len(await asyncio.to_thread(prom.query, "up")) < len(jobs):
            assert time.monotonic() < deadline, "Prometheus did not scrape every job within 30 s"
            await asyncio.sleep(0.25)
        armed_at = time.time()
        corpus_server.arm(armed_at)
        config_dir = categraf_config(tmp_path / "categraf", corpus, corpus_server.port)
        ours = await scrape_with_kubescrape(config_dir)
        # Two armed scrapes per job by Prometheus (ours took one each), then one more interval.
        deadline = time.monotonic() + 30
        while min(corpus_server.hits.values()) < 3:
            assert time.monotonic() < deadline, f"Prometheus scrapes too slow: {corpus_server.hits}"
            await asyncio.sleep(0.25)
        await asyncio.sleep(1.5)
        at = time.time()
        theirs = {job: await asyncio.to_thread(read_prometheus, prom, job, at) for job in jobs}
    finally:
        await asyncio.to_thread(prom.stop)

    rows = []
    for e in corpus:
        job = e["name"]
        our_up, our_samples, scrape_ms = ours[job]
        their_up, their_samples = theirs[job]
        equal = same_samples(our_samples, their_samples, scrape_ms) if our_up and their_up else None
        agree = our_up == their_up and equal is not False
        rows.append((job, their_up, our_up, equal, agree, our_samples, their_samples))
    table = [f"{'payload':<26} {'prometheus up':>13} {'kubescrape up':>13} {'samples equal':>13}"]
    for job, their_up, our_up, equal, agree, *_ in rows:
        eq = "-" if equal is None else ("yes" if equal else "NO")
        mark = "" if agree else "   <-- differs"
        table.append(f"{job:<26} {int(their_up):>13} {int(our_up):>13} {eq:>13}{mark}")
    print("\n" + "\n".join(table), file=sys.stderr)
    differing = [
        f"{job}: prometheus up={int(tu)} {theirs_s}\n    kubescrape up={int(ou)} {ours_s}"
        for job, tu, ou, _, agree, ours_s, theirs_s in rows
        if not agree
    ]
    assert not differing, "payloads where kubescrape and Prometheus differ:\n" + "\n".join(differing)


async def test_bad_timestamps_of_one_target_cost_another_target_nothing(tmp_path: Path) -> None:
    """Finding 1 end to end: a target exposing year-2100 and 1970 samples shares a writer (a real
    Prometheus receiver) with a healthy target; every healthy sample arrives, the bad ones never do."""
    require_prometheus()
    pages = {"/good": "healthy 1\n", "/bad": "fut 1 4102444800000\npast 1 1000\nbad_ok 1\n"}
    (tmp_path / "prometheus").mkdir()
    prom = Prometheus(tmp_path / "prometheus")
    await asyncio.to_thread(prom.start)
    try:
        async with metrics_server(pages) as server:
            conf = tmp_path / "conf"
            (conf / "input.prometheus").mkdir(parents=True)
            (conf / "config.toml").write_text(
                "[global]\ninterval = 0.5\nallow_short_intervals = true\nomit_hostname = true\n"
                f'[[writers]]\nurl = "{prom.write_url}"\n'
            )
            (conf / "input.prometheus" / "prometheus.toml").write_text(
                "".join(
                    f'[[instances]]\nurls = ["{server.url("/" + job)}"]\nlabels = {{ job = "{job}" }}\n'
                    for job in ("good", "bad")
                )
            )
            async with Agent(load_categraf(conf)) as agent:
                await asyncio.sleep(8)
            scrapes = {s.url.rsplit("/", 1)[1]: s.scrapes for s in agent.stats().targets}
        counts = {
            name: await asyncio.to_thread(prom.count_samples, f'{{__name__="{name}"}}', "10m")
            for name in ("healthy", "bad_ok", "fut", "past", "up")
        }
    finally:
        await asyncio.to_thread(prom.stop)
    healthy = sum(counts["healthy"].values())
    assert scrapes["good"] >= 10 and healthy == scrapes["good"], (scrapes, counts)
    assert sum(counts["bad_ok"].values()) == scrapes["bad"], (scrapes, counts)
    assert counts["fut"] == {} and counts["past"] == {}
    assert sum(counts["up"].values()) == scrapes["good"] + scrapes["bad"]
