"""A real Prometheus server process (Debian package ``prometheus``), for the demo, the end-to-end tests
and the benchmarks.

Started on a free loopback port with ``--web.enable-remote-write-receiver`` (server mode, the default)
or in agent mode (``agent=True``); stopped and its data removed when the context exits.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PROMETHEUS_BIN = shutil.which("prometheus") or "/usr/bin/prometheus"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def prometheus_available() -> bool:
    return Path(PROMETHEUS_BIN).exists()


class Prometheus:
    """A running Prometheus process on 127.0.0.1:<port>."""

    def __init__(self, workdir: Path, *, config_yaml: str = "global:\n  scrape_interval: 15s\n",
                 agent: bool = False, port: int | None = None, extra_args: list[str] | None = None) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.agent = agent
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(config_yaml)
        self.data_dir = workdir / ("agent-data" if agent else "data")
        self.log_path = workdir / "prometheus.log"
        self.extra_args = extra_args or []
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def write_url(self) -> str:
        return f"{self.url}/api/v1/write"

    def start(self, timeout: float = 30.0) -> None:
        args = [
            PROMETHEUS_BIN,
            f"--config.file={self.config_path}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.enable-lifecycle",
        ]
        if self.agent:
            args += ["--enable-feature=agent", f"--storage.agent.path={self.data_dir}"]
        else:
            args += [
                "--web.enable-remote-write-receiver",
                f"--storage.tsdb.path={self.data_dir}",
                "--storage.tsdb.retention.time=1d",
                # accept samples far in the past/future relative to wall clock (replayed spool data)
                "--query.lookback-delta=5m",
            ]
        args += self.extra_args
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.proc.returncode}: {self.log_tail()}")
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as r:
                if r.status == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"prometheus not ready after {timeout}s: {self.log_tail()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def api(self, path: str, **params: str) -> Any:
        """GET ``/api/v1/<path>`` and return ``data`` (raises on a non-success status)."""
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=30) as r:
            body = json.loads(r.read())
        if body.get("status") != "success":
            raise RuntimeError(f"prometheus API {path} failed: {body}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """Instant query; returns the ``result`` list."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self.api("query", **params)
        result: list[dict[str, Any]] = data["result"]
        return result

    def series(
        self, match: str, start: float | None = None, end: float | None = None
    ) -> list[dict[str, str]]:
        params = {"match[]": match}
        if start is not None:
            params["start"] = f"{start:.3f}"
        if end is not None:
            params["end"] = f"{end:.3f}"
        result: list[dict[str, str]] = self.api("series", **params)
        return result

    def count_samples(self, selector: str, window: str = "1h", at: float | None = None) -> dict[str, int]:
        """Samples stored per series over ``window`` (``count_over_time``), keyed by the label text."""
        out: dict[str, int] = {}
        for r in self.query(f"count_over_time({selector}[{window}])", at=at):
            key = ",".join(f"{k}={v}" for k, v in sorted(r["metric"].items()))
            out[key] = int(float(r["value"][1]))
        return out

    def wait_for(self, expr: str, timeout: float = 30.0, interval: float = 0.25) -> list[dict[str, Any]]:
        """Poll an instant query until it returns a non-empty result."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(expr)
            if result:
                return result
            if time.monotonic() > deadline:
                raise TimeoutError(f"no result for {expr!r} after {timeout}s")
            time.sleep(interval)


@contextlib.contextmanager
def running_prometheus(workdir: Path | None = None, **kwargs: Any) -> Iterator[Prometheus]:
    """Start a Prometheus for the duration of the block."""
    own = workdir is None
    wd = Path(tempfile.mkdtemp(prefix="kubescrape-prom-")) if own else workdir
    assert wd is not None
    wd.mkdir(parents=True, exist_ok=True)
    prom = Prometheus(wd, **kwargs)
    prom.start()
    try:
        yield prom
    finally:
        prom.stop()
        if own:
            shutil.rmtree(wd, ignore_errors=True)
