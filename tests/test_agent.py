from __future__ import annotations

import asyncio
import logging
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import pytest

from kubescrape.agent import Agent, parse_listen, render_chunks, run_command, writer_settings
from kubescrape.config.models import AgentConfig, GlobalConfig, InstanceConfig, WriterConfig, WriterOptions
from kubescrape.errors import ConfigError
from kubescrape.remote_write import Chunk
from kubescrape.remote_write.encode import encode_labels, encode_timeseries
from tests.e2e.helpers import free_port, metrics_server, write_categraf_config

EXPOSITION = 'kubelet_running_pods 7\nhttp_requests_total{code="200"} 1027\n'


class ListSink:
    """Collects what the agent appends."""

    def __init__(self) -> None:
        self.chunks: list[Chunk] = []

    async def append(self, chunks: Sequence[Chunk]) -> None:
        self.chunks.extend(chunks)


def config_for(*urls: str, interval: float = 0.2) -> AgentConfig:
    return AgentConfig(
        global_=GlobalConfig(hostname="node-1", interval=interval),
        instances=[InstanceConfig(urls=[u], labels={"job": f"job{i}"}, timeout=1.0)
                   for i, u in enumerate(urls)],
    )


async def wait_until(predicate: object, timeout: float = 5.0) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


async def test_agent_scrapes_every_target_and_reports_stats() -> None:
    sink = ListSink()
    async with metrics_server({"/metrics": EXPOSITION}) as server:
        dead = f"http://127.0.0.1:{free_port()}/metrics"
        config = config_for(server.url("/metrics"), dead)
        async with Agent(config, sink=sink, jitter=False) as agent:
            await wait_until(lambda: all(s.scrapes >= 2 for s in agent.stats().targets))
            stats = agent.stats()
    by_url = {t.url: t for t in stats.targets}
    assert by_url[server.url("/metrics")].up is True
    assert by_url[server.url("/metrics")].samples == 2
    assert by_url[dead].up is False
    assert "refused" in str(by_url[dead].last_error)
    assert stats.targets_up == 1
    assert stats.failures >= 2 and stats.scrapes >= 4
    text = render_chunks(sink.chunks)
    assert 'kubelet_running_pods{' in text
    up_lines = [line for line in text.splitlines() if line.startswith("up{")]
    assert any('job="job0"' in line and float(line.split()[-1]) == 1 for line in up_lines)
    assert any('job="job1"' in line and float(line.split()[-1]) == 0 for line in up_lines)


async def test_stop_ends_every_loop_and_scraping_stops() -> None:
    sink = ListSink()
    async with metrics_server({"/metrics": EXPOSITION}) as server:
        agent = Agent(config_for(server.url("/metrics")), sink=sink, jitter=False)
        await agent.start()
        await wait_until(lambda: len(server.requests) >= 1)
        await agent.stop()
        seen = len(server.requests)
        await asyncio.sleep(0.5)
    assert len(server.requests) == seen
    assert all(loop._task is None for loop in agent.loops)


async def test_agent_without_writers_refuses_to_start() -> None:
    agent = Agent(config_for("http://127.0.0.1:1/metrics"))
    with pytest.raises(ConfigError, match="no remote-write endpoint"):
        await agent.start()
    await agent.stop()


async def test_self_metrics_listener() -> None:
    async with metrics_server({"/metrics": EXPOSITION}) as server:
        agent = Agent(config_for(server.url("/metrics")), sink=ListSink(), listen="127.0.0.1:0", jitter=False)
        async with agent:
            await wait_until(lambda: agent.stats().scrapes >= 1)
            assert agent.listen_address is not None
            host, port = agent.listen_address
            body = await asyncio.to_thread(_get, f"http://{host}:{port}/metrics")
            health = await asyncio.to_thread(_get, f"http://{host}:{port}/healthz")
            live = await asyncio.to_thread(_get, f"http://{host}:{port}/livez")
    assert "kubescrape_scrapes_total" in body
    assert f'target="{server.url("/metrics")}"' in body
    assert health.startswith("ok: 1/1 targets up")
    assert live == "alive\n"


async def test_listener_on_a_busy_port_is_a_config_error() -> None:
    async with metrics_server({"/metrics": EXPOSITION}) as server:
        agent = Agent(config_for(server.url("/metrics")), sink=ListSink(), listen=f"127.0.0.1:{server.port}")
        with pytest.raises(ConfigError, match="--listen"):
            await agent.start()
        await agent.stop()


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        return str(r.read().decode())


def test_render_chunks_sorts_and_drops_name_label() -> None:
    chunks = [Chunk(
        encode_timeseries(encode_labels([("__name__", "b"), ("x", "1")]), 2.0, 1000)
        + encode_timeseries(encode_labels([("__name__", "a"), ("y", 'q"t')]), 1.5, 1000), 2)]
    assert render_chunks(chunks) == 'a{y="q\\"t"} 1.5\nb{x="1"} 2\n'
    assert render_chunks(chunks, timestamps=True).splitlines()[0] == 'a{y="q\\"t"} 1.5 1000'


