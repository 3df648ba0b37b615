"""``kubescrape demo``: the whole job on one machine, no cluster needed.

An emulated kubelet (TLS, token authentication, RBAC from the seed's ``auth.yaml``), the agent running the
seed's Categraf configuration pointed at it, and a remote-write receiver — a real Prometheus when one is
installed, the embedded receiver otherwise — with a live summary until Ctrl-C or ``--duration``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import tempfile
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Protocol

import aiohttp
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from kubescrape._signals import stop_on_signals
from kubescrape.agent import Agent
from kubescrape.config.categraf import load_categraf
from kubescrape.config.models import AgentConfig
from kubescrape.emulator.fleet import Emulator
from kubescrape.emulator.pki import client_ssl_context
from kubescrape.prometheus import Prometheus, prometheus_available

__all__ = ["run_command", "write_demo_config"]

DEMO_INTERVAL = 5  # seconds; the seed's 15 s is long for watching a demo


class _ReceiverLike(Protocol):
    write_url: str

    def series_count(self) -> int: ...

    def samples_received(self) -> int: ...

    async def stop(self) -> None: ...


class _EmbeddedReceiver:
    """The in-process remote-write receiver (:mod:`kubescrape.receiver`)."""

    name = "embedded receiver"

    def __init__(self) -> None:
        from kubescrape.receiver import Receiver

        self._receiver = Receiver()
        self.write_url = ""

    async def start(self) -> None:
        self.write_url = await self._receiver.start("127.0.0.1", 0)

    def series_count(self) -> int:
        return self._receiver.series_count()

    def samples_received(self) -> int:
        return int(self._receiver.stats.samples)

    async def stop(self) -> None:
        await self._receiver.stop()


class _PrometheusReceiver:
    """A real Prometheus server with its remote-write receiver, queried back through its HTTP API."""

    name = "Prometheus (remote-write receiver)"

    def __init__(self, workdir: Path) -> None:
        self._prom = Prometheus(workdir)
        self.write_url = self._prom.write_url
        self._series = 0
        self._samples = 0

    async def start(self) -> None:
        await asyncio.to_thread(self._prom.start)

    async def refresh(self) -> None:
        def query() -> tuple[int, int]:
            series = self._prom.query('count({__name__=~".+"})')
            samples = self._prom.query("prometheus_tsdb_head_samples_appended_total")
            s = int(float(series[0]["value"][1])) if series else 0
            n = int(sum(float(r["value"][1]) for r in samples))
            return s, n

        with contextlib.suppress(Exception):
            self._series, self._samples = await asyncio.to_thread(query)

    def series_count(self) -> int:
        return self._series

    def samples_received(self) -> int:
        return self._samples

    async def stop(self) -> None:
        await asyncio.to_thread(self._prom.stop)


def _seed_text(name: str) -> str:
    return resources.files("kubescrape").joinpath("data", "categraf", *name.split("/")).read_text()


def write_demo_config(
    config_dir: Path, emu: Emulator, write_url: str, *, interval: int = DEMO_INTERVAL
) -> None:
    """Write the seed's Categraf ``config.toml`` and ``input.prometheus/prometheus.toml`` into
    ``config_dir``, pointed at the emulator and the receiver.

    Only what must change is changed: URLs, the token path, the interval, and ``insecure_skip_verify =
    true`` becomes ``tls_ca = <the emulator's CA>`` — the demo verifies the kubelet's certificate.
    """
    config = _seed_text("config.toml")
    config = re.sub(r'url = "[^"]*"', f'url = "{write_url}"', config, count=1)
    config = re.sub(r"^interval = \d+", f"interval = {interval}", config, count=1, flags=re.M)
    inputs = _seed_text("input.prometheus/prometheus.toml")
    nodes = emu.nodes

    def urls(fmt: str) -> str:
        return "[" + ", ".join(f'"{fmt.format(n=n)}"' for n in nodes) + "]"

    inputs = inputs.replace('["http://127.0.0.1:10249/metrics"]', urls("http://{n.address}:{n.proxy_port}/metrics"))
    inputs = inputs.replace('["https://127.0.0.1:10250/metrics"]', urls("{n.url}/metrics"))
    inputs = inputs.replace('["https://127.0.0.1:10250/metrics/cadvisor"]', urls("{n.url}/metrics/cadvisor"))
    token = str(emu.scrape_token_path())
    inputs = inputs.replace("/var/run/secrets/kubernetes.io/serviceaccount/token", token)
    inputs = inputs.replace("insecure_skip_verify = true", f'tls_ca = "{emu.ca_path}"')
    (config_dir / "input.prometheus").mkdir(parents=True, exist_ok=True)
    (config_dir / "config.toml").write_text(config)
    (config_dir / "input.prometheus" / "prometheus.toml").write_text(inputs)


@dataclass
class _Probe:
    """One request to the kubelet's secure port with a given token, as a user would make with curl."""

    who: str
    status: int
    body: str


