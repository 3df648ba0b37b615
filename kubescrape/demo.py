"""``kubescrape demo``: the whole job on one machine, no cluster needed.

An emulated kubelet (TLS, token authentication, RBAC from the seed's ``auth.yaml``), the agent running the
seed's Categraf configuration pointed at it, and a remote-write receiver — a real Prometheus when one is
installed, the embedded receiver otherwise — with a live summary until Ctrl-C or ``--duration``.

On a terminal the summary is a table redrawn in place, laid out to fit 80 columns; otherwise (a pipe, a
file, CI) it is plain lines, one per scrape interval, never wrapped. The rate is taken over a sliding
window of several scrape intervals: samples leave in bursts, one per scrape, so a one-second rate would
read 0 most of the time. The final table and the ``done:`` line come from one snapshot taken after the
agent has flushed, so their numbers agree.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import aiohttp
from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from kubescrape._signals import stop_on_signals
from kubescrape.agent import Agent
from kubescrape.config.categraf import load_categraf
from kubescrape.config.models import AgentConfig
from kubescrape.emulator import write_config
from kubescrape.emulator.fleet import Emulator
from kubescrape.emulator.pki import client_ssl_context
from kubescrape.prometheus import Prometheus, prometheus_available

__all__ = ["RateWindow", "run_command", "run_demo", "write_demo_config"]

DEMO_INTERVAL = 5  # seconds; the seed's 15 s is long for watching a demo
RATE_WINDOW = 4 * DEMO_INTERVAL


class _ReceiverLike(Protocol):
    name: str
    write_url: str

    def series_count(self) -> int: ...

    async def refresh(self) -> None: ...

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

    async def refresh(self) -> None:
        """Nothing to fetch: the counts are in this process."""

    async def stop(self) -> None:
        await self._receiver.stop()


class _PrometheusReceiver:
    """A real Prometheus server with its remote-write receiver, queried back through its HTTP API."""

    name = "Prometheus"

    def __init__(self, workdir: Path) -> None:
        self._prom = Prometheus(workdir)
        self.write_url = self._prom.write_url
        self._series = 0

    async def start(self) -> None:
        await asyncio.to_thread(self._prom.start)

    async def refresh(self) -> None:
        def query() -> int:
            series = self._prom.query('count({__name__=~".+"})')
            return int(float(series[0]["value"][1])) if series else 0

        with contextlib.suppress(Exception):
            self._series = await asyncio.to_thread(query)

    def series_count(self) -> int:
        return self._series

    async def stop(self) -> None:
        await asyncio.to_thread(self._prom.stop)


def write_demo_config(config_dir: Path, emu: Emulator, write_url: str, *,
                      interval: int = DEMO_INTERVAL) -> None:
    """The Categraf config directory of ``kubescrape emulate --write-config``, at the demo's interval."""
    write_config(emu, config_dir, write_url, interval=interval)


class RateWindow:
    """Per-second rate of a growing counter over the last ``window`` seconds."""

    def __init__(self, window: float) -> None:
        self.window = window
        self._points: deque[tuple[float, int]] = deque()

    def add(self, now: float, value: int) -> None:
        """Record the counter's ``value`` at ``now`` (monotonic seconds)."""
        self._points.append((now, value))
        # keep the newest point at or before the window's start, so the window is always fully covered
        while len(self._points) > 2 and self._points[1][0] <= now - self.window:
            self._points.popleft()

    def rate(self) -> float:
        """Increase per second between the oldest kept point and the newest."""
        if len(self._points) < 2:
            return 0.0
        (t0, v0), (t1, v1) = self._points[0], self._points[-1]
        return (v1 - v0) / (t1 - t0) if t1 > t0 else 0.0

    def span(self) -> float:
        """Seconds the rate is taken over (less than ``window`` at start-up)."""
        return self._points[-1][0] - self._points[0][0] if len(self._points) > 1 else 0.0


@dataclass(frozen=True)
class _Probe:
    """One request to the kubelet's secure port with a given token, as a user would make with curl."""

    role: str
    account: str
    status: int
    body: str


async def _probe(url: str, token_file: Path, ca: Path, role: str, account: str) -> _Probe:
    headers = {"Authorization": f"Bearer {token_file.read_text().strip()}"}
    async with aiohttp.ClientSession() as session, session.get(
        url, headers=headers, ssl=client_ssl_context(ca.read_bytes())
    ) as resp:
        body = await resp.text()
    if resp.status == 200:
        lines = [ln for ln in body.splitlines() if ln and not ln.startswith("#")]
        return _Probe(role, account, resp.status, f"{len(lines):,} samples")
    return _Probe(role, account, resp.status, body.strip())


