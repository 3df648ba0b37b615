"""End to end: the seed's Categraf config, real TLS (certificates from kubescrape.emulator.pki), real HTTPS
metrics servers on loopback that check bearer tokens, the real agent, and a real Prometheus receiving
remote write. What Prometheus stores is compared with what the servers exposed."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import aiohttp
from aiohttp import web

from kubescrape.agent import Agent
from kubescrape.config.categraf import load_categraf
from kubescrape.emulator.pki import write_private
from kubescrape.scrape.parser import format_value, parse
from kubescrape.scrape.targets import build_targets
from tests.e2e.helpers import (
    TLSFiles,
    free_port,
    metrics_server,
    rotate_token,
    terminate,
    write_categraf_config,
)
from tests.e2e.prom import Prometheus

ROOT = Path(__file__).resolve().parents[2]
SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped",
             "scrape_samples_post_metric_relabeling", "scrape_series_added"}
ADDED = {"job", "instance", "agent_hostname"}

KUBELET = r"""# HELP kubelet_running_pods [ALPHA] Number of pods that have a running pod sandbox
# TYPE kubelet_running_pods gauge
kubelet_running_pods 12
# HELP rest_client_requests_total [ALPHA] Number of HTTP requests, by status code, method, and host.
# TYPE rest_client_requests_total counter
rest_client_requests_total{code="200",host="10.206.0.16:6443",method="GET"} 81234
rest_client_requests_total{code="409",host="10.206.0.16:6443",method="PUT"} 3
# HELP kubelet_pod_start_duration_seconds [ALPHA] Duration in seconds to start a pod.
# TYPE kubelet_pod_start_duration_seconds histogram
kubelet_pod_start_duration_seconds_bucket{le="0.5"} 4
kubelet_pod_start_duration_seconds_bucket{le="1"} 9
kubelet_pod_start_duration_seconds_bucket{le="+Inf"} 11
kubelet_pod_start_duration_seconds_sum 17.25
kubelet_pod_start_duration_seconds_count 11
# HELP kubernetes_build_info [ALPHA] A metric with a constant '1' value.
# TYPE kubernetes_build_info gauge
kubernetes_build_info{git_version="v1.29.0",path="C:\\k8s\\bin",quote="say \"hi\"",nl="a\nb"} 1
apiserver_audit_event_total -0.5e-3
"""

PROXY = """# TYPE kubeproxy_sync_proxy_rules_duration_seconds summary
kubeproxy_sync_proxy_rules_duration_seconds{quantile="0.5"} 0.012
kubeproxy_sync_proxy_rules_duration_seconds{quantile="0.99"} NaN
kubeproxy_sync_proxy_rules_duration_seconds_sum 4.5
kubeproxy_sync_proxy_rules_duration_seconds_count 310
"""


def cadvisor_text(now_ms: int) -> str:
    # cadvisor sends explicit timestamps; honor_timestamps is on by default, so they must arrive as sent.
    return (
        "# TYPE container_cpu_usage_seconds_total counter\n"
        'container_cpu_usage_seconds_total{container="categraf",namespace="flashcat",pod="categraf-d8jt8"} '
        f"123.456 {now_ms - 4000}\n"
        'container_memory_working_set_bytes{container="",namespace="kube-system",pod="kube-proxy-x"} '
        f"4.2e+07 {now_ms - 3000}\n"
    )


def exposed(text: str) -> set[tuple[str, frozenset[tuple[str, str]], str]]:
    """The samples of ``text`` as (name, labels, value); an empty label value means "no label", as in
    Prometheus."""
    return {(s.name, frozenset(kv for kv in s.labels if kv[1]), format_value(s.value)) for s in parse(text)}


def stored(prom: Prometheus, job: str) -> set[tuple[str, frozenset[tuple[str, str]], str]]:
    out = set()
    for r in prom.query(f'{{job="{job}"}}'):
        labels = dict(r["metric"])
        name = labels.pop("__name__")
        if name in SYNTHETIC:
            continue
        assert set(labels) >= ADDED, labels
        value = r["value"][1]
        out.add((name, frozenset((k, v) for k, v in labels.items() if k not in ADDED),
                 format_value(float(value))))
    return out


async def wait_for(check: Callable[[], bool], timeout: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(check):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


def up_values(prom: Prometheus) -> dict[str, float]:
    return {r["metric"]["job"]: float(r["value"][1]) for r in prom.query("up")}


async def test_seed_config_over_tls_into_prometheus_with_token_rotation(
    tmp_path: Path, prometheus: Prometheus
) -> None:
    tls = TLSFiles.create(tmp_path / "pki")
    token_file = tmp_path / "sa" / "token"
    write_private(token_file, b"token-1")
    now_ms = int(time.time() * 1000)
    pages = {"/metrics": KUBELET, "/metrics/cadvisor": cadvisor_text(now_ms)}
    async with metrics_server(pages, tokens={"token-1"}, tls=tls) as kubelet, \
            metrics_server({"/metrics": PROXY}) as proxy:
        conf = write_categraf_config(
            tmp_path / "conf", writer_url=prometheus.write_url, token_file=token_file, interval=0.5,
            tls_ca=tls.ca_file,  # verification on: the CA that signed the serving certificate
            urls={"http://127.0.0.1:10249/metrics": proxy.url("/metrics"),
                  "https://127.0.0.1:10250/metrics": kubelet.url("/metrics"),
                  "https://127.0.0.1:10250/metrics/cadvisor": kubelet.url("/metrics/cadvisor")},
        )
        config = load_categraf(conf, env={"HOSTNAME": "node-1"})
        assert [t.interval for t in build_targets(config)] == [0.5, 0.5, 0.5]
        async with Agent(config) as agent:
            await wait_for(lambda: up_values(prometheus) == {"kube-proxy": 1, "kubelet": 1, "cadvisor": 1},
                           what="up == 1 for the three seed jobs")
            await wait_for(lambda: stored(prometheus, "kubelet") == exposed(KUBELET), what="kubelet samples")
            assert stored(prometheus, "kube-proxy") == exposed(PROXY)
            assert stored(prometheus, "cadvisor") == exposed(pages["/metrics/cadvisor"])
            # explicit timestamps were kept
            ts = prometheus.query("timestamp(container_cpu_usage_seconds_total)")
            assert float(ts[0]["value"][1]) == (now_ms - 4000) / 1000
            labels = prometheus.query('kubelet_running_pods{job="kubelet"}')[0]["metric"]
            assert labels["agent_hostname"] == "node-1"
            assert kubelet.requests[0]["Authorization"] == "Bearer token-1"

            # Rotate: the file is swapped and the old token is refused from the same instant.
            before = {t.url: t.scrapes for t in agent.stats().targets}
            rotate_token(token_file, "token-2", kubelet)
            await wait_for(lambda: all(t.scrapes >= before[t.url] + 3 for t in agent.stats().targets),
                           what="three scrapes after the rotation")
            stats = agent.stats()
            assert stats.failures == 0, [t.last_error for t in stats.targets]
            assert kubelet.requests[-1]["Authorization"] == "Bearer token-2"
        # every stored `up` sample of the whole run is 1: no failed scrape reached Prometheus
        minimum = prometheus.query("min_over_time(up[5m])")
        assert {r["metric"]["job"]: float(r["value"][1]) for r in minimum} == {
            "kube-proxy": 1, "kubelet": 1, "cadvisor": 1}
        counts = prometheus.count_samples('up{job="kubelet"}', window="5m")
        assert sum(counts.values()) >= 5


async def test_wrong_token_gives_up_0_and_a_401_error(tmp_path: Path, prometheus: Prometheus) -> None:
    tls = TLSFiles.create(tmp_path / "pki")
    token_file = tmp_path / "token"
    write_private(token_file, b"not-the-token")
    async with metrics_server({"/metrics": KUBELET}, tokens={"token-1"}, tls=tls) as kubelet, \
            metrics_server({"/metrics": PROXY}) as proxy:
        conf = write_categraf_config(  # as in the seed: use_tls with insecure_skip_verify
            tmp_path / "conf", writer_url=prometheus.write_url, token_file=token_file, interval=0.5,
            urls={"http://127.0.0.1:10249/metrics": proxy.url("/metrics"),
                  "https://127.0.0.1:10250/metrics": kubelet.url("/metrics"),
                  "https://127.0.0.1:10250/metrics/cadvisor": kubelet.url("/metrics/cadvisor")},
        )
        async with Agent(load_categraf(conf, env={"HOSTNAME": "node-1"})) as agent:
            await wait_for(lambda: up_values(prometheus) == {"kube-proxy": 1, "kubelet": 0, "cadvisor": 0},
                           what="up 0 for the kubelet jobs")
            errors = {t.url: t.last_error for t in agent.stats().targets}
    assert "401 Unauthorized" in str(errors[kubelet.url("/metrics")])
    assert "bearer_token_file" in str(errors[kubelet.url("/metrics")])
    assert errors[proxy.url("/metrics")] is None
    assert prometheus.query('kubelet_running_pods{job="kubelet"}') == []
    assert prometheus.query('scrape_samples_scraped{job="kubelet"}')[0]["value"][1] == "0"


async def test_a_series_that_disappears_is_stale_in_prometheus_at_once(
    tmp_path: Path, prometheus: Prometheus
) -> None:
    tls = TLSFiles.create(tmp_path / "pki")
    token_file = tmp_path / "token"
    write_private(token_file, b"token-1")
    gone = 'kubeproxy_sync_proxy_rules_duration_seconds_count{job="kube-proxy"}'
    kept = 'kubeproxy_sync_proxy_rules_duration_seconds_sum{job="kube-proxy"}'
    async with metrics_server({"/metrics": KUBELET, "/metrics/cadvisor": ""}, tokens={"token-1"},
                              tls=tls) as kubelet, metrics_server({"/metrics": PROXY}) as proxy:
        conf = write_categraf_config(
            tmp_path / "conf", writer_url=prometheus.write_url, token_file=token_file, interval=0.5,
            urls={"http://127.0.0.1:10249/metrics": proxy.url("/metrics"),
                  "https://127.0.0.1:10250/metrics": kubelet.url("/metrics"),
                  "https://127.0.0.1:10250/metrics/cadvisor": kubelet.url("/metrics/cadvisor")},
        )
        async with Agent(load_categraf(conf, env={"HOSTNAME": "node-1"})):
            await wait_for(lambda: prometheus.query(gone) != [], what="the series to arrive")
            proxy.pages["/metrics"] = PROXY.replace(
                "kubeproxy_sync_proxy_rules_duration_seconds_count 310\n", "")
            # Without a staleness marker Prometheus would keep answering with the last value for 5 minutes.
            await wait_for(lambda: prometheus.query(gone) == [], what="the series to be marked stale")
            assert prometheus.query(kept) != []


async def _run_cli(*args: str, timeout: float = 20.0) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kubescrape", "run", *args, cwd=ROOT,
        env={**os.environ, "HOSTNAME": "node-1"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_run_test_mode_prints_samples_writes_nothing_and_exits_by_result(tmp_path: Path) -> None:
    tls = TLSFiles.create(tmp_path / "pki")
    token_file = tmp_path / "token"
    write_private(token_file, b"token-1")
    writes: list[bytes] = []

    async def receiver(request: web.Request) -> web.Response:
        writes.append(await request.read())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/api/v1/write", receiver)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with metrics_server({"/metrics": KUBELET, "/metrics/cadvisor": cadvisor_text(10**12)},
                                  tokens={"token-1"}, tls=tls) as kubelet, \
                metrics_server({"/metrics": PROXY}) as proxy:
            conf = write_categraf_config(
                tmp_path / "conf", writer_url=f"http://127.0.0.1:{port}/api/v1/write", token_file=token_file,
                urls={"http://127.0.0.1:10249/metrics": proxy.url("/metrics"),
                      "https://127.0.0.1:10250/metrics": kubelet.url("/metrics"),
                      "https://127.0.0.1:10250/metrics/cadvisor": kubelet.url("/metrics/cadvisor")},
            )
            code, out, err = await _run_cli("--config-dir", str(conf), "--test", "--log-level", "error")
            assert code == 0, err
            printed = parse(out)
            names = [line.split("{")[0] for line in out.splitlines()]
            assert names == sorted(names)
            for job, text in (("kubelet", KUBELET), ("kube-proxy", PROXY)):
                got = {(s.name, frozenset(kv for kv in s.labels if kv[0] not in ADDED), format_value(s.value))
                       for s in printed if dict(s.labels).get("job") == job and s.name not in SYNTHETIC}
                assert got == exposed(text), job
            ups = [s for s in printed if s.name == "up"]
            assert len(ups) == 3 and all(s.value == 1 for s in ups)
            assert err.count("up ") == 3 and "3 target(s), 3 up, 0 failed" in err

            write_private(token_file, b"stale-token")
            code, out, err = await _run_cli("--config-dir", str(conf), "--test", "--log-level", "error")
            assert code == 1
            assert err.count("DOWN") == 2 and "401 Unauthorized" in err and "fix:" in err
            down = [s for s in parse(out) if s.name == "up" and s.value == 0]
            assert {dict(s.labels)["job"] for s in down} == {"kubelet", "cadvisor"}
    finally:
        await runner.cleanup()
    assert writes == []  # --test writes nothing


async def test_run_serves_self_metrics_and_stops_cleanly_on_sigterm(
    tmp_path: Path, prometheus: Prometheus
) -> None:
    tls = TLSFiles.create(tmp_path / "pki")
    token_file = tmp_path / "token"
    write_private(token_file, b"token-1")
    listen = f"127.0.0.1:{free_port()}"
    pages = {"/metrics": KUBELET, "/metrics/cadvisor": cadvisor_text(int(time.time() * 1000))}
    async with metrics_server(pages, tokens={"token-1"}, tls=tls) as kubelet, \
            metrics_server({"/metrics": PROXY}) as proxy:
        conf = write_categraf_config(
            tmp_path / "conf", writer_url="http://127.0.0.1:1/unused", token_file=token_file, interval=0.5,
            urls={"http://127.0.0.1:10249/metrics": proxy.url("/metrics"),
                  "https://127.0.0.1:10250/metrics": kubelet.url("/metrics"),
                  "https://127.0.0.1:10250/metrics/cadvisor": kubelet.url("/metrics/cadvisor")},
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "kubescrape", "run", "--config-dir", str(conf), "--writer-url",
            prometheus.write_url, "--listen", listen, "--no-spool", "--log-level", "warning", cwd=ROOT,
            env={**os.environ, "HOSTNAME": "node-1"}, stderr=asyncio.subprocess.PIPE,
        )
        try:
            await wait_for(lambda: up_values(prometheus) == {"kube-proxy": 1, "kubelet": 1, "cadvisor": 1},
                           what="up == 1 from `kubescrape run`")
            body = await asyncio.to_thread(_get, f"http://{listen}/metrics")
            assert 'kubescrape_target_up{target="' + kubelet.url("/metrics") + '"} 1.0' in body
            assert "kubescrape_samples_sent_total" in body
        finally:
            code, err = await terminate(proc, 15)
    assert code == 0, err
    assert "Traceback" not in err


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        return str(r.read().decode())


async def test_sigterm_with_a_backend_that_never_answers_ends_in_time_and_keeps_the_rest(
    tmp_path: Path, prometheus: Prometheus
) -> None:
    # The backend takes requests but never answers: a SIGTERM must still end the agent within
    # --shutdown-timeout (plus at most one request timeout), and what it could not deliver stays in the
    # spool; the next start, with the backend answering again (a proxy to Prometheus), delivers it.
    hanging = True
    released = asyncio.Event()
    requests = 0

    async def backend(request: web.Request) -> web.Response:
        nonlocal requests
        requests += 1
        body = await request.read()
        if hanging:
            await released.wait()  # until the test ends: the agent gives up first
            return web.Response(status=503)
        async with aiohttp.ClientSession() as session, session.post(
            prometheus.write_url, data=body, headers={k: v for k, v in request.headers.items()
                                                      if k.lower().startswith(("content-", "x-prometheus"))}
        ) as answer:
            return web.Response(status=answer.status, body=await answer.read())

    app = web.Application()
    app.router.add_post("/api/v1/write", backend)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    assert site._server is not None and site._server.sockets  # type: ignore[attr-defined]
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    writer_url = f"http://127.0.0.1:{port}/api/v1/write"
    spool = tmp_path / "spool"
    listen = f"127.0.0.1:{free_port()}"
    try:
        async with metrics_server({"/metrics": PROXY}) as proxy:
            conf = write_categraf_config(tmp_path / "conf", writer_url=writer_url, interval=0.5,
                                         urls={"http://127.0.0.1:10249/metrics": proxy.url("/metrics")})

            async def run() -> asyncio.subprocess.Process:
                return await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "kubescrape", "run", "--config-dir", str(conf), "--listen", listen,
                    "--spool-dir", str(spool), "--shutdown-timeout", "2", "--log-level", "info", cwd=ROOT,
                    env={**os.environ, "HOSTNAME": "node-1"}, stderr=asyncio.subprocess.PIPE,
                )

            proc = await run()
            try:
                await wait_for(lambda: requests > 0, timeout=30, what="a request to the backend")
                await asyncio.sleep(1.5)  # more scrapes pile up behind the unanswered request
            finally:
                started = time.monotonic()
                code, err = await terminate(proc, 30)
                took = time.monotonic() - started
            assert code == 0, err
            assert "Traceback" not in err
            assert took < 20, f"SIGTERM took {took:.1f}s with --shutdown-timeout 2\n{err}"
            assert "kept in the spool for the next start" in err, err
            kept = [p for p in spool.rglob("*") if p.is_file() and p.name != "cursor" and p.stat().st_size]
            assert kept, f"nothing left in the spool\n{err}"
            stopped_at = time.time()

            hanging = False
            await asyncio.sleep(1.0)  # nothing scraped in this second: a sample before it is the first run's
            proc = await run()
            try:
                await wait_for(lambda: bool(prometheus.query('up{job="kube-proxy"}', at=stopped_at)),
                               timeout=30, what="the first run's samples, delivered by the second")
            finally:
                await terminate(proc, 30)
    finally:
        released.set()
        await runner.cleanup()


def _metrics(listen: str) -> str:
    try:
        return _get(f"http://{listen}/metrics")
    except OSError:
        return ""
