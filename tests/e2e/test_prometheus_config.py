"""Differential end to end: ONE prometheus.yml, given unmodified to a real Prometheus (which scrapes and
stores) and to kubescrape (the agent with the loaded file, remote-writing into a second real Prometheus).
The final target label sets and scrape URLs (Prometheus' ``/api/v1/targets``) and the stored series label
sets must be equal.

Prometheus adds ``external_labels`` only when series leave it (remote write, federation), so its side is
read from ``/federate``, which applies them, rather than from its TSDB. The synthetic series (``up``,
``scrape_duration_seconds`` …) are compared too: both sides produce the same five.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from kubescrape.agent import Agent
from kubescrape.config.models import WriterConfig, format_prometheus_duration
from kubescrape.config.prometheus import load_prometheus
from kubescrape.scrape.targets import build_targets, discover
from tests.config.test_prometheus import ERRORS, INTERVALS, TARGET_TABLE
from tests.e2e.helpers import TLSFiles, free_port, metrics_server, terminate
from tests.e2e.prom import Prometheus, running_prometheus

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
STRICTER = {"bad scheme", "bad remote-write url"}

PLAIN = """# TYPE plain_requests_total counter
plain_requests_total{code="200",instance="from-app"} 7
plain_requests_total{code="500",instance="from-app"} 1
# TYPE plain_temperature gauge
plain_temperature 21.5
"""

RELABELED = """# TYPE old_name gauge
old_name{kind="a",debug_id="1"} 1
old_name{kind="b",debug_id="2"} 2
# TYPE noisy_debug gauge
noisy_debug 3
# TYPE kept_total counter
kept_total{env="from-app"} 4
"""

ALT = """# TYPE alt_only gauge
alt_only{path="alt"} 1
# TYPE noisy_other gauge
noisy_other 5
"""

HONORED = """# TYPE honored_metric gauge
honored_metric{job="exposed",instance="exposed-instance"} 1
honored_metric{other="x"} 2
"""


def prometheus_yml(p1: int, p2: int, p3: int, p4: int) -> str:
    return f"""# one file, read unmodified by Prometheus and by kubescrape
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1m
  external_labels:
    cluster: e2e
    env: from-global

scrape_configs:
  - job_name: plain
    static_configs:
      - targets: ["127.0.0.1:{p1}"]
        labels:
          group: one

  - job_name: relabeled
    params:
      module: [m1]
    static_configs:
      - targets: ["127.0.0.1:{p2}", "drop-me:1"]
        labels:
          team: a
      - targets: ["alias-b"]
        labels:
          team: b
    relabel_configs:
      - source_labels: [__address__]
        regex: "drop-me:.*"
        action: drop
      - source_labels: [__address__]
        regex: alias-b
        target_label: __address__
        replacement: "127.0.0.1:{p3}"
      - source_labels: [team]
        regex: b
        target_label: __metrics_path__
        replacement: /alt
      - target_label: __param_x
        replacement: "y z"
      - source_labels: [team, __param_module]
        separator: "-"
        target_label: instance
      - source_labels: [__scheme__]
        target_label: scheme
    metric_relabel_configs:
      - source_labels: [__name__]
        regex: "noisy_.*"
        action: drop
      - source_labels: [__name__]
        regex: old_name
        target_label: __name__
        replacement: new_name
      - regex: debug_.*
        action: labeldrop

  - job_name: honored
    honor_labels: true
    metrics_path: /honored
    static_configs:
      - targets: ["127.0.0.1:{p4}"]
