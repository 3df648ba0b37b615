"""Every long-running task has an owner: a :class:`Supervisor` starts it, restarts it when it fails,
counts and logs the failure, and says which tasks are failing right now (for ``/healthz``).

A failure is an exception out of the task's coroutine. It is counted in
``kubescrape_task_failures_total{task}``, logged with its traceback when the task's state changes (the
first failure, a different error than last time) and at debug level when it repeats, and the task is
started again after an exponential backoff. The task counts as *failing* from the failure until it shows
progress after the restart (its ``progress`` callback returns a larger number than at the failure; a
task without one recovers when it is restarted); the recovery is logged once. A coroutine that returns
normally is done and not restarted. Cancellation (:meth:`Supervisor.stop`) ends a task without counting.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any

from kubescrape.clock import SYSTEM_CLOCK, Backoff, Clock
from kubescrape.selfmon import SelfMetrics

log = logging.getLogger("kubescrape.supervisor")


@dataclass
class _Task:
    name: str
    factory: Callable[[], Coroutine[Any, Any, None]]
    progress: Callable[[], int] | None
    task: asyncio.Task[None] | None = None
    failures: int = 0
    error: str = ""  # the last failure, while failing
    progress_at_failure: int = 0
    restarting: bool = False
    done: bool = False


class Supervisor:
    """Owns a set of named tasks. ``metrics=None`` counts failures only in :attr:`failures`."""

    def __init__(self, *, metrics: SelfMetrics | None = None, clock: Clock = SYSTEM_CLOCK,
                 min_backoff: float = 0.5, max_backoff: float = 30.0,
                 rng: random.Random | None = None) -> None:
        self.metrics = metrics
        self.clock = clock
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self._rng = rng or random.Random()
        self._tasks: dict[str, _Task] = {}

    def start(self, name: str, factory: Callable[[], Coroutine[Any, Any, None]], *,
              progress: Callable[[], int] | None = None) -> asyncio.Task[None]:
        """Run ``factory()`` as task ``name`` (unique among running tasks), restarting it when it fails."""
        old = self._tasks.get(name)
        if old is not None and old.task is not None and not old.task.done():
            raise ValueError(f"task {name!r} is already running")
        t = _Task(name, factory, progress)
        self._tasks[name] = t
        t.task = asyncio.create_task(self._supervise(t), name=name)
        return t.task

    async def _supervise(self, t: _Task) -> None:
        backoff = Backoff(self.min_backoff, self.max_backoff, self._rng)
        while True:
            try:
                await t.factory()
                t.done = True
                return
            except asyncio.CancelledError:
                raise
            except Exception as e:
                text = f"{type(e).__name__}: {e}"
                t.failures += 1
                if self.metrics is not None:
                    self.metrics.task_failures.labels(t.name).inc()
                delay = backoff.next()
                if text != t.error:
                    log.error("task %s failed (restarting in %.1fs): %s", t.name, delay, text, exc_info=e)
                else:
                    log.debug("task %s failed again (restarting in %.1fs): %s", t.name, delay, text)
                t.error = text
                t.progress_at_failure = t.progress() if t.progress is not None else 0
                t.restarting = True
                await self.clock.sleep(delay)
                t.restarting = False
                if t.progress is None:
                    self._recovered(t)

    def _recovered(self, t: _Task) -> None:
        if t.error:
            log.info("task %s recovered after %d failure(s)", t.name, t.failures)
        t.error = ""

    def failing(self) -> dict[str, str]:
        """Tasks failing right now (task name → last error): restarting, or not yet progressing again."""
        out: dict[str, str] = {}
        for t in self._tasks.values():
            if not t.error:
                continue
            if not t.restarting and t.progress is not None and t.progress() > t.progress_at_failure:
                self._recovered(t)
                continue
            out[t.name] = t.error
        return out

    def failures(self, name: str) -> int:
        """How many times task ``name`` failed."""
        t = self._tasks.get(name)
        return t.failures if t is not None else 0

    def running(self, name: str) -> bool:
        t = self._tasks.get(name)
        return t is not None and t.task is not None and not t.task.done()

    async def wait(self, names: Iterable[str], timeout: float) -> None:
        """Wait up to ``timeout`` s for tasks ``names`` to finish by themselves, then stop the rest."""
        tasks = [t.task for n in names if (t := self._tasks.get(n)) is not None and t.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=max(0.0, timeout))
        await self.stop(names)

    async def stop(self, names: Iterable[str] | None = None) -> None:
        """Cancel tasks ``names`` (default: all) and wait for them to end."""
        selected = list(self._tasks) if names is None else [n for n in names if n in self._tasks]
        pairs = [(n, t) for n in selected if (t := self._tasks[n].task) is not None]
        for _, task in pairs:
            task.cancel()
        results = await asyncio.gather(*(task for _, task in pairs), return_exceptions=True)
        for (name, _), result in zip(pairs, results, strict=True):
            if isinstance(result, Exception):  # _supervise catches everything: this would be a bug here
                log.error("task %s ended with %r", name, result)