def test_writer_settings_from_config() -> None:
    config = AgentConfig(
        writer_opt=WriterOptions(batch=500, chan_size=7000),
        writers=[
            WriterConfig(url="http://10.0.0.1:19000/prometheus/v1/write", basic_auth_user="u",
                         basic_auth_pass="p", headers={"X-A": "1"}, timeout=3, max_retries=4,
                         tls_server_name="rw.example"),
            WriterConfig(url="http://10.0.0.1:19000/prometheus/v1/write"),
        ],
    )
    first, second = writer_settings(config)
    assert first.name == "10.0.0.1:19000/prometheus/v1/write"
    assert second.name == first.name + "#2"
    assert first.basic_auth == ("u", "p") and second.basic_auth is None
    assert first.headers == (("X-A", "1"),)
    assert first.batch == 500 and first.queue_capacity == 7000 and first.timeout == 3
    assert first.max_retries == 4 and second.max_retries == -1
    assert first.server_name == "rw.example" and second.server_name is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.1:9101", ("127.0.0.1", 9101)), (":9101", ("0.0.0.0", 9101)), ("[::1]:80", ("::1", 80))],
)
def test_parse_listen(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["9101", "host:", "host:99999", "host:x"])
def test_parse_listen_rejects(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_listen(text)


def _run(config_dir: Path, **overrides: object) -> int:
    args: dict[str, object] = dict(
        config_dir=config_dir, writer_urls=[], test=True, listen="", spool_dir=config_dir / "spool",
        spool_max_bytes=1 << 20, spool=False, shutdown_timeout=1.0, log_level="warning",
    )
    args.update(overrides)
    return run_command(**args)  # type: ignore[arg-type]


def test_run_command_config_error_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(tmp_path / "missing") == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "fix:" in err


def test_run_command_bad_log_level_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(tmp_path, log_level="loud") == 2
    assert "unknown log level" in capsys.readouterr().err


def test_run_test_mode_with_unreachable_targets_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    write_categraf_config(
        tmp_path, writer_url=f"http://127.0.0.1:{free_port()}/api/v1/write",
        urls={"http://127.0.0.1:10249/metrics": f"http://127.0.0.1:{port}/metrics",
              "https://127.0.0.1:10250/metrics": f"https://127.0.0.1:{port}/metrics",
              "https://127.0.0.1:10250/metrics/cadvisor": f"https://127.0.0.1:{port}/metrics/cadvisor"},
        token_file=tmp_path / "token",
    )
    (tmp_path / "token").write_text("t")
    assert _run(tmp_path) == 1
    out = capsys.readouterr()
    assert out.out.count("up{") == 3 and all(
        float(line.split()[-1]) == 0 for line in out.out.splitlines() if line.startswith("up{"))
    assert out.err.count("DOWN") == 3
    assert "refused" in out.err and "fix:" in out.err


async def test_first_delivery_and_periodic_summary_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    from tests.remote_write.receiver import running_receiver

    async with metrics_server({"/metrics": EXPOSITION}) as server, running_receiver() as rec:
        config = AgentConfig(
            global_=GlobalConfig(hostname="node-1", interval=0.2),
            instances=[InstanceConfig(urls=[server.url("/metrics")], labels={"job": "j"}, timeout=0.2)],
            writers=[WriterConfig(url=rec.url)],
        )
        with caplog.at_level(logging.INFO):
            async with Agent(config, jitter=False, summary_interval=0.3) as agent:
                await wait_until(lambda: "summary:" in caplog.text and "sent" in caplog.text
                                 and agent.stats().writers[0].sent > 0)
                summary = agent.summary()
    firsts = [r for r in caplog.records if "first delivery succeeded" in r.getMessage()]
    assert len(firsts) == 1, "logged once per writer"
    assert "1/1 targets up" in summary and f"writer '{agent.stats().writers[0].name}': sent" in summary


async def test_healthz_policy_degraded_when_targets_are_down() -> None:
    dead = f"http://127.0.0.1:{free_port()}/metrics"
    agent = Agent(config_for(dead), sink=ListSink(), jitter=False)
    assert agent.healthy() == (False, "stopped")
    async with agent:
        await wait_until(lambda: agent.stats().scrapes >= 1)
        ok, text = agent.healthy()
    assert ok and text.startswith("degraded: 0/1 targets up")


def test_run_command_quiet_turns_the_summary_off(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: dict[str, object] = {}

    async def fake_serve(config: AgentConfig, **kw: object) -> int:
        seen.update(kw)
        return 0

    monkeypatch.setattr("kubescrape.agent._serve", fake_serve)
    write_categraf_config(tmp_path, writer_url="http://127.0.0.1:9/api/v1/write",
                          urls={"http://127.0.0.1:10249/metrics": "http://127.0.0.1:9/metrics"})
    assert _run(tmp_path, test=False, quiet=True, summary_interval=5.0) == 0
    assert seen["summary_interval"] is None
    assert _run(tmp_path, test=False, summary_interval=5.0) == 0
    assert seen["summary_interval"] == 5.0
