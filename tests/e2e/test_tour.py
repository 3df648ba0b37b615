"""The README's local tour, as a newcomer types it: `kubescrape receive`,
`kubescrape emulate --write-config DIR`, `kubescrape run --config-dir DIR` — three processes, no file edited
by hand — and the emulator's series arrive at the receiver."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.e2e.helpers import free_port

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def _process(args: list[str], cwd: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "kubescrape", *args], cwd=cwd, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def _wait_for(what: str, check: Callable[[], bool], timeout: float, logs: list[Path]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}\n" + "\n".join(
        f"--- {p.name}\n{p.read_text(errors='replace')}" for p in logs if p.exists()))


def _series(base: str, name: str) -> list[dict[str, str]]:
    try:
        with urllib.request.urlopen(f"{base}/series?name={name}", timeout=5) as resp:
            return [row["labels"] for row in json.load(resp)["series"]]
    except OSError:
        return []


def test_receive_emulate_write_config_run(tmp_path: Path) -> None:
    recv_port, proxy_port = free_port(), free_port()
    base = f"http://127.0.0.1:{recv_port}"
    logs = [tmp_path / "receive.log", tmp_path / "emulate.log", tmp_path / "run.log"]
    conf = tmp_path / "conf"
    with _process(["receive", "--listen", f"127.0.0.1:{recv_port}", "--summary-interval", "1"],
                  tmp_path, logs[0]) as receiver:
        _wait_for("the receiver", lambda: receiver.poll() is None and _series(base, "x") == [] and
                  "receiving remote write" in logs[0].read_text(), 30, logs)
        with _process(["emulate", "--state-dir", "kubelet", "--port", "0", "--healthz-port", "0",
                       "--proxy-port", str(proxy_port), "--pods", "3", "--write-config", str(conf),
                       "--writer-url", f"{base}/api/v1/write", "--interval", "3"], tmp_path, logs[1]):
            _wait_for("the config directory", lambda: (conf / "input.prometheus" / "prometheus.toml").exists()
                      and (conf / "config.toml").exists(), 60, logs)
            with _process(["run", "--config-dir", str(conf), "--listen", "", "--spool-dir", "spool",
                           "--summary-interval", "1"], tmp_path, logs[2]) as agent:
                def every_job_up() -> bool:
                    up = {s.get("job"): s for s in _series(base, "up")}
                    return {"kubelet", "cadvisor", "kube-proxy"} <= set(up)

                _wait_for("up{job=kubelet|cadvisor|kube-proxy} at the receiver", every_job_up, 90, logs)
                # the emulator's own payloads, not just the agent's synthetic series
                cadvisor = _series(base, "container_cpu_usage_seconds_total")
                assert cadvisor and all(s["job"] == "cadvisor" for s in cadvisor)
                assert any(s.get("namespace") for s in cadvisor)
                assert _series(base, "kubelet_running_pods")
                # the log says that sending works, not only when it fails
                _wait_for("the agent's summary line",
                          lambda: "summary: 3/3 targets up" in logs[2].read_text(), 30, logs)
                assert "first delivery succeeded" in logs[2].read_text()
                agent.send_signal(signal.SIGTERM)
                assert agent.wait(60) == 0, logs[2].read_text()
        _wait_for("a summary line", lambda: "samples/s over the last" in logs[0].read_text(), 30, logs)
    assert receiver.returncode == 0
    assert "stopped:" in logs[0].read_text()
    main = (conf / "config.toml").read_text()
    assert f'url = "{base}/api/v1/write"' in main and "interval = 3" in main
    inputs = (conf / "input.prometheus" / "prometheus.toml").read_text()
    assert "insecure_skip_verify" not in inputs and "tls_ca" in inputs
