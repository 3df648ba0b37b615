"""Delivery under faults, against a real Prometheus: outage, SIGKILL during an outage, 500/429/slow answers
through a fault-injecting proxy, spool limit reached, damaged spool file. Each test uses its own series
and timestamps near now (Prometheus rejects samples too old or out of order for its head block)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from kubescrape.agent import Agent
from kubescrape.config.models import AgentConfig, GlobalConfig, InstanceConfig, WriterConfig
from kubescrape.remote_write import Chunk
from kubescrape.remote_write.queue import RemoteWrite, WriterSettings
from kubescrape.selfmon import SelfMetrics
from tests.e2e.faultproxy import Fault, FaultProxy
from tests.e2e.helpers import metrics_server
from tests.e2e.prom import Prometheus
from tests.remote_write.receiver import chunk_bytes

ROOT = Path(__file__).resolve().parents[2]
SERIES = 5


def scrape(test: str, ts_ms: int) -> Chunk:
    """One scrape: SERIES series of metric ``kubescrape_e2e{test=…}``, one sample each at ``ts_ms``."""
    data = b"".join(chunk_bytes("kubescrape_e2e", [(float(ts_ms % 100_000), ts_ms)], test=test, i=str(i))
                    for i in range(SERIES))
    return Chunk(data, SERIES)


def settings(url: str, **kw: object) -> WriterSettings:
    base: dict[str, object] = {"flush_deadline": 0.05, "min_backoff": 0.05, "max_backoff": 0.3,
                               "timeout": 2.0, "dial_timeout": 0.5}
    base.update(kw)
    return WriterSettings(url=url, name="prom", **base)  # type: ignore[arg-type]


def metric(m: SelfMetrics, name: str, **labels: str) -> float:
    return m.registry.get_sample_value(name, {"writer": "prom", **labels}) or 0.0


def counts(prom: Prometheus, test: str) -> dict[str, int]:
    return {k.split("i=")[1].split(",")[0]: v
            for k, v in prom.count_samples(f'kubescrape_e2e{{test="{test}"}}', window="10m").items()}


async def drain(rw: RemoteWrite, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while rw.stats()[0].pending_samples and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert rw.stats()[0].pending_samples == 0, rw.stats()


def base_ms() -> int:
    return int(time.time() * 1000) - 120_000


async def test_receiver_down_for_a_stretch_loses_nothing(prometheus: Prometheus, tmp_path: Path) -> None:
    m = SelfMetrics()
    rw = RemoteWrite([settings(prometheus.write_url)], metrics=m, spool_dir=tmp_path)
    await rw.start()
    t0 = base_ms()
    for i in range(10):
        await rw.append([scrape("outage", t0 + i * 100)])
    await drain(rw)
    await asyncio.to_thread(prometheus.stop)
    for i in range(10, 40):  # scrapes go on while the receiver is down
        await rw.append([scrape("outage", t0 + i * 100)])
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.5)
    assert rw.stats()[0].pending_samples > 0
    assert metric(m, "kubescrape_samples_failed_total") > 0
    await asyncio.to_thread(prometheus.start)
    for i in range(40, 50):
        await rw.append([scrape("outage", t0 + i * 100)])
    await drain(rw)
    await rw.close(5.0)
    assert counts(prometheus, "outage") == {str(i): 50 for i in range(SERIES)}
    assert metric(m, "kubescrape_samples_sent_total") == 50 * SERIES
    assert metric(m, "kubescrape_samples_retried_total") > 0


APPENDER = """
import asyncio, sys
from pathlib import Path
sys.path.insert(0, {root!r})
from tests.e2e.test_delivery_faults import scrape, settings
from kubescrape.remote_write.queue import RemoteWrite
from kubescrape.selfmon import SelfMetrics

async def main() -> None:
    rw = RemoteWrite([settings({url!r})], metrics=SelfMetrics(), spool_dir=Path({spool!r}))
    await rw.start()
    i = 0
    while True:
        await rw.append([scrape("sigkill", {t0} + i * 100)])
        print(i, flush=True)  # printed only once the append is durable
        i += 1
        await asyncio.sleep(0.005)