async def _probe(url: str, token_file: Path, ca: Path, who: str) -> _Probe:
    headers = {"Authorization": f"Bearer {token_file.read_text().strip()}"}
    async with aiohttp.ClientSession() as session, session.get(
        url, headers=headers, ssl=client_ssl_context(ca.read_bytes())
    ) as resp:
        body = await resp.text()
    if resp.status == 200:
        lines = [ln for ln in body.splitlines() if ln and not ln.startswith("#")]
        return _Probe(who, resp.status, f"{len(lines)} samples")
    return _Probe(who, resp.status, body.strip())


def _probe_panel(url: str, probes: list[_Probe]) -> Panel:
    table = Table.grid(padding=(0, 2))
    for p in probes:
        style = "green" if p.status == 200 else "red"
        table.add_row(p.who, f"[{style}]{p.status}[/]", p.body)
    return Panel(table, title=f"GET {url}", border_style="dim")


def _summary(agent: Agent, receiver: _ReceiverLike, receiver_name: str, rate: float, elapsed: float) -> Table:
    stats = agent.stats()
    table = Table(title=f"kubescrape demo — {elapsed:.0f}s — receiver: {receiver_name}", expand=False)
    for col in ("target", "up", "samples", "duration", "scrapes", "last error"):
        table.add_column(col, overflow="fold")
    for t in stats.targets:
        up = "[dim]…[/]" if t.up is None else ("[green]1[/]" if t.up else "[red]0[/]")
        table.add_row(t.url, up, str(t.samples), f"{t.duration * 1000:.0f} ms", str(t.scrapes),
                      (t.last_error or "")[:120])
    sent = sum(w.sent for w in stats.writers)
    pending = sum(w.pending_samples for w in stats.writers)
    failed = sum(w.failed for w in stats.writers)
    table.caption = (
        f"targets up {stats.targets_up}/{len(stats.targets)}  ·  samples/s {rate:,.0f}  ·  sent {sent:,}  ·  "
        f"pending {pending:,}  ·  failed {failed:,}  ·  series at receiver {receiver.series_count():,}"
    )
    return table


