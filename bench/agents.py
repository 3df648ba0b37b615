"""The agents under test, behind one small protocol.

Every contender scrapes the same targets (the emulator's ``/metrics`` and ``/metrics/cadvisor`` of every
node) at the same interval with the same token and CA, and remote-writes into the same receiver with an
external label ``bench_agent=<name>``. The harness only ever calls the :class:`AgentUnderTest` methods:
``start`` it, ``wait_ready``, read its ``pid`` (for ``/proc``), read its own ``counters`` from its
``/metrics``, ask whether it has ``drained`` its remote-write queue, ``stop`` it.

- :class:`PrometheusAgent`: ``prometheus --enable-feature=agent`` (Debian's 2.42);
- :class:`VmAgent`: ``vmagent`` (Debian's ``victoria-metrics``, 1.79) with a Prometheus-style
  ``-promscrape.config`` and ``honor_timestamps: true`` (the Prometheus default) for parity;
- :class:`Kubescrape`: ``kubescrape run`` with Categraf's ``config.toml`` + ``input.prometheus``.
"""

from __future__ import annotations

import math
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, NamedTuple, Protocol

import yaml

from bench.compare import AGENT_LABEL
from bench.processes import Processes, http_get, kubescrape_cmd, wait_tcp
from bench.stats import Samples, histogram_buckets, metric_sum, parse_exposition
from bench.targets import Scenario, ScrapeJob
from kubescrape.prometheus import PROMETHEUS_BIN, free_port

PROMETHEUS = "prometheus"
VMAGENT = "vmagent"
KUBESCRAPE = "kubescrape"
VMAGENT_BIN = shutil.which("vmagent") or "/usr/bin/vmagent"


class Counters(NamedTuple):
    """An agent's own counters at one moment (cumulative since it started).

    ``scraped``: target samples scraped (NaN when the agent does not count them); ``queued``: samples
    handed to remote write, synthetic per-scrape series included; ``sent``: samples remote write has
    sent; ``scrape_buckets``: the agent's scrape-duration histogram, when it has one in Prometheus form.
    """

    scraped: float
    queued: float
    sent: float
    scrape_buckets: Mapping[float, float] = MappingProxyType({})


@dataclass
class AgentContext:
    """Everything an agent needs to start: where, what to scrape, where to write."""

    workdir: Path
    scenario: Scenario
    jobs: list[ScrapeJob]
    categraf_toml: str
    write_url: str
    procs: Processes
    spool: bool = True


class AgentUnderTest(Protocol):
    """One contender. ``name`` is its ``bench_agent`` label value, ``title`` its column heading."""

    @property
    def name(self) -> str: ...

    @property
    def title(self) -> str: ...

    def start(self, ctx: AgentContext) -> None:
        """Write its configuration into ``ctx.workdir`` and start it (returns at once)."""

    def wait_ready(self, timeout: float) -> None:
        """Wait until it serves its ``/metrics`` (raises if it exits first)."""

    @property
    def pid(self) -> int:
        """The agent's process id (for ``/proc``)."""

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        """The running process."""

    @property
    def log(self) -> Path:
        """Its combined stdout + stderr."""

    def counters(self) -> Counters:
        """Its own counters, read from its ``/metrics``."""

    def drained(self, queued: float) -> bool:
        """Whether it has sent at least ``queued`` samples and holds nothing more to send."""

    def stop(self) -> None:
        """SIGTERM (SIGKILL after a minute): every agent here flushes or persists its queue on SIGTERM."""


