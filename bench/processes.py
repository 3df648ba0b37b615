"""Child processes of the benchmark: start in their own session, end by their own id, wait with deadlines."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from kubescrape.prometheus import free_port

ROOT = Path(__file__).resolve().parent.parent


def precompile() -> str:
    """Byte-compile this checkout's ``kubescrape`` (as ``pip install`` does for an installed copy) and
    return a line saying so: with ``PYTHONDONTWRITEBYTECODE`` set (CI and containers often set it) a
    source checkout would otherwise recompile every module at each start, ~0.2 s of CPU that a deployed
    agent never pays."""
    import compileall

    ok = compileall.compile_dir(str(ROOT / "kubescrape"), quiet=1)
    return f"kubescrape byte-compiled before measuring (compileall: {'ok' if ok else 'FAILED'})"


class Processes:
    """Every process the bench starts; ``close()`` ends them all (SIGTERM, then SIGKILL) by their own id."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, args: Sequence[str], log: Path, cwd: Path | None = None) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            p = subprocess.Popen(
                list(args),
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                start_new_session=True,
                env=child_env(),
            )
        self.procs.append(p)
        return p

    @staticmethod
    def stop(p: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=5)

    def close(self) -> None:
        for p in reversed(self.procs):
            self.stop(p)
        self.procs.clear()


def wait_tcp(
    host: str, port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None, log: Path | None = None
) -> None:
    """Wait until ``host:port`` accepts a connection (fail early if ``proc`` exits)."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(
                f"process exited with {proc.returncode} before listening on {host}:{port}: {tail(log)}"
            )
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listening on {host}:{port} after {timeout:g} s: {tail(log)}")
        time.sleep(0.1)


def tail(log: Path | None, n: int = 15) -> str:
    if log is None:
        return ""
    with contextlib.suppress(OSError):
        return "\n".join(log.read_text(errors="replace").splitlines()[-n:])
    return ""


def http_get(url: str, timeout: float = 10.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        body: bytes = r.read()
    return body.decode()


_T0 = time.monotonic()


def progress(message: str) -> None:
    """A progress line on stderr with the seconds since the bench started."""
    print(f"[{time.monotonic() - _T0:6.1f} s] {message}", file=sys.stderr, flush=True)


def kubescrape_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "kubescrape", *args]


def child_env() -> dict[str, str]:
    """The environment for child processes: this checkout's ``kubescrape`` first, even if not installed."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def node_addresses(nodes: int) -> list[str]:
    """Where the emulator's nodes listen: 127.0.0.1 for one node, 127.0.1.k for node k otherwise."""
    return ["127.0.0.1"] if nodes == 1 else [f"127.0.1.{k}" for k in range(1, nodes + 1)]


def free_port_on_all(hosts: Sequence[str]) -> int:
    """A port free on every host given (checked by binding)."""
    for _ in range(50):
        port = free_port(hosts[0])
        ok = True
        for h in hosts[1:]:
            with socket.socket() as s:
                try:
                    s.bind((h, port))
                except OSError:
                    ok = False
                    break
        if ok:
            return port
    raise RuntimeError("no port free on every emulated node address")