async def run_demo(
    *, duration: float, pods: int, nodes: int, state_dir: Path, console: Console, receiver_kind: str = "auto"
) -> int:
    """Run the demo; 0 when every target was scraped and the receiver holds the series.

    ``receiver_kind``: ``prometheus`` (a real Prometheus), ``embedded`` (in-process receiver) or ``auto``
    (Prometheus when installed).
    """
    if receiver_kind not in ("auto", "prometheus", "embedded"):
        raise ValueError(f"unknown receiver {receiver_kind!r}: use auto, prometheus or embedded")
    if receiver_kind == "prometheus" and not prometheus_available():
        console.print("[red]prometheus is not installed[/]: "
                      "apt-get install prometheus, or use --receiver embedded")
        return 2
    emu = Emulator(state_dir / "kubelet", nodes=nodes, pods=pods, port=0, healthz_port=0, proxy_port=0)
    receiver: _EmbeddedReceiver | _PrometheusReceiver
    if receiver_kind != "embedded" and prometheus_available():
        (state_dir / "prometheus").mkdir(parents=True, exist_ok=True)
        receiver = _PrometheusReceiver(state_dir / "prometheus")
    else:
        receiver = _EmbeddedReceiver()
    async with emu:
        await receiver.start()
        try:
            config_dir = state_dir / "conf"
            write_demo_config(config_dir, emu, receiver.write_url)
            console.print(f"[bold]kubelet emulator[/]: {len(emu.nodes)} node(s) × {pods} pods, "
                          f"first at {emu.nodes[0].url} (CA {emu.ca_path})")
            console.print(f"[bold]receiver[/]: {receiver.name} at {receiver.write_url}")
            console.print(f"[bold]agent config[/]: {config_dir}/config.toml, "
                          f"{config_dir}/input.prometheus/prometheus.toml (the seed's, pointed here)")
            url = f"{emu.nodes[0].url}/metrics"
            probes = [
                await _probe(url, emu.token_path("default", "unbound"), emu.ca_path,
                             "ServiceAccount default/unbound (no RBAC binding)"),
                await _probe(url, emu.scrape_token_path(), emu.ca_path,
                             "ServiceAccount flashcat/categraf-daemonset (auth.yaml)"),
            ]
            console.print(_probe_panel(url, probes))

            config = load_categraf(config_dir)
            for w in config.warnings:
                console.print(f"[yellow]config warning[/]: {w}")
            ok = await _watch(config, receiver, duration, console, state_dir)
        finally:
            await receiver.stop()
    return 0 if ok else 1


async def _watch(config: AgentConfig, receiver: _EmbeddedReceiver | _PrometheusReceiver, duration: float,
                 console: Console, state_dir: Path) -> bool:
    started = time.monotonic()
    async with Agent(config, spool_dir=state_dir / "spool", listen="") as agent:
        last_sent, last_t, rate = 0, started, 0.0
        with stop_on_signals() as stop, Live(console=console, refresh_per_second=2, transient=False) as live:
            while not stop.is_set():
                now = time.monotonic()
                if duration and now - started >= duration:
                    break
                if isinstance(receiver, _PrometheusReceiver):
                    await receiver.refresh()
                sent = sum(w.sent for w in agent.stats().writers)
                if now > last_t:
                    rate = (sent - last_sent) / (now - last_t) if now - last_t >= 1 else rate
                if now - last_t >= 1:
                    last_sent, last_t = sent, now
                live.update(Group(_summary(agent, receiver, receiver.name, rate, now - started)))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
            stats = agent.stats()
    # after stop(): the agent flushed what the receiver accepts
    if isinstance(receiver, _PrometheusReceiver):
        await receiver.refresh()
    every_target_up = bool(stats.targets) and all(t.up for t in stats.targets)
    console.print()
    console.print(
        f"done: {stats.targets_up}/{len(stats.targets)} targets up, "
        f"{sum(w.sent for w in agent.stats().writers):,} samples sent, "
        f"{receiver.series_count():,} series at the receiver"
    )
    return every_target_up and receiver.series_count() > 0


def run_command(*, duration: float, pods: int, nodes: int, state_dir: Path | None, receiver: str) -> int:
    """``kubescrape demo``: returns the process exit code."""
    console = Console()
    with contextlib.ExitStack() as stack:
        if state_dir is None:
            state_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="kubescrape-demo-")))
        state_dir.mkdir(parents=True, exist_ok=True)
        return asyncio.run(run_demo(duration=duration, pods=pods, nodes=nodes, state_dir=state_dir,
                                    console=console, receiver_kind=receiver))