def scrape_config_yaml(
    jobs: Sequence[ScrapeJob],
    interval: float,
    *,
    write_url: str | None = None,
    external_labels: dict[str, str] | None = None,
    honor_timestamps: bool | None = None,
) -> str:
    """A Prometheus-style configuration equivalent to the Categraf one: same targets, interval, labels."""
    scrape_configs: list[dict[str, Any]] = []
    for i, j in enumerate(jobs):
        cfg: dict[str, Any] = {
            # job_name must be unique; the `job` target label below is what the series carry
            "job_name": f"{j.job}-{i}",
            "scheme": j.scheme,
            "metrics_path": j.metrics_path,
            "static_configs": [{"targets": list(j.addresses), "labels": {"job": j.job, **dict(j.labels)}}],
        }
        if honor_timestamps is not None:
            cfg["honor_timestamps"] = honor_timestamps
        if j.bearer_token_file:
            cfg["authorization"] = {"credentials_file": j.bearer_token_file}
        if j.scheme == "https":
            tls: dict[str, Any] = {"insecure_skip_verify": j.insecure_skip_verify}
            if j.ca_file:
                tls["ca_file"] = j.ca_file
            cfg["tls_config"] = tls
        scrape_configs.append(cfg)
    seconds = f"{interval:g}s"
    glob: dict[str, Any] = {"scrape_interval": seconds, "scrape_timeout": seconds}
    if external_labels:
        glob["external_labels"] = external_labels
    doc: dict[str, Any] = {"global": glob, "scrape_configs": scrape_configs}
    if write_url is not None:
        doc["remote_write"] = [{"url": write_url}]
    return yaml.safe_dump(doc, sort_keys=False)


def prometheus_agent_yaml(jobs: Sequence[ScrapeJob], interval: float, write_url: str) -> str:
    """The Prometheus agent's configuration (remote write and the bench label in the file)."""
    return scrape_config_yaml(jobs, interval, write_url=write_url, external_labels={AGENT_LABEL: PROMETHEUS})


def vmagent_scrape_yaml(jobs: Sequence[ScrapeJob], interval: float) -> str:
    """vmagent's ``-promscrape.config``: timestamps honoured as Prometheus does by default (vmagent 1.79
    documents ``honor_timestamps`` as false by default)."""
    return scrape_config_yaml(jobs, interval, honor_timestamps=True)


def kubescrape_config_toml(interval: float, write_url: str) -> str:
    """``config.toml`` for ``kubescrape run``: Categraf's [global] and [[writers]] with the bench label."""
    return (
        "[global]\n"
        'hostname = "bench"\n'
        f"interval = {max(1, round(interval))}\n"
        f'labels = {{ {AGENT_LABEL} = "{KUBESCRAPE}" }}\n'
        "\n[writer_opt]\nbatch = 2000\n"
        f'\n[[writers]]\nurl = "{write_url}"\n'
    )


def prometheus_counters(samples: Samples) -> Counters:
    """The Prometheus agent's counters: 2.42 in agent mode counts samples appended (synthetic series
    included), not target samples scraped."""
    return Counters(
        scraped=math.nan,
        queued=metric_sum(samples, "prometheus_agent_samples_appended_total"),
        sent=metric_sum(samples, "prometheus_remote_storage_samples_total"),
    )


def vmagent_counters(samples: Samples) -> Counters:
    """vmagent's counters. 1.79 has no per-sample "sent" counter: rows are counted as they are packed into
    blocks for the remote-write queue (see :func:`vmagent_drained`)."""
    return Counters(
        scraped=metric_sum(samples, "vm_promscrape_scraped_samples_sum"),
        queued=metric_sum(samples, "vmagent_remotewrite_rows_pushed_after_relabel_total"),
        sent=metric_sum(samples, "vmagent_remotewrite_block_size_rows_sum"),
    )


def kubescrape_counters(samples: Samples) -> Counters:
    """kubescrape's counters and its scrape-duration histogram."""
    return Counters(
        scraped=metric_sum(samples, "kubescrape_samples_scraped_total"),
        queued=metric_sum(samples, "kubescrape_samples_appended_total"),
        sent=metric_sum(samples, "kubescrape_samples_sent_total"),
        scrape_buckets=histogram_buckets(samples, "kubescrape_scrape_duration_seconds"),
    )


@dataclass
class _ProcessAgent:
    """What the three contenders share: one process listening on a loopback port with its ``/metrics``."""

    name: ClassVar[str]
    title: ClassVar[str]
    port: int = field(default_factory=free_port)
    _proc: subprocess.Popen[bytes] | None = None
    _log: Path | None = None

    def command(self, ctx: AgentContext) -> list[str]:
        raise NotImplementedError

    def counters_from(self, samples: Samples) -> Counters:
        raise NotImplementedError

    def start(self, ctx: AgentContext) -> None:
        ctx.workdir.mkdir(parents=True, exist_ok=True)
        self._log = ctx.workdir / "agent.log"
        self._proc = ctx.procs.start(self.command(ctx), self._log, cwd=ctx.workdir)

    def wait_ready(self, timeout: float = 60.0) -> None:
        wait_tcp("127.0.0.1", self.port, timeout, self.proc, self.log)

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            raise RuntimeError(f"{self.name} was not started")
        return self._proc

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def log(self) -> Path:
        if self._log is None:
            raise RuntimeError(f"{self.name} was not started")
        return self._log

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    def samples(self) -> Samples:
        return parse_exposition(http_get(self.metrics_url))

    def counters(self) -> Counters:
        return self.counters_from(self.samples())

    def drained(self, queued: float) -> bool:
        return self.counters().sent >= queued

    def stop(self) -> None:
        if self._proc is not None:
            Processes.stop(self._proc, timeout=60)


