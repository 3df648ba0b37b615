from __future__ import annotations

import asyncio
import logging

import pytest

from kubescrape.selfmon import SelfMetrics
from kubescrape.supervisor import Supervisor
from kubescrape.testing import FakeClock


async def test_a_failing_task_is_restarted_counted_logged_once_and_recovers(
        caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    m = SelfMetrics()
    sup = Supervisor(metrics=m, clock=clock, min_backoff=1.0, max_backoff=8.0)
    runs = 0
    progress = 0
    release = asyncio.Event()

    async def work() -> None:
        nonlocal runs, progress
        runs += 1
        if runs <= 4:
            raise OSError("disk on fire")
        progress += 1
        await release.wait()

    with caplog.at_level(logging.DEBUG, logger="kubescrape.supervisor"):
        sup.start("dispatcher w", work, progress=lambda: progress)
        while runs < 5:
            await asyncio.sleep(0)
            assert runs == 5 or "dispatcher w" in sup.failing()
        assert sup.failing() == {}, "progress after the restart ends the failure"
        release.set()
        await sup.stop()
    assert sup.failures("dispatcher w") == 4
    assert m.registry.get_sample_value("kubescrape_task_failures_total", {"task": "dispatcher w"}) == 4
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "disk on fire" in errors[0].getMessage(), "logged once per change of state"
    assert any("recovered after 4 failure(s)" in r.getMessage() for r in caplog.records)
    # backoff between restarts: exponential from 1 s with jitter, capped at 8 s
    waits = [s for s in clock.slept if s > 0]
    assert len(waits) == 4 and all(0.5 <= w <= 8.0 for w in waits) and waits[-1] > waits[0]


async def test_a_task_that_returns_is_done_and_cancel_is_not_a_failure() -> None:
    sup = Supervisor(clock=FakeClock())
    done: list[str] = []

    async def once() -> None:
        done.append("once")

    async def forever() -> None:
        await asyncio.Event().wait()

    first = sup.start("once", once)
    sup.start("forever", forever)
    await first
    assert done == ["once"] and not sup.running("once") and sup.running("forever")
    with pytest.raises(ValueError):
        sup.start("forever", forever)
    await sup.stop()
    assert not sup.running("forever") and sup.failures("forever") == 0 and sup.failing() == {}


async def test_wait_lets_tasks_finish_then_cancels_the_rest() -> None:
    sup = Supervisor(clock=FakeClock())
    finished: list[str] = []

    async def quick() -> None:
        await asyncio.sleep(0)
        finished.append("quick")

    async def stuck() -> None:
        await asyncio.Event().wait()

    sup.start("quick", quick)
    sup.start("stuck", stuck)
    await asyncio.wait_for(sup.wait(["quick", "stuck"], timeout=0.05), 5)
    assert finished == ["quick"] and not sup.running("stuck")