@dataclass(frozen=True)
class _Row:
    role: str
    url: str
    endpoint: str  # host:port/path: the scheme follows from the role, and leaving it out keeps 80 columns
    up: bool | None
    samples: int
    duration_ms: float
    scrapes: int
    error: str


@dataclass(frozen=True)
class _Snapshot:
    elapsed: float
    rows: list[_Row]
    sent: int
    pending: int
    failed: int
    rate: float
    rate_span: float
    series: int

    @property
    def up(self) -> int:
        return sum(1 for r in self.rows if r.up)

    def totals(self) -> str:
        return (f"targets up {self.up}/{len(self.rows)} · {self.rate:,.0f} samples/s "
                f"(last {self.rate_span:.0f}s) · sent {self.sent:,}")

    def totals2(self) -> str:
        return f"pending {self.pending:,} · failed {self.failed:,} · series at receiver {self.series:,}"


def _role(labels: tuple[tuple[str, str], ...], url: str) -> str:
    job = dict(labels).get("job")
    if job:
        return job
    if url.endswith("/cadvisor"):
        return "cadvisor"
    return "kubelet" if url.startswith("https") else "kube-proxy"


def _snapshot(agent: Agent, roles: dict[str, str], receiver: _ReceiverLike, rate: RateWindow,
              elapsed: float) -> _Snapshot:
    stats = agent.stats()
    rows = [
        _Row(roles.get(t.url, ""), t.url, t.url.split("://", 1)[-1], t.up, t.samples, t.duration * 1000,
             t.scrapes, t.last_error or "")
        for t in stats.targets
    ]
    return _Snapshot(
        elapsed=elapsed, rows=rows, sent=sum(w.sent for w in stats.writers),
        pending=sum(w.pending_samples for w in stats.writers), failed=sum(w.failed for w in stats.writers),
        rate=rate.rate(), rate_span=rate.span(), series=receiver.series_count(),
    )


def _table(snap: _Snapshot, receiver_name: str, *, final: bool = False) -> RenderableType:
    title = f"kubescrape demo · {snap.elapsed:.0f}s · receiver: {receiver_name}"
    title += " · final" if final else ""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, title=title, title_justify="left")
    table.add_column("role", no_wrap=True)
    table.add_column("endpoint", no_wrap=True)
    table.add_column("up", no_wrap=True, justify="center")
    table.add_column("samples", no_wrap=True, justify="right")
    table.add_column("scrape", no_wrap=True, justify="right")
    table.add_column("scrapes", no_wrap=True, justify="right")
    for r in snap.rows:
        up = "[dim]-[/]" if r.up is None else ("[green]1[/]" if r.up else "[red]0[/]")
        table.add_row(r.role, r.endpoint, up, f"{r.samples:,}", f"{r.duration_ms:.0f} ms", f"{r.scrapes:,}")
    parts: list[RenderableType] = [table]
    # errors in full, below the table, wrapped at word boundaries rather than cut to fit a column
    parts += [Text(f"{r.role} {r.endpoint}: {r.error}", style="red") for r in snap.rows if r.error]
    parts += [Text(snap.totals()), Text(snap.totals2())]
    return Group(*parts)


def _lines(snap: _Snapshot, *, final: bool = False) -> list[str]:
    """The plain, line-oriented form (stdout is not a terminal)."""
    head = "final" if final else f"{snap.elapsed:.0f}s"
    lines = [f"{head}: {snap.totals()} · {snap.totals2()}"]
    if final or any(r.error for r in snap.rows):
        for r in snap.rows:
            up = "?" if r.up is None else int(r.up)
            line = (f"{head}: target {r.role} {r.url} up={up} samples={r.samples} "
                    f"scrape={r.duration_ms:.0f}ms scrapes={r.scrapes}")
            lines.append(line + (f" error: {r.error}" if r.error else ""))
    return lines


def _probe_panel(url: str, probes: list[_Probe]) -> Panel:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(no_wrap=True)
    grid.add_column()
    for p in probes:
        style = "green" if p.status == 200 else "red"
        grid.add_row(f"[{style}]{p.status}[/]", Text(f"{p.role} {p.account}\n", style="bold") + Text(p.body))
    return Panel(grid, title=f"GET {url}", title_align="left", border_style="dim")


