"""`kubescrape run`'s options are declared once (kubescrape/run_options.py): the typer-free fast parser of
``python -m kubescrape run`` gives run_command exactly what typer gives it, and leaves everything it is not
sure of (help, typos, bad values) to typer."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from kubescrape import agent
from kubescrape.cli import app
from kubescrape.run_options import RUN_OPTIONS, parse_run_args, run_kwargs

ROOT = Path(__file__).resolve().parents[1]

LINES = [
    [],
    ["--config-dir", "/etc/categraf/conf", "--listen", "0.0.0.0:9101", "--spool-dir", "/var/lib/s"],
    ["-c", "conf2", "--test", "--listen", ""],
    ["--listen=", "--writer-url", "http://a:1/w", "--writer-url=http://b:2/w", "--no-spool"],
    ["--spool", "--no-spool", "--spool", "--spool-max-bytes", "1_000", "--shutdown-timeout", "2.5"],
    ["--config", "prom.yml", "--strict", "--quiet", "--summary-interval", "0", "--log-level", "debug"],
    ["--shard-count", "3", "--shard-index", "kubescrape-2", "--shard-replication", "2"],
    ["--summary-interval", "-5", "--shutdown-timeout", "inf", "--config-dir", ""],
    ["--listen", "a:1", "--listen", "b:2"],
]

NOT_SURE = [
    ["--help"],
    ["--config-dir"],
    ["--listen", "--test"],
    ["--tets"],
    ["extra"],
    ["--test=true"],
    ["-c=conf"],
    ["-cconf"],
    ["--shard-count", "0"],
    ["--shard-replication", "x"],
    ["--spool-max-bytes", "1.5"],
    ["--summary-interval", "soon"],
    ["--", "--test"],
]


def _typer_values(args: list[str], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    seen: list[dict[str, Any]] = []

    def record(**kwargs: Any) -> int:
        seen.append(kwargs)
        return 0

    monkeypatch.setattr(agent, "run_command", record)
    result = CliRunner().invoke(app, ["run", *args])
    assert result.exit_code == 0, result.output
    return seen[0]


@pytest.mark.parametrize("args", LINES, ids=" ".join)
def test_the_fast_parser_agrees_with_typer(args: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    values = parse_run_args(args)
    assert values is not None
    assert run_kwargs(values) == _typer_values(args, monkeypatch)


@pytest.mark.parametrize("args", NOT_SURE, ids=" ".join)
def test_anything_else_is_left_to_typer(args: list[str]) -> None:
    assert parse_run_args(args) is None


def test_every_option_is_in_the_table_once() -> None:
    flags = [f for o in RUN_OPTIONS for f in (*o.flags, *([o.negative] if o.negative else []))]
    assert len(flags) == len(set(flags))
    assert len({o.param for o in RUN_OPTIONS}) == len(RUN_OPTIONS)


def _main(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kubescrape", *args],
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                          timeout=120, check=False)


def test_python_m_kubescrape_run_reports_config_errors_through_the_fast_path(tmp_path: Path) -> None:
    proc = _main("run", "--config-dir", str(tmp_path), "--listen", "")
    assert proc.returncode == 2
    assert f"config.toml not found in {tmp_path}" in proc.stderr


def test_python_m_kubescrape_leaves_bad_run_options_and_other_commands_to_typer() -> None:
    proc = _main("run", "--shard-count", "0")
    assert proc.returncode == 2
    assert "Invalid value for '--shard-count'" in proc.stderr
    proc = _main("manifests", "--help")
    assert proc.returncode == 0 and "Usage: " in proc.stdout
