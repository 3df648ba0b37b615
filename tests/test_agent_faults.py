"""Fault injection into a running agent: exceptions from the spool (put, take, read) and from the sender.

Each fault is switched on while the agent scrapes a real HTTP target and delivers to a real receiver on
loopback with the spool on. While it lasts the failing task is restarted (and counted) or the failed
appends are counted as drops, and ``/healthz`` answers 503 with the reason; once it is switched off the
agent recovers by itself and ``/healthz`` answers 200. Every sample stays accounted for throughout, and
shutting down never hangs.
"""

from __future__ import annotations

import asyncio
import errno
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kubescrape.agent import Agent
from kubescrape.config.models import AgentConfig, GlobalConfig, InstanceConfig, WriterConfig
from kubescrape.remote_write.queue import RemoteWrite
from kubescrape.remote_write.sender import Sender
from kubescrape.remote_write.spool import Spool, _Segment
from tests.e2e.helpers import metrics_server
from tests.remote_write.receiver import running_receiver

EXPOSITION = 'kubelet_running_pods 7\nhttp_requests_total{code="200"} 1027\n'


class Switch:
    """A fault that raises ``error`` while on."""

    def __init__(self, error: BaseException) -> None:
        self.error = error
        self.on = False
        self.hits = 0

    def check(self) -> None:
        if self.on:
            self.hits += 1
            raise self.error


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return int(r.status), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


async def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {timeout}s: {what}")
        await asyncio.sleep(0.02)