"""


def _key(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


def federated_series(prom: Prometheus) -> set[tuple[tuple[str, str], ...]]:
    import urllib.parse
    import urllib.request

    query = urllib.parse.urlencode({"match[]": '{job=~".+"}'})
    with urllib.request.urlopen(f"{prom.url}/federate?{query}", timeout=30) as r:
        text = r.read().decode()
    out: set[tuple[tuple[str, str], ...]] = set()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.add(_key({"__name__": sample.name, **sample.labels}))
    return out


def stored_series(prom: Prometheus) -> set[tuple[tuple[str, str], ...]]:
    return {_key(s) for s in prom.series('{__name__=~".+"}', start=time.time() - 600, end=time.time() + 60)}


async def _wait(predicate: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(predicate):
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.5)


async def test_one_prometheus_yml_gives_the_same_targets_and_series_as_prometheus(tmp_path: Path) -> None:
    pages = {"/metrics": PLAIN}
    async with metrics_server(pages) as s1, metrics_server({"/metrics": RELABELED}) as s2, \
            metrics_server({"/alt": ALT}) as s3, metrics_server({"/honored": HONORED}) as s4:
        config_file = tmp_path / "prometheus.yml"
        config_file.write_text(prometheus_yml(s1.port, s2.port, s3.port, s4.port))
        text = config_file.read_text()

        # kubescrape's view of the file.
        config = load_prometheus(config_file)
        assert config.warnings == []
        ours_targets = {(_key(dict(t.labels)), t.url) for t in build_targets(config)}

        # The reference: Prometheus with the same file text.
        with running_prometheus(tmp_path / "reference", config_yaml=text) as reference, \
                running_prometheus(tmp_path / "receiver") as receiver:
            def all_up() -> bool:
                active = reference.api("targets", state="active")["activeTargets"]
                return len(active) == 4 and all(t["health"] == "up" for t in active)

            await _wait(all_up)
            active = (await asyncio.to_thread(reference.api, "targets", state="active"))["activeTargets"]
            dropped = (await asyncio.to_thread(reference.api, "targets", state="dropped"))["droppedTargets"]
            theirs_targets = {(_key(t["labels"]), t["scrapeUrl"]) for t in active}
            assert ours_targets == theirs_targets
            assert [t["discoveredLabels"]["__address__"] for t in dropped] == ["drop-me:1"]

            # kubescrape, delivering into the receiver.
            agent_config = config.model_copy(update={"writers": [WriterConfig(url=receiver.write_url)]})
            async with Agent(agent_config, jitter=False):
                await _wait(lambda: len(reference.query("up")) == 4 and len(receiver.query("up")) == 4)
                await asyncio.sleep(2.5)  # a few more scrapes on both sides
            theirs = await asyncio.to_thread(federated_series, reference)
            ours = await asyncio.to_thread(stored_series, receiver)

    assert ours == theirs
    # plain 3 + relabeled/a 3 + relabeled/b 1 + honored 2 scraped series, and 5 synthetic per target.
    assert len(ours) == 9 + 4 * 5
    names = {dict(k)["__name__"] for k in ours}
    # The file's rules really applied: renamed, dropped, honored, conflicts renamed, external labels added.
    assert "new_name" in names and "old_name" not in names
    assert {dict(k).get("kind") for k in ours if dict(k)["__name__"] == "new_name"} == {"a", "b"}
    assert not any(name.startswith("debug_") for k in ours for name, _ in k)
    assert not any(n.startswith("noisy_") for n in names)
    assert _key({"__name__": "honored_metric", "job": "exposed", "instance": "exposed-instance",
                 "cluster": "e2e", "env": "from-global"}) in ours
    assert _key({"__name__": "plain_temperature", "job": "plain", "instance": f"127.0.0.1:{s1.port}",
                 "group": "one", "cluster": "e2e", "env": "from-global"}) in ours
    assert _key({"__name__": "plain_requests_total", "code": "200", "exported_instance": "from-app",
                 "job": "plain", "instance": f"127.0.0.1:{s1.port}", "group": "one", "cluster": "e2e",
                 "env": "from-global"}) in ours
    assert _key({"__name__": "kept_total", "env": "from-app", "job": "relabeled", "instance": "a-m1",
                 "team": "a", "scheme": "http", "cluster": "e2e"}) in ours
    assert _key({"__name__": "alt_only", "path": "alt", "job": "relabeled", "instance": "b-m1",
                 "team": "b", "scheme": "http", "cluster": "e2e", "env": "from-global"}) in ours
    # Prometheus really asked for the rewritten path and params, as kubescrape did.
    assert {t[1] for t in ours_targets} == {
        f"http://127.0.0.1:{s1.port}/metrics",
        f"http://127.0.0.1:{s2.port}/metrics?module=m1&x=y+z",
        f"http://127.0.0.1:{s3.port}/alt?module=m1&x=y+z",
        f"http://127.0.0.1:{s4.port}/honored",
    }


# --- the loader's edge cases, checked against the real Prometheus -------------------------------------


def _active_targets(prom: Prometheus, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 60
    while True:
        active: list[dict[str, Any]] = prom.api("targets", state="active")["activeTargets"]
        if len(active) >= count or time.monotonic() > deadline:
            return active
        time.sleep(0.5)


def _targets_both_ways(tmp_path: Path, text: str, *, discovered: bool = True) -> tuple[
    set[tuple[Any, ...]], set[tuple[Any, ...]]
]:
    tmp_path.mkdir()
    config_file = tmp_path / "prometheus.yml"
    config_file.write_text(text)
    config = load_prometheus(config_file)
    ours = {(_key(dict(t.labels)), t.url, format_prometheus_duration(t.interval),
             format_prometheus_duration(t.timeout)) for t in build_targets(config)}
    ours_discovered = {(_key(d.labels), d.target is not None) for d in discover(config)}
    with running_prometheus(tmp_path / "reference", config_yaml=text) as reference:
        active = _active_targets(reference, len(ours))
        dropped = reference.api("targets", state="dropped")["droppedTargets"]
    theirs = {(_key(t["labels"]), t["scrapeUrl"], t["scrapeInterval"], t["scrapeTimeout"]) for t in active}
    # What the status pages show as discovered labels is what Prometheus shows.
    theirs_discovered = {(_key(t["discoveredLabels"]), True) for t in active}
    theirs_discovered |= {(_key(t["discoveredLabels"]), False) for t in dropped}
    if discovered:
        assert ours_discovered == theirs_discovered
    return ours, theirs


def test_the_snippet_table_gives_prometheus_target_labels_urls_and_intervals(tmp_path: Path) -> None:
    scrape_configs: list[dict[str, Any]] = []
    for i, (_, snippet, _expected) in enumerate(TARGET_TABLE):
        for job in yaml.safe_load(textwrap.dedent(snippet))["scrape_configs"]:
            job["job_name"] = f"case{i}_{job['job_name']}"
            scrape_configs.append(job)
    text = yaml.safe_dump({"global": {"scrape_interval": "1h"}, "scrape_configs": scrape_configs})
    ours, theirs = _targets_both_ways(tmp_path / "table", text)
    assert len(ours) == sum(len(expected) for _, _, expected in TARGET_TABLE)
    assert ours == theirs

    # Prometheus 2.42 shows a relabeled __scrape_interval__ among the discovered labels of the target it
    # changed (d:1 shows 2m); kubescrape shows the labels before relabeling, as documented.
    ours, theirs = _targets_both_ways(tmp_path / "intervals", textwrap.dedent(INTERVALS), discovered=False)
    assert len(ours) == 4
    assert ours == theirs


@pytest.mark.parametrize(("case", "text"), [(e[0], e[1]) for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_prometheus_refuses_what_the_loader_refuses(tmp_path: Path, case: str, text: str) -> None:
    path = tmp_path / "prometheus.yml"
    path.write_text(text.lstrip("\n"))
    result = subprocess.run([PROMTOOL, "check", "config", str(path)], capture_output=True, text=True,
                            timeout=60, check=False)
    if case in STRICTER:
        # Prometheus loads these and fails every scrape or send instead; refusing them at load is kinder.
        assert result.returncode == 0, result.stdout + result.stderr
    else:
        assert result.returncode != 0, result.stdout + result.stderr


async def _kubescrape(*args: str) -> tuple[int, str, str]:
    root = Path(__file__).resolve().parents[2]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kubescrape", *args, cwd=root, env={**os.environ, "PYTHONPATH": str(root)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_run_test_config_scrapes_the_file_and_strict_refuses_what_is_not_implemented(
    tmp_path: Path
) -> None:
    async with metrics_server({"/metrics": RELABELED}) as server:
        path = tmp_path / "prometheus.yml"
        path.write_text(textwrap.dedent(f"""
            global:
              external_labels: {{cluster: e2e}}
            rule_files: [rules.yml]
            scrape_configs:
              - job_name: app
                static_configs: [{{targets: ["127.0.0.1:{server.port}"]}}]
                metric_relabel_configs:
                  - source_labels: [__name__]
                    regex: old_name
                    target_label: __name__
                    replacement: new_name
            """).lstrip("\n"))
        code, out, err = await _kubescrape("run", "--test", "--config", str(path), "--listen", "")
        assert code == 0, err
        instance = f"127.0.0.1:{server.port}"
        assert (f'new_name{{cluster="e2e",debug_id="1",instance="{instance}",job="app",kind="a"}} 1'
                in out.splitlines())
        assert f'up{{cluster="e2e",instance="{instance}",job="app"}} 1' in out.splitlines()
        assert f"{path}:3: rule_files is not implemented by kubescrape; ignored" in err

        code, out, err = await _kubescrape("run", "--test", "--strict", "--config", str(path), "--listen", "")
        assert code == 2 and out == ""
        assert f"error: {path}:3 [rule_files]: rule_files is not implemented by kubescrape" in err


async def test_run_config_delivers_over_the_files_remote_write_with_its_rules_and_scrapes_tls(
    tmp_path: Path, prometheus: Prometheus
) -> None:
    tls = TLSFiles.create(tmp_path / "pki")
    (tmp_path / "token").write_text("token-1\n")
    async with metrics_server({"/metrics": PLAIN}, tokens={"token-1"}, tls=tls) as server:
        path = tmp_path / "prometheus.yml"
        path.write_text(textwrap.dedent(f"""
            global:
              scrape_interval: 1s
              external_labels: {{cluster: e2e}}
            scrape_configs:
              - job_name: secure
                scheme: https
                authorization:
                  credentials_file: token
                tls_config:
                  ca_file: pki/ca.crt
                  server_name: localhost
                static_configs: [{{targets: ["127.0.0.1:{server.port}"]}}]
            remote_write:
              - url: {prometheus.write_url}
                remote_timeout: 10s
                headers: {{X-Scope-OrgID: tenant-1}}
                queue_config: {{max_samples_per_send: 100, max_shards: 2, min_backoff: 10ms}}
                write_relabel_configs:
                  - source_labels: [__name__]
                    regex: plain_temperature
                    action: drop
                  - source_labels: [cluster]
                    target_label: written_for
            """).lstrip("\n"))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "kubescrape", "run", "--config", str(path), "--listen", "", "--no-spool",
            "--log-level", "warning", cwd=Path(__file__).resolve().parents[2],
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
            stderr=asyncio.subprocess.PIPE)
        try:
            await _wait(lambda: prometheus.query('up{job="secure",cluster="e2e"} == 1'))
            series = await asyncio.to_thread(prometheus.series, '{job="secure"}')
        finally:
            code, err = await terminate(proc, 30)
    assert code == 0, err
    assert "Traceback" not in err
    names = {s["__name__"] for s in series}
    assert names >= {"plain_requests_total", "up"} and "plain_temperature" not in names
    assert all(s["cluster"] == "e2e" and s["instance"] == f"127.0.0.1:{server.port}" for s in series)
    assert all(s["written_for"] == "e2e" for s in series)  # write_relabel_configs run after external_labels
    assert all(r.get("Authorization") == "Bearer token-1" for r in server.requests)


async def test_the_same_file_remote_written_by_prometheus_agent_and_by_kubescrape(tmp_path: Path) -> None:
    """The whole remote-write path, external labels and write_relabel_configs included: Prometheus in
    agent mode and kubescrape each run the file unmodified and write to its remote_write URL, served
    first by one receiver, then by a fresh one on the same port."""
    port = free_port()
    async with metrics_server({"/metrics": PLAIN}) as s1, metrics_server({"/metrics": RELABELED}) as s2, \
            metrics_server({"/alt": ALT}) as s3, metrics_server({"/honored": HONORED}) as s4:
        text = prometheus_yml(s1.port, s2.port, s3.port, s4.port) + textwrap.dedent(f"""
            remote_write:
              - url: http://127.0.0.1:{port}/api/v1/write
                queue_config:
                  batch_send_deadline: 1s
                write_relabel_configs:
                  - source_labels: [__name__]
                    regex: plain_requests_total
                    action: drop
                  - source_labels: [job, env]
                    separator: /
                    target_label: origin
            """)
        config_file = tmp_path / "prometheus.yml"
        config_file.write_text(text)
        config = load_prometheus(config_file)
        assert [w.split(": ", 1)[1] for w in config.warnings] == [
            "remote_write[0].queue_config.batch_send_deadline is not implemented by kubescrape; ignored"]

        def received(receiver: Prometheus) -> bool:
            return len(receiver.query("up == 1")) == 4

        with running_prometheus(tmp_path / "receiver-a", port=port) as receiver:
            with running_prometheus(tmp_path / "agent", config_yaml=text, agent=True):
                await _wait(lambda: received(receiver))
                await asyncio.sleep(2.5)
            theirs = await asyncio.to_thread(stored_series, receiver)
        with running_prometheus(tmp_path / "receiver-b", port=port) as receiver:
            async with Agent(config, jitter=False):
                await _wait(lambda: received(receiver))
                await asyncio.sleep(2.5)
            ours = await asyncio.to_thread(stored_series, receiver)

    assert ours == theirs
    names = {dict(k)["__name__"] for k in ours}
    assert "plain_requests_total" not in names and "plain_temperature" in names
    origins = {dict(k).get("origin") for k in ours}
    # honored_metric keeps its exposed job (honor_labels); kept_total its exposed env.
    assert origins == {"plain/from-global", "relabeled/from-global", "relabeled/from-app",
                       "honored/from-global", "exposed/from-global"}


async def test_doctor_config_checks_every_target_of_the_file(tmp_path: Path) -> None:
    tls = TLSFiles.create(tmp_path / "pki")
    (tmp_path / "token").write_text("token-1\n")
    async with metrics_server({"/metrics": PLAIN}, tokens={"token-1"}, tls=tls) as server:
        def config(token_file: str) -> Path:
            path = tmp_path / f"{token_file}.yml"
            path.write_text(textwrap.dedent(f"""
                scrape_configs:
                  - job_name: secure
                    scheme: https
                    bearer_token_file: {token_file}
                    tls_config: {{ca_file: pki/ca.crt}}
                    static_configs: [{{targets: ["127.0.0.1:{server.port}"]}}]
                """).lstrip("\n"))
            return path

        (tmp_path / "wrong").write_text("token-2\n")
        code, out, err = await _kubescrape("doctor", "--config", str(config("token")), "--json")
        assert code == 0, out + err
        code, out, err = await _kubescrape("doctor", "--config", str(config("wrong")))
        assert code == 1, out + err
        assert "401" in out