asyncio.run(main())
"""


async def test_sigkill_during_outage_then_restart_loses_nothing(prometheus: Prometheus,
                                                                tmp_path: Path) -> None:
    url = prometheus.write_url
    await asyncio.to_thread(prometheus.stop)
    t0 = base_ms()
    code = APPENDER.format(root=str(ROOT), url=url, spool=str(tmp_path), t0=t0)
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE,
                                                cwd=str(ROOT))
    assert proc.stdout is not None
    durable = 0
    try:
        while durable < 60:
            line = await asyncio.wait_for(proc.stdout.readline(), 15)
            assert line, "the appender died"
            durable = int(line) + 1
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # mid-loop: possibly in the middle of a spool write
        await proc.wait()
    await asyncio.to_thread(prometheus.start)
    m = SelfMetrics()
    rw = RemoteWrite([settings(url)], metrics=m, spool_dir=tmp_path)
    await rw.start()
    await drain(rw)
    await rw.close(5.0)
    got = counts(prometheus, "sigkill")
    assert set(got) == {str(i) for i in range(SERIES)}
    # every append that returned is there; the one in progress at the kill may be there too
    assert all(durable <= n <= durable + 1 for n in got.values()), (durable, got)
    assert metric(m, "kubescrape_samples_dropped_total", reason="http_400") == 0


async def test_errors_retry_after_and_slow_answers(prometheus: Prometheus, tmp_path: Path) -> None:
    proxy = FaultProxy(prometheus.write_url, [
        Fault(500), Fault(500), Fault(429, retry_after="1"), Fault(delay=0.5), Fault(503, retry_after="1"),
        Fault(502), Fault(delay=2.5),  # slower than the writer's timeout: retried
    ])
    url = await proxy.start()
    m = SelfMetrics()
    rw = RemoteWrite([settings(url, batch=10, max_shards=1)], metrics=m, spool_dir=tmp_path)
    await rw.start()
    t0 = base_ms()
    try:
        for i in range(20):
            await rw.append([scrape("faults", t0 + i * 100)])
        await drain(rw, 30)
        await rw.close(5.0)
    finally:
        await proxy.stop()
    assert counts(prometheus, "faults") == {str(i): 20 for i in range(SERIES)}
    assert metric(m, "kubescrape_samples_retried_total") >= 5 * 10
    assert metric(m, "kubescrape_samples_sent_total") == 100
    statuses = [s for _, s in proxy.log]
    for i, (at, status) in enumerate(proxy.log[:-1]):
        if status in (429, 503):
            assert proxy.log[i + 1][0] - at >= 0.95, f"Retry-After not honoured after {status}: {statuses}"
    assert statuses.count(204) >= 10


async def test_spool_limit_evicts_oldest_and_counts_exactly(prometheus: Prometheus, tmp_path: Path) -> None:
    await asyncio.to_thread(prometheus.stop)
    m = SelfMetrics()
    # 300 scrapes take ~43 kB in the spool (chunks are stored snappy-compressed): a limit below that
    limit = 30_000
    rw = RemoteWrite([settings(prometheus.write_url)], metrics=m, spool_dir=tmp_path, spool_max_bytes=limit)
    await rw.start()
    t0 = base_ms()
    appended = 300
    for i in range(appended):
        await rw.append([scrape("evict", t0 + i * 100)])
    evicted = metric(m, "kubescrape_spool_samples_evicted_total")
    assert evicted > 0 and rw.stats()[0].evicted == evicted
    assert rw.stats()[0].spool_bytes <= limit + limit // 8 + 2_000
    await asyncio.to_thread(prometheus.start)
    await drain(rw)
    await rw.close(5.0)
    sent = metric(m, "kubescrape_samples_sent_total")
    assert sent + evicted == appended * SERIES
    got = counts(prometheus, "evict")
    assert sum(got.values()) == sent
    # the oldest went: the newest sample of every series is there, the very first is not
    newest = prometheus.query('timestamp(kubescrape_e2e{test="evict"})')
    assert len(newest) == SERIES
    assert all(abs(float(r["value"][1]) * 1000 - (t0 + (appended - 1) * 100)) < 1 for r in newest)
    assert all(n < appended for n in got.values())


async def test_truncated_spool_file_starts_and_reports_skip(prometheus: Prometheus, tmp_path: Path) -> None:
    await asyncio.to_thread(prometheus.stop)
    rw = RemoteWrite([settings(prometheus.write_url)], metrics=SelfMetrics(), spool_dir=tmp_path)
    await rw.start()
    t0 = base_ms()
    for i in range(10):
        await rw.append([scrape("truncated", t0 + i * 100)])
    await rw.close(0.2)
    (seg,) = sorted((tmp_path / "prom").glob("*.seg"))
    with seg.open("r+b") as f:
        f.truncate(seg.stat().st_size - 50)  # the last record was being written when the agent died
    await asyncio.to_thread(prometheus.start)
    m = SelfMetrics()
    rw2 = RemoteWrite([settings(prometheus.write_url)], metrics=m, spool_dir=tmp_path)
    await rw2.start()
    assert metric(m, "kubescrape_spool_corrupt_records_total") == 1
    await drain(rw2)
    await rw2.close(5.0)
    assert counts(prometheus, "truncated") == {str(i): 9 for i in range(SERIES)}


# --- a spool on a filesystem that fills up, while the backend is down --------------------------------

FILL_SERIES = 3000


def _mount_tmpfs(path: Path, size: str) -> str | None:
    """Mount a tmpfs of ``size`` at ``path``; None on success, else why it could not be done."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "mounting a small tmpfs needs root (CI runs as root)"
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}"
    return None


def _healthz(agent: Agent) -> tuple[int, str]:
    assert agent.listen_address is not None
    try:
        with urllib.request.urlopen("http://{}:{}/healthz".format(*agent.listen_address), timeout=5) as r:
            return int(r.status), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


