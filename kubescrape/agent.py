"""The agent: configuration → targets → one scrape loop per target → remote write, plus the self-metrics
listener and clean shutdown. ``kubescrape run`` is :func:`run_command`; tests and the demo use
:class:`Agent` directly.

The agent owns every task it starts, through one :class:`~kubescrape.supervisor.Supervisor`: the scrape
loops, each writer's dispatcher and spool flusher, the periodic summary. A task that fails is counted
(``kubescrape_task_failures_total{task}``), logged when its state changes and restarted with backoff.
:meth:`Agent.healthy` is the ``/healthz`` policy (README, "Health and accounting"): *unhealthy* (503)
while a writer cannot persist or deliver, *degraded* (200) while targets are down or a scrape task is
restarting, *ok* (200) otherwise.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TextIO

from kubescrape._aiohttp import web
from kubescrape._memory import trim_periodically, tune_allocator
from kubescrape._signals import stop_on_signals
from kubescrape.clock import SYSTEM_CLOCK, Clock
from kubescrape.config.categraf import load_categraf
from kubescrape.config.logfile import LOG_FORMAT, log_handler
from kubescrape.config.models import AgentConfig, WriterConfig, has_discovery
from kubescrape.errors import ConfigError, KubescrapeError
from kubescrape.remote_write import Chunk, Sink
from kubescrape.remote_write.encode import decode_write_request
from kubescrape.remote_write.queue import RemoteWrite, WriterSettings, WriterStats
from kubescrape.scrape.loop import ScrapeClient, ScrapeLoop, ScrapeReport, TargetStats, hostname_seed
from kubescrape.scrape.parser import Sample, render
from kubescrape.scrape.targets import Target, build_targets
from kubescrape.selfmon import SelfMetrics, make_app
from kubescrape.supervisor import Supervisor

if TYPE_CHECKING:
    from kubescrape.discovery.shard import Sharder
    from kubescrape.scrape.discovered import DiscoveredScraping

__all__ = ["Agent", "AgentStats", "render_chunks", "run_command", "writer_settings"]

log = logging.getLogger("kubescrape.agent")


@dataclass
class AgentStats:
    """A snapshot of the agent: per target state, totals, and per writer delivery numbers."""

    targets: list[TargetStats]
    writers: list[WriterStats] = field(default_factory=list)

    @property
    def targets_up(self) -> int:
        return sum(1 for t in self.targets if t.up)

    @property
    def scrapes(self) -> int:
        return sum(t.scrapes for t in self.targets)

    @property
    def failures(self) -> int:
        return sum(t.failures for t in self.targets)

    @property
    def samples(self) -> int:
        """Samples (after relabeling) in the latest scrape of every target."""
        return sum(t.samples for t in self.targets)


def writer_settings(config: AgentConfig) -> list[WriterSettings]:
    """Delivery settings for every ``[[writers]]`` entry. The name (also the spool directory) is the URL's
    host and path, so it stays the same across restarts."""
    out: list[WriterSettings] = []
    seen: dict[str, int] = {}
    for w in config.writers:
        name = _writer_name(w)
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            name = f"{name}#{seen[name]}"
        out.append(WriterSettings(
            url=w.url,
            name=name,
            headers=tuple(w.headers.items()),
            basic_auth=(w.basic_auth_user, w.basic_auth_pass) if w.basic_auth_user else None,
            timeout=w.timeout,
            dial_timeout=w.dial_timeout,
            batch=config.writer_opt.batch,
            queue_capacity=config.writer_opt.chan_size,
            min_shards=w.min_shards,
            max_shards=w.max_shards,
            min_backoff=w.min_backoff,
            max_backoff=w.max_backoff,
            ca_file=w.tls_ca,
            cert_file=w.tls_cert,
            key_file=w.tls_key,
            insecure_skip_verify=w.insecure_skip_verify,
            server_name=w.tls_server_name or None,
            max_retries=w.max_retries,
        ))
    return out


def _writer_name(w: WriterConfig) -> str:
    return w.safe_name


class Agent:
    """A running agent: scrape loops for every target of ``config``, delivering to ``sink``.

    Without ``sink`` the agent builds its :class:`RemoteWrite` from ``config.writers`` (``spool_dir=None``
    keeps the queue in memory). ``listen`` ("host:port", port 0 = any free port, "" = off) serves
    ``/metrics`` and ``/healthz``. ``summary_interval`` (seconds; None = off) logs a one-line summary that
    often. Use as ``async with Agent(config) as agent:`` or ``start()``/``stop()``.
    """

    def __init__(
        self,
        config: AgentConfig,
        *,
        sink: Sink | None = None,
        metrics: SelfMetrics | None = None,
        clock: Clock = SYSTEM_CLOCK,
        spool_dir: Path | None = None,
        spool_max_bytes: int = 1 << 30,
        listen: str = "",
        shutdown_timeout: float = 10.0,
        jitter: bool = True,
        summary_interval: float | None = None,
        sharder: Sharder | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics if metrics is not None else SelfMetrics()
        self.clock = clock
        self.targets: list[Target] = build_targets(config)
        self.shutdown_timeout = shutdown_timeout
        self._listen = listen
        self._jitter = jitter
        self._spool_dir = spool_dir
        self._spool_max_bytes = spool_max_bytes
        self._sink = sink
        self._remote_write: RemoteWrite | None = None
        self._client = ScrapeClient(metrics=self.metrics, clock=clock)
        self._runner: web.AppRunner | None = None
        self.listen_address: tuple[str, int] | None = None
        self._started = False
        self._summary_interval = summary_interval
        self.supervisor = Supervisor(metrics=self.metrics, clock=clock)
        self.loops = [
            ScrapeLoop(t, client=self._client, sink=None, metrics=self.metrics, clock=clock,
                       batch=config.writer_opt.batch, offset_seed=hostname_seed(config.global_.hostname))
            for t in self.targets
        ]
        self._scrape_tasks: list[str] = []
        for loop in self.loops:
            name = f"scrape {loop.target.url}"
            while name in self._scrape_tasks:
                name += "'"
            self._scrape_tasks.append(name)
        # Jobs with kubernetes_sd_configs: their loops come and go with discovery (scrape/discovered.py),
        # imported only then: it loads the apiserver client and PyYAML.
        self.discovered: DiscoveredScraping | None = None
        if has_discovery(config):
            from kubescrape.scrape.discovered import DiscoveredScraping

            self.discovered = DiscoveredScraping(
                config, metrics=self.metrics, clock=clock, sharder=sharder, jitter=jitter,
                offset_seed=hostname_seed(config.global_.hostname), client=self._client,
                supervisor=self.supervisor)
        if config.warnings:
            self.metrics.config_warnings.inc(len(config.warnings))

    async def __aenter__(self) -> Agent:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start delivery, the self-metrics listener and one scrape loop per target."""
        if self._started:
            return
        self._started = True
        if self._sink is None:
            self.config.require_writers()
            self._remote_write = RemoteWrite(writer_settings(self.config), metrics=self.metrics,
                                             spool_dir=self._spool_dir, spool_max_bytes=self._spool_max_bytes,
                                             clock=self.clock, supervisor=self.supervisor)
            await self._remote_write.start()
            self._sink = self._remote_write
        if self._listen:
            await self._start_listener(self._listen)
        for name, loop in zip(self._scrape_tasks, self.loops, strict=True):
            loop.sink = self._sink
            self.supervisor.start(name, _runner_of(loop, self._jitter), progress=_scrapes_of(loop))
        if self.discovered is not None:
            await self.discovered.start(self._sink)
        if self._summary_interval:
            self.supervisor.start("summary", self._summaries)
        log.info("scraping %d target(s) every %s", len(self.loops),
                 ", ".join(sorted({f"{t.interval:g}s" for t in self.targets})) or "-")

    async def stop(self) -> None:
        """Stop scraping, flush delivery for up to ``shutdown_timeout`` seconds, close everything."""
        if not self._started:
            return
        self._started = False
        if self.discovered is not None:
            await self.discovered.stop()
        await self.supervisor.stop([*self._scrape_tasks, "summary"])
        await self._client.close()
        if self._remote_write is not None:
            await self._remote_write.close(self.shutdown_timeout)
        await self.supervisor.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def scrape_once(self) -> list[ScrapeReport]:
        """Scrape every target once, concurrently, without delivering anything (``--test``)."""
        try:
            return list(await asyncio.gather(*(loop.scrape() for loop in self.loops)))
        finally:
            await self._client.close()

    def stats(self) -> AgentStats:
        """Per target: up, last error, samples, duration; per writer: delivery numbers."""
        writers = self._remote_write.stats() if self._remote_write is not None else []
        loops = [*self.loops, *(self.discovered.loops if self.discovered is not None else [])]
        return AgentStats(targets=[loop.stats for loop in loops], writers=writers)

    def healthy(self) -> tuple[bool, str]:
        """For ``/healthz`` (the policy is in the README): ``(False, "unhealthy: …")`` while a writer cannot
        persist or deliver, ``(True, "degraded: …")`` while targets are down or a scrape task is restarting,
        ``(True, "ok: …")`` otherwise. The first line sums up; each further line is one reason."""
        if not self._started:
            return False, "stopped"
        s = self.stats()
        targets = f"{s.targets_up}/{len(s.targets)} targets up"
        problems = self._remote_write.problems() if self._remote_write is not None else []
        if problems:
            return False, "\n".join([f"unhealthy: {targets}; {len(problems)} delivery problem(s)",
                                      *problems]) + "\n"
        failing = self.supervisor.failing()
        notes = [f"task {name!r} failed and is restarting ({failing[name]})"
                 for name in self._scrape_tasks if name in failing]
        if notes or s.targets_up < len(s.targets):
            return True, "\n".join([f"degraded: {targets}", *notes]) + "\n"
        return True, f"ok: {targets}\n"

    def summary(self) -> str:
        """One line: targets up, and per writer what was sent, is pending, was dropped or evicted."""
        s = self.stats()
        parts = [f"{s.targets_up}/{len(s.targets)} targets up, {s.samples:,} samples per round"]
        for w in s.writers:
            line = f"writer {w.name!r}: sent {w.sent:,}, pending {w.pending_samples:,}"
            if w.dropped:
                reasons = ", ".join(f"{k} {v:,}" for k, v in sorted(w.dropped_by_reason.items()))
                line += f", dropped {w.dropped:,} ({reasons})"
            if w.evicted:
                line += f", evicted {w.evicted:,}"
            parts.append(line)
        return "; ".join(parts)

    async def _summaries(self) -> None:
        assert self._summary_interval
        while True:
            await self.clock.sleep(self._summary_interval)
            log.info("summary: %s", self.summary())

    async def _start_listener(self, listen: str) -> None:
        from kubescrape.status import add_routes  # the status pages: only with a listener

        host, port = parse_listen(listen)
        runner = web.AppRunner(add_routes(make_app(self.metrics, self.healthy), self), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as e:
            await runner.cleanup()
            raise ConfigError(f"cannot listen on {listen} for self-metrics: {e.strerror or e}",
                              "pass --listen with a free host:port, or --listen '' to turn the listener off",
                              key="--listen") from e
        self._runner = runner
        server = site._server  # aiohttp has no public accessor for the bound address (port 0)
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            addr = sockets[0].getsockname()
            self.listen_address = (str(addr[0]), int(addr[1]))
        log.info("status pages on http://%s:%d/ (self-metrics: /metrics)",
                 *(self.listen_address or (host, port)))


def _runner_of(loop: ScrapeLoop, jitter: bool) -> Callable[[], Coroutine[Any, Any, None]]:
    return lambda: loop.run(jitter=jitter)


def _scrapes_of(loop: ScrapeLoop) -> Callable[[], int]:
    return lambda: loop.stats.scrapes


def parse_listen(listen: str) -> tuple[str, int]:
    """``host:port`` / ``[v6]:port`` / ``:port`` → (host, port). Raises ConfigError."""
    host, sep, port_text = listen.rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise ConfigError(f"--listen {listen!r} is not host:port", "pass e.g. --listen 127.0.0.1:9101",
                          key="--listen")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port_text)