class _Output:
    """Where the demo writes: rich on a terminal, plain unwrapped lines elsewhere."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.tty = console.is_terminal

    def line(self, text: str) -> None:
        # soft_wrap: a line longer than the console is left to the terminal (or the file) as one line
        if self.tty:
            self.console.print(text, highlight=False)
        else:
            self.console.print(text, soft_wrap=True, markup=False, highlight=False)


async def run_demo(
    *, duration: float, pods: int, nodes: int, state_dir: Path, console: Console, receiver_kind: str = "auto"
) -> int:
    """Run the demo; 0 when every target was scraped and the receiver holds the series.

    ``receiver_kind``: ``prometheus`` (a real Prometheus), ``embedded`` (in-process receiver) or ``auto``
    (Prometheus when installed).
    """
    out = _Output(console)
    if receiver_kind not in ("auto", "prometheus", "embedded"):
        out.line(f"error: unknown receiver {receiver_kind!r}: use auto, prometheus or embedded")
        return 2
    if receiver_kind == "prometheus" and not prometheus_available():
        out.line("error: prometheus is not installed; "
                 "fix: apt-get install prometheus, or use --receiver embedded")
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
            count = f"{len(emu.nodes)} node" + ("s" if len(emu.nodes) > 1 else "")
            out.line(f"kubelet emulator: {count} × {pods} pods, first at {emu.nodes[0].url}")
            out.line(f"  CA {emu.ca_path}")
            out.line(f"receiver: {receiver.name} at {receiver.write_url}")
            out.line(f"agent config: {config_dir}")
            out.line("  config.toml and input.prometheus/prometheus.toml, the seed's pointed here")
            url = f"{emu.nodes[0].url}/metrics"
            probes = [
                await _probe(url, emu.token_path("default", "unbound"), emu.ca_path,
                             "unbound ServiceAccount", "default/unbound (no RBAC binding)"),
                await _probe(url, emu.scrape_token_path(), emu.ca_path,
                             "bound ServiceAccount", "flashcat/categraf-daemonset (auth.yaml)"),
            ]
            if out.tty:
                console.print(_probe_panel(url, probes))
            else:
                for p in probes:
                    out.line(f"GET {url} as {p.role} {p.account}: {p.status} {p.body}")

            config = load_categraf(config_dir)
            for w in config.warnings:
                out.line(f"config warning: {w}")
            ok = await _watch(config, receiver, duration, out, state_dir / "spool")
        finally:
            await receiver.stop()
    return 0 if ok else 1


async def _watch(config: AgentConfig, receiver: _EmbeddedReceiver | _PrometheusReceiver, duration: float,
                 out: _Output, spool_dir: Path) -> bool:
    started = time.monotonic()
    rate = RateWindow(RATE_WINDOW)
    agent = Agent(config, spool_dir=spool_dir, listen="127.0.0.1:0")
    async with agent:
        roles = {loop.target.url: _role(loop.target.labels, loop.target.url) for loop in agent.loops}
        if agent.listen_address is not None:
            host, port = agent.listen_address
            out.line(f"agent status: http://{host}:{port}/targets")
        last_line = 0.0
        with stop_on_signals() as stop, contextlib.ExitStack() as stack:
            live = stack.enter_context(Live(console=out.console, auto_refresh=False, transient=True)) \
                if out.tty else None
            while not stop.is_set():
                now = time.monotonic()
                if duration and now - started >= duration:
                    break
                await receiver.refresh()
                rate.add(now, sum(w.sent for w in agent.stats().writers))
                snap = _snapshot(agent, roles, receiver, rate, now - started)
                if live is not None:
                    live.update(_table(snap, receiver.name), refresh=True)
                elif now - last_line >= DEMO_INTERVAL:
                    last_line = now
                    for line in _lines(snap):
                        out.line(line)
                wait = 1.0 if not duration else max(0.0, min(1.0, started + duration - now))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), wait)
    # after stop(): the agent flushed what the receiver accepts; one snapshot for the table and the done line
    await receiver.refresh()
    end = time.monotonic()
    rate.add(end, sum(w.sent for w in agent.stats().writers))
    final = _snapshot(agent, roles, receiver, rate, end - started)
    if out.tty:
        out.console.print(_table(final, receiver.name, final=True))
    else:
        for line in _lines(final, final=True):
            out.line(line)
    out.line(f"done: {final.up}/{len(final.rows)} targets up, {final.sent:,} samples sent, "
             f"{final.series:,} series at the receiver")
    return bool(final.rows) and final.up == len(final.rows) and final.series > 0


def run_command(*, duration: float, pods: int, nodes: int, state_dir: Path | None, receiver: str) -> int:
    """``kubescrape demo``: returns the process exit code."""
    console = Console()
    with contextlib.ExitStack() as stack:
        if state_dir is None:
            state_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="kubescrape-demo-")))
        state_dir.mkdir(parents=True, exist_ok=True)
        return asyncio.run(run_demo(duration=duration, pods=pods, nodes=nodes, state_dir=state_dir,
                                    console=console, receiver_kind=receiver))