class PrometheusAgent(_ProcessAgent):
    """``prometheus --enable-feature=agent``: scrape, WAL, remote write."""

    name = PROMETHEUS
    title = "Prometheus agent"

    def command(self, ctx: AgentContext) -> list[str]:
        config = ctx.workdir / "prometheus.yml"
        config.write_text(prometheus_agent_yaml(ctx.jobs, ctx.scenario.interval, ctx.write_url))
        return [
            PROMETHEUS_BIN,
            f"--config.file={config}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--enable-feature=agent",
            f"--storage.agent.path={ctx.workdir / 'agent-data'}",
        ]

    def counters_from(self, samples: Samples) -> Counters:
        return prometheus_counters(samples)


class VmAgent(_ProcessAgent):
    """``vmagent``: scrape with a Prometheus-style config, relabel, persistent queue, remote write."""

    name = VMAGENT
    title = "vmagent"

    def command(self, ctx: AgentContext) -> list[str]:
        config = ctx.workdir / "scrape.yml"
        config.write_text(vmagent_scrape_yaml(ctx.jobs, ctx.scenario.interval))
        return [
            VMAGENT_BIN,
            f"-promscrape.config={config}",
            f"-httpListenAddr=127.0.0.1:{self.port}",
            f"-remoteWrite.url={ctx.write_url}",
            f"-remoteWrite.tmpDataPath={ctx.workdir / 'vmagent-data'}",
            f"-remoteWrite.label={AGENT_LABEL}={VMAGENT}",
            "-loggerLevel=WARN",
        ]

    def counters_from(self, samples: Samples) -> Counters:
        return vmagent_counters(samples)

    def drained(self, queued: float) -> bool:
        return vmagent_drained(self.samples(), queued)


def vmagent_drained(samples: Samples, queued: float) -> bool:
    """vmagent has packed ``queued`` rows into blocks and its remote-write queue (memory and disk) is empty.

    vmagent persists, rather than sends, what is queued when it is stopped, so the harness waits for this.
    """
    pending = metric_sum(samples, "vmagent_remotewrite_pending_data_bytes") + metric_sum(
        samples, "vmagent_remotewrite_pending_inmemory_blocks"
    )
    return vmagent_counters(samples).sent >= queued and pending == 0


class Kubescrape(_ProcessAgent):
    """``kubescrape run`` with the emulator's Categraf ``prometheus.toml`` (spool on unless told)."""

    name = KUBESCRAPE
    title = "kubescrape"

    def command(self, ctx: AgentContext) -> list[str]:
        conf = ctx.workdir / "conf"
        (conf / "input.prometheus").mkdir(parents=True, exist_ok=True)
        (conf / "config.toml").write_text(kubescrape_config_toml(ctx.scenario.interval, ctx.write_url))
        (conf / "input.prometheus" / "prometheus.toml").write_text(ctx.categraf_toml)
        args = kubescrape_cmd(
            "run", "--config-dir", str(conf), "--listen", f"127.0.0.1:{self.port}",
            "--spool-dir", str(ctx.workdir / "spool"),
        )
        if not ctx.spool:
            args.append("--no-spool")
        return args

    def counters_from(self, samples: Samples) -> Counters:
        return kubescrape_counters(samples)


AGENTS: dict[str, type[_ProcessAgent]] = {a.name: a for a in (PrometheusAgent, VmAgent, Kubescrape)}
"""Every contender by name, in the default order of a run."""


def make_agent(name: str) -> _ProcessAgent:
    """A fresh, not yet started agent (a new free port each time)."""
    return AGENTS[name]()