def render_chunks(chunks: Sequence[Chunk], *, timestamps: bool = False) -> str:
    """Decode encoded chunks back into exposition text, one sample per line, sorted by series."""
    samples: list[Sample] = []
    for labels, points in decode_write_request(b"".join(c.plain() for c in chunks)):
        name = labels.get("__name__", "")
        rest = tuple(sorted((k, v) for k, v in labels.items() if k != "__name__"))
        for value, ts in points:
            samples.append(Sample(name, rest, value, ts if timestamps else None))
    samples.sort(key=lambda s: (s.name, s.labels, s.timestamp_ms or 0))
    return render(samples)


def print_summary(reports: Sequence[ScrapeReport], out: TextIO) -> None:
    """Per-target lines for ``--test``: url, status, samples, duration, and the error with its fix."""
    for r in reports:
        status = "up  " if r.ok else "DOWN"
        print(f"{status} {r.url}  samples={r.samples_post_relabel} scraped={r.samples_scraped} "
              f"duration={r.duration:.3f}s", file=out)
        if r.error is not None:
            print(f"     error: {r.error.cause}", file=out)
            if r.error.fix:
                print(f"     fix:   {r.error.fix}", file=out)
    failed = sum(1 for r in reports if not r.ok)
    print(f"{len(reports)} target(s), {len(reports) - failed} up, {failed} failed", file=out)