async def _until(predicate: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"not reached in {timeout}s: {what}"
        await asyncio.sleep(0.05)


async def test_full_spool_filesystem_is_counted_reported_and_recovers(prometheus: Prometheus,
                                                                      tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    why = _mount_tmpfs(spool, "2m")
    if why is not None:
        pytest.skip(why)
    page = "".join(f'kubescrape_fill{{i="{i}"}} {i}\n' for i in range(FILL_SERIES))
    try:
        await asyncio.to_thread(prometheus.stop)  # the backend is down from the start
        async with metrics_server({"/metrics": page}) as target:
            config = AgentConfig(
                global_=GlobalConfig(hostname="node-1", interval=0.2),
                instances=[InstanceConfig(urls=[target.url("/metrics")], labels={"job": "fill"},
                                          timeout=0.2)],
                writers=[WriterConfig(url=prometheus.write_url, timeout=2.0, dial_timeout=0.5,
                                      min_backoff=0.05, max_backoff=0.5)],
            )
            agent = Agent(config, spool_dir=spool, listen="127.0.0.1:0", jitter=False, shutdown_timeout=20.0)
            await agent.start()
            try:
                # the disk fills up: appends fail, are counted, and /healthz says why
                await _until(lambda: agent.stats().writers[0].dropped_by_reason.get("spool_full", 0) > 0,
                             "appends failing on the full filesystem")
                status, text = await asyncio.to_thread(_healthz, agent)
                assert status == 503, text
                assert "cannot persist" in text and "No space left on device" in text, text
                assert "cannot deliver" in text, text
                scrapes = agent.stats().scrapes
                await _until(lambda: agent.stats().scrapes >= scrapes + 3, "the agent keeps scraping")
                w = agent.stats().writers[0]
                assert w.appended == w.sent + w.dropped + w.evicted + w.pending_samples, w

                await asyncio.to_thread(prometheus.start)  # the backend returns
                await _until(lambda: agent.healthy()[0], "healthy again", timeout=90)
                await _until(lambda: agent.stats().writers[0].sent > w.pending_samples, "delivering")
                status, text = await asyncio.to_thread(_healthz, agent)
                assert status == 200, text
            finally:
                await agent.stop()
        w = agent.stats().writers[0]
        assert w.appended == w.sent + w.dropped + w.evicted + w.pending_samples, w
        assert set(w.dropped_by_reason) == {"spool_full"} and w.evicted == 0, w
        assert w.pending_samples == 0, w
        names = prometheus.api("label/__name__/values", **{"match[]": '{job="fill"}'})
        assert "kubescrape_fill" in names and "up" in names
        stored = sum(int(float(r["value"][1])) for name in names for r in prometheus.query(
            f'sum(count_over_time({{__name__="{name}",job="fill"}}[15m]))'))
        assert stored == w.sent, (stored, w)
        dropped = agent.metrics.registry.get_sample_value(
            "kubescrape_samples_dropped_total", {"writer": w.name, "reason": "spool_full"})
        assert dropped == w.dropped
        pending = agent.metrics.registry.get_sample_value("kubescrape_samples_pending", {"writer": w.name})
        assert pending == 0
    finally:
        subprocess.run(["umount", "-l", str(spool)], check=False)


async def test_one_out_of_bounds_sample_costs_no_other_target_its_data(prometheus: Prometheus,
                                                                        tmp_path: Path) -> None:
    """Prometheus refuses a whole request (400 out of bounds, nothing stored) for one sample from 1970;
    the request is split until only that sample is dropped, and counted."""
    m = SelfMetrics()
    rw = RemoteWrite([settings(prometheus.write_url, batch=1000, max_shards=1)], metrics=m,
                     spool_dir=tmp_path)
    await rw.start()
    t0 = base_ms()
    for i in range(5):
        good = [scrape(f"split{k}", t0 + i * 100)._replace(key=k + 1) for k in range(4)]
        bad = Chunk(chunk_bytes("kubescrape_e2e", [(1.0, t0 + i * 100)], test="splitbad", i="0")
                    + chunk_bytes("kubescrape_e2e", [(1.0, 1000 + i)], test="splitbad", i="1")
                    + chunk_bytes("kubescrape_e2e", [(1.0, t0 + i * 100)], test="splitbad", i="2"), 3, 9)
        await rw.append([*good[:2], bad, *good[2:]])
    await drain(rw)
    await rw.close(5.0)
    for k in range(4):
        assert counts(prometheus, f"split{k}") == {str(i): 5 for i in range(SERIES)}
    assert counts(prometheus, "splitbad") == {"0": 5, "2": 5}
    st = rw.stats()[0]
    assert st.dropped_by_reason == {"http_400": 5}
    assert st.sent == 5 * (4 * SERIES + 2)
    assert st.appended == st.sent + st.dropped + st.evicted + st.pending_samples