def install(where: str, switch: Switch, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``where`` (put, take, read, send) raise while the switch is on."""
    if where == "put":
        original_write = Spool._write

        def write(self: Spool, *args: Any) -> Any:
            switch.check()
            return original_write(self, *args)

        monkeypatch.setattr(Spool, "_write", write)
    elif where == "take":
        original_take = Spool.take

        def take(self: Spool, max_samples: int) -> Any:
            switch.check()
            return original_take(self, max_samples)

        monkeypatch.setattr(Spool, "take", take)
    elif where == "read":
        original_read = _Segment.read

        def read(self: _Segment, offset: int, length: int) -> bytes:
            switch.check()
            return original_read(self, offset, length)

        monkeypatch.setattr(_Segment, "read", read)
    else:
        original_send = Sender.send_once

        async def send_once(self: Sender, body: bytes, samples: int) -> None:
            switch.check()
            await original_send(self, body, samples)

        monkeypatch.setattr(Sender, "send_once", send_once)


CASES = [
    # where, error, the task that fails (None: no task fails, appends are counted as dropped), reason text
    ("put", OSError(errno.ENOSPC, "No space left on device"), None, "cannot persist"),
    ("put", RuntimeError("flusher bug"), "spool", "RuntimeError: flusher bug"),
    ("take", OSError(errno.EIO, "Input/output error"), "dispatcher", "Input/output error"),
    ("take", RuntimeError("take bug"), "dispatcher", "RuntimeError: take bug"),
    ("read", OSError(errno.EIO, "Input/output error"), "dispatcher", "Input/output error"),
    ("read", ValueError("bad frame"), "dispatcher", "ValueError: bad frame"),
    ("send", OSError(errno.ECONNRESET, "reset"), "dispatcher", "reset"),
    ("send", RuntimeError("sender bug"), "dispatcher", "RuntimeError: sender bug"),
]


@pytest.mark.parametrize(("where", "error", "task", "reason"), CASES,
                         ids=[f"{c[0]}-{type(c[1]).__name__}" for c in CASES])
async def test_fault_is_counted_reported_and_recovered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str, error: BaseException, task: str | None,
    reason: str,
) -> None:
    switch = Switch(error)
    install(where, switch, monkeypatch)
    async with metrics_server({"/metrics": EXPOSITION}) as server, running_receiver() as rec:
        config = AgentConfig(
            global_=GlobalConfig(hostname="node-1", interval=0.2),
            instances=[InstanceConfig(urls=[server.url("/metrics")], labels={"job": "j"}, timeout=1.0)],
            writers=[WriterConfig(url=rec.url, min_backoff=0.05, max_backoff=0.2)],
        )
        agent = Agent(config, spool_dir=tmp_path / "spool", listen="127.0.0.1:0", jitter=False,
                      shutdown_timeout=2.0)
        agent.supervisor.min_backoff, agent.supervisor.max_backoff = 0.05, 0.3
        await agent.start()
        try:
            assert agent.listen_address is not None
            healthz = "http://{}:{}/healthz".format(*agent.listen_address)
            rw = agent._remote_write
            assert isinstance(rw, RemoteWrite)
            (writer,) = rw._writers
            if where == "read":
                assert writer.spool is not None
                writer.spool.cache_bytes = 0  # every record is read back from its segment file
            await wait_until(lambda: agent.stats().writers[0].sent > 0, "a first delivery")
            assert agent.healthy()[0]

            switch.on = True
            await wait_until(lambda: not agent.healthy()[0] and switch.hits >= 2, "unhealthy while faulty")
            status, text = await asyncio.to_thread(http_get, healthz)
            assert status == 503 and text.startswith("unhealthy:"), text
            assert reason in text, text
            w = agent.stats().writers[0]
            task_name = f"{task} {w.name}" if task else None
            failures = agent.metrics.registry.get_sample_value(
                "kubescrape_task_failures_total", {"task": task_name or ""}) or 0.0
            if task_name is not None:
                assert failures >= 1 and agent.supervisor.failures(task_name) >= 1
                assert f"task {task_name!r} failed and is restarting" in text
            else:
                assert w.dropped_by_reason.get("spool_full", 0) > 0, w
            assert w.appended == w.sent + w.dropped + w.evicted + w.pending_samples, w

            switch.on = False
            sent_before = w.sent
            await wait_until(lambda: agent.healthy()[0], "healthy again once the fault is gone")
            await wait_until(lambda: agent.stats().writers[0].sent > sent_before, "delivering again")
            status, text = await asyncio.to_thread(http_get, healthz)
            assert status == 200 and text.startswith("ok:"), text
        finally:
            switch.on = False
            await asyncio.wait_for(agent.stop(), 15)
        w = agent.stats().writers[0]
        assert w.appended == w.sent + w.dropped + w.evicted + w.pending_samples, w
        assert w.evicted == 0
        if task_name is None:
            assert set(w.dropped_by_reason) == {"spool_full"}
        elif where == "put":
            assert set(w.dropped_by_reason) <= {"spool_error"}
        else:
            assert w.dropped == 0, "a failed round is sent again, not dropped"


async def test_a_failing_scrape_task_is_restarted_and_reported_as_degraded(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from kubescrape.scrape.loop import ScrapeLoop
    from tests.test_agent import ListSink

    switch = Switch(OverflowError("cannot convert float infinity to integer"))
    original = ScrapeLoop.scrape_and_append

    async def scrape_and_append(self: ScrapeLoop) -> Any:
        switch.check()
        return await original(self)

    monkeypatch.setattr(ScrapeLoop, "scrape_and_append", scrape_and_append)
    async with metrics_server({"/metrics": EXPOSITION}) as server:
        config = AgentConfig(
            global_=GlobalConfig(hostname="node-1", interval=0.2),
            instances=[InstanceConfig(urls=[server.url("/metrics")], labels={"job": "j"}, timeout=0.2)],
        )
        agent = Agent(config, sink=ListSink(), jitter=False)
        agent.supervisor.min_backoff, agent.supervisor.max_backoff = 0.05, 0.2
        async with agent:
            await wait_until(lambda: agent.stats().scrapes >= 1, "a first scrape")
            switch.on = True
            task = f"scrape {server.url('/metrics')}"
            await wait_until(lambda: agent.supervisor.failures(task) >= 2, "restarted after failing")
            ok, text = agent.healthy()
            assert ok and text.startswith("degraded:") and "OverflowError" in text, text
            assert agent.metrics.registry.get_sample_value(
                "kubescrape_task_failures_total", {"task": task}) == agent.supervisor.failures(task)
            switch.on = False
            scrapes = agent.stats().scrapes
            await wait_until(lambda: agent.stats().scrapes > scrapes + 1, "scraping again")
            ok, text = agent.healthy()
            assert ok and text.startswith("ok:"), text