def setup_logging(level: str, stream: TextIO | None = None, handler: logging.Handler | None = None) -> None:
    """Log at ``level`` (debug, info, warning, error) through ``handler`` (``[log] file_name``, see
    :func:`kubescrape.config.logfile.log_handler`) or to ``stream`` (default stderr). Replaces the handler
    an earlier call installed. Raises ConfigError on an unknown level."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ConfigError(f"unknown log level {level!r}", "use one of debug, info, warning, error",
                          key="--log-level")
    if handler is None:
        handler = logging.StreamHandler(stream or sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_kubescrape", False):
            root.removeHandler(h)
    handler._kubescrape = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(numeric)
    # aiohttp's access log and client chatter are not the agent's story
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def _event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


async def _test_mode(config: AgentConfig) -> int:
    agent = Agent(config, sink=None)
    reports = await agent.scrape_once()
    sys.stdout.write(render_chunks([c for r in reports for c in r.chunks]))
    sys.stdout.flush()
    print_summary(reports, sys.stderr)
    return 0 if all(r.ok for r in reports) else 1


async def _serve(config: AgentConfig, *, listen: str, spool_dir: Path | None, spool_max_bytes: int,
                 shutdown_timeout: float, summary_interval: float | None, sharder: Sharder | None) -> int:
    agent = Agent(config, listen=listen, spool_dir=spool_dir, spool_max_bytes=spool_max_bytes,
                  shutdown_timeout=shutdown_timeout, summary_interval=summary_interval, sharder=sharder)
    with stop_on_signals() as stop:
        try:
            await agent.start()
            agent.supervisor.start("memory trim", partial(trim_periodically, config.global_.interval))
            await stop.wait()
            log.info("stopping: no more scrapes; flushing for up to %gs", shutdown_timeout)
        finally:
            await agent.stop()
    return 0


def run_command(
    *,
    config_dir: Path,
    writer_urls: Sequence[str],
    test: bool,
    listen: str,
    spool_dir: Path,
    spool_max_bytes: int,
    spool: bool,
    shutdown_timeout: float,
    log_level: str,
    config_file: Path | None = None,
    strict: bool = False,
    quiet: bool = False,
    summary_interval: float | None = 60.0,
    shard_count: int = 1,
    shard_index: str | None = None,
    shard_replication: int = 1,
) -> int:
    """``kubescrape run``: 0 on a clean stop, 1 if a ``--test`` target failed, 2 on configuration errors.

    ``config_file``: a Prometheus configuration file, read instead of the Categraf directory. The agent
    logs a one-line summary every ``summary_interval`` seconds (None or 0: never; ``quiet`` turns it off
    too)."""
    try:
        setup_logging(log_level)
        if config_file is not None:
            # Imported here: it needs PyYAML, which a Categraf configuration never does.
            from kubescrape.config.prometheus import load_prometheus

            config = load_prometheus(config_file, strict=strict, writer_urls=writer_urls)
        else:
            config = load_categraf(config_dir, writer_urls=writer_urls)
        sharder = None
        if shard_count > 1:
            from kubescrape.discovery.shard import sharder_from_options

            sharder = sharder_from_options(shard_count, shard_index, shard_replication)
        # --test writes samples to stdout and its report to stderr: the configured log file is for serving.
        file_handler = None if test else log_handler(config.log)
        if file_handler is not None:
            setup_logging(log_level, handler=file_handler)
    except ConfigError as e:
        print(f"error: {e.cause}", file=sys.stderr)
        if e.fix:
            print(f"fix:   {e.fix}", file=sys.stderr)
        return 2
    for warning in config.warnings:
        log.warning("config: %s", warning)
    if config.global_.print_configs:
        log.info("configuration: %s", json.dumps(config.redacted(), sort_keys=True, default=str))
    # Multi-MB scrape buffers must go back to the system when freed (kubescrape/_memory.py).
    tune_allocator()
    with asyncio.Runner(loop_factory=_event_loop_factory()) as runner:
        try:
            if test:
                return runner.run(_test_mode(config))
            return runner.run(_serve(config, listen=listen, spool_dir=spool_dir if spool else None,
                                     spool_max_bytes=spool_max_bytes, shutdown_timeout=shutdown_timeout,
                                     summary_interval=None if quiet else summary_interval or None,
                                     sharder=sharder))
        except KubescrapeError as e:
            print(f"error: {e.cause}", file=sys.stderr)
            if e.fix:
                print(f"fix:   {e.fix}", file=sys.stderr)
            return 2 if isinstance(e, ConfigError) else 1
