"""`kubescrape demo` as a newcomer sees it: in a real 80-column terminal (tmux) nothing is cut or broken
mid-URL, and without a terminal the output is plain lines, one record each, never wrapped."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ("Forbidden (user=system:serviceaccount:default:unbound, verb=get, resource=nodes, "
             "subresource=metrics)")
URL = re.compile(r"https?://[^\s│╭╮╰╯─)]+")
WHOLE_URL = re.compile(r"https?://127\.0\.\d+\.\d+:\d{2,5}(/api/v1/write|/metrics(/cadvisor)?|/targets)?")
ROLES = ("kube-proxy", "kubelet", "cadvisor")


def _demo_args(state_dir: Path) -> list[str]:
    return [sys.executable, "-m", "kubescrape", "demo", "--duration", "12", "--pods", "3", "--receiver",
            "embedded", "--state-dir", str(state_dir)]


def _targets(state_dir: Path) -> list[str]:
    inputs = tomllib.loads((state_dir / "conf" / "input.prometheus" / "prometheus.toml").read_text())
    return [url for instance in inputs["instances"] for url in instance["urls"]]


def _final_numbers(text: str) -> None:
    """The final totals and the done line agree."""
    sent = re.findall(r"sent ([\d,]+)", text)
    done = re.search(r"done: (\d+)/(\d+) targets up, ([\d,]+) samples sent, ([\d,]+) series", text)
    assert done, text
    assert sent and sent[-1] == done.group(3), text
    series = re.findall(r"series at receiver ([\d,]+)", text)
    assert series and series[-1] == done.group(4), text
    assert done.group(1) == done.group(2) == "3"


def test_demo_in_an_80_column_terminal(tmp_path: Path) -> None:
    if shutil.which("tmux") is None:
        pytest.fail("tmux is not installed: run `bash scripts/test`, which installs scripts/apt.d/*.txt")
    socket_name = f"kubescrape-test-{os.getpid()}"
    tmux = ["tmux", "-L", socket_name, "-f", "/dev/null"]
    state = tmp_path / "state"
    command = (f"cd {shlex.quote(str(tmp_path))} && PYTHONPATH={shlex.quote(str(ROOT))} "
               f"{shlex.join(_demo_args(state))}; echo DEMO-EXIT=$?; sleep 120")
    subprocess.run([*tmux, "new-session", "-d", "-x", "80", "-y", "50", command], check=True)
    try:
        deadline = time.monotonic() + 120
        text = ""
        while time.monotonic() < deadline:
            text = subprocess.run([*tmux, "capture-pane", "-p", "-S", "-500"], capture_output=True, text=True,
                                  check=True).stdout
            if "DEMO-EXIT=" in text:
                break
            time.sleep(0.5)
    finally:
        subprocess.run([*tmux, "kill-server"], check=False)
    assert "DEMO-EXIT=0" in text, text
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80
    # no URL broken across lines: every URL printed is whole, and each ends its word
    urls = URL.findall(text)
    assert urls, text
    for url in urls:
        assert WHOLE_URL.fullmatch(url), f"broken or cut URL {url!r} in\n{text}"
    # no truncated row or cell: rich marks a cut with an ellipsis
    assert "…" not in text and "..." not in text, text
    # one row per target, labelled by role, with its whole host:port/path
    for target in _targets(state):
        endpoint = target.split("://", 1)[1]
        row = [line for line in lines if endpoint in line.split()]
        assert row, f"no row for {endpoint} in\n{text}"
        role = "kube-proxy" if target.startswith("http:") else (
            "cadvisor" if target.endswith("/cadvisor") else "kubelet")
        assert any(line.split()[0] == role for line in row), row
    # the 403 row names the unbound ServiceAccount and shows the kubelet's whole body (wrapped at spaces)
    assert "403" in text and "unbound ServiceAccount" in text
    flat = " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())
    assert FORBIDDEN in flat, text
    assert re.search(r"agent status: http://127\.0\.0\.1:\d+/targets", text)
    _final_numbers(text)


def test_demo_without_a_terminal_prints_plain_lines(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "80"}
    env.pop("FORCE_COLOR", None)
    proc = subprocess.Popen(_demo_args(tmp_path / "state"), cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        head = []
        for line in proc.stdout:
            head.append(line)
            if line.startswith("agent status: "):
                # the printed status URL is live while the demo runs
                with urllib.request.urlopen(line.split()[-1], timeout=10) as resp:
                    assert resp.status == 200 and "cadvisor" in resp.read().decode()
                break
        rest, errors = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = "".join(head) + rest
    assert proc.returncode == 0, out + errors
    assert "\x1b[" not in out  # no colours, no cursor movement
    lines = out.splitlines()
    # every line is a whole record: it starts with one of the demo's own prefixes (a wrapped line would not)
    prefixes = ("kubelet emulator:", "  CA ", "receiver:", "agent config:", "  config.toml", "GET https://",
                "agent status:", "final:", "done:")
    for line in lines:
        assert line.startswith(prefixes) or re.match(r"\d+s: ", line), f"not a record: {line!r}\n{out}"
    # lines are not wrapped at 80 columns: the 403 line holds the whole body
    denied = [line for line in lines if line.startswith("GET ") and ": 403 " in line]
    assert len(denied) == 1 and denied[0].endswith(FORBIDDEN) and len(denied[0]) > 80
    assert "unbound ServiceAccount" in denied[0]
    for role in ROLES:
        assert any(line.startswith(f"final: target {role} ") for line in lines), out
    assert re.search(r"^agent status: http://127\.0\.0\.1:\d+/targets$", out, re.M)
    _final_numbers(out)
