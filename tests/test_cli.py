"""The command line: every option explains itself, flags read as flags, and `kubescrape run` starts lean."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.core import TyperGroup, TyperOption
from typer.testing import CliRunner

from kubescrape import receiver
from kubescrape.cli import RECEIVER_LISTEN, RECEIVER_WRITE_URL, app

ROOT = Path(__file__).resolve().parents[1]


def _group() -> TyperGroup:
    group = typer.main.get_command(app)
    assert isinstance(group, TyperGroup)
    return group


COMMANDS = sorted(_group().commands)


def test_every_command_is_listed() -> None:
    assert COMMANDS == ["demo", "doctor", "emulate", "manifests", "receive", "run"]


@pytest.mark.parametrize("name", COMMANDS)
def test_every_option_has_help_text_and_the_help_renders(name: str) -> None:
    command = _group().commands[name]
    missing = [p.name for p in command.params if not (getattr(p, "help", None) or "").strip()]
    assert not missing, f"`kubescrape {name}`: options without help text: {missing}"
    result = CliRunner().invoke(app, [name, "--help"], terminal_width=100)
    assert result.exit_code == 0, result.output
    assert command.help and command.help.splitlines()[0] in result.output
    for param in command.params:
        if isinstance(param, TyperOption):
            assert param.opts[0] in result.output
            if param.is_flag:
                # a flag is shown as a flag, not as an option taking a <bool>
                line = next(ln for ln in result.output.splitlines() if param.opts[0] in ln)
                assert "<bool>" not in line and "BOOLEAN" not in line, line
    options = result.output.split("Options:")[1]
    assert "<bool>" not in options and "<str>" not in options and "<path>" not in options, options


def test_help_text_is_not_read_as_markup() -> None:
    out = CliRunner().invoke(app, ["run", "--help"], terminal_width=200).output
    assert "Replaces the [[writers]] of config.toml" in " ".join(out.split())
    assert "--spool / --no-spool" in out or "--spool/--no-spool" in out


def test_cli_defaults_point_at_the_receiver() -> None:
    assert RECEIVER_LISTEN == receiver.DEFAULT_LISTEN
    assert RECEIVER_WRITE_URL == receiver.DEFAULT_WRITE_URL


def _modules_after(code: str) -> set[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code + "; import sys, json; "
                          "print(json.dumps(sorted(sys.modules)), file=sys.stderr)"],
                         env=env, capture_output=True, text=True, check=False)
    return set(json.loads(out.stderr.strip().splitlines()[-1]))


HEAVY = ("rich", "aiohttp", "pydantic", "kubescrape.doctor", "kubescrape.emulator", "kubescrape.deploy",
         "kubescrape.demo", "kubescrape.agent")


def test_importing_the_cli_loads_no_command_module() -> None:
    loaded = _modules_after("import kubescrape.cli")
    assert not [m for m in loaded if m.split(".")[0] in HEAVY or m.startswith(HEAVY)]


def test_run_loads_neither_rich_nor_the_other_commands(tmp_path: Path) -> None:
    # `run` on a missing directory stops at the configuration check, after the run path's imports
    missing = str(tmp_path / "missing")
    code = (f"import sys; sys.argv = ['kubescrape', 'run', '--config-dir', {missing!r}]\n"
            "from kubescrape.cli import app\n"
            "try:\n    app()\nexcept SystemExit:\n    pass")
    loaded = _modules_after(code)
    assert "kubescrape.agent" in loaded
    unwanted = ("rich", "kubescrape.doctor", "kubescrape.emulator", "kubescrape.deploy", "kubescrape.demo")
    assert not [m for m in loaded if m.split(".")[0] == "rich" or m.startswith(unwanted)]


def test_run_help_does_not_load_rich() -> None:
    code = ("import sys; sys.argv = ['kubescrape', 'run', '--help']\n"
            "from kubescrape.cli import app\n"
            "try:\n    app()\nexcept SystemExit:\n    pass")
    assert not [m for m in _modules_after(code) if m.split(".")[0] == "rich"]


def test_receive_print_lines() -> None:
    lines = receiver.format_series([
        ({"__name__": "up", "job": "kubelet", "instance": 'a"b'}, [(1.0, 1000), (float("nan"), 2000)]),
        ({"__name__": "bare"}, [(float("inf"), 5)]),
    ])
    assert lines == [
        'up{instance="a\\"b",job="kubelet"} 1.0 1000',
        'up{instance="a\\"b",job="kubelet"} NaN 2000',
        "bare +Inf 5",
    ]


def test_a_missing_config_toml_names_the_directory_once(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["run", "--config-dir", str(tmp_path), "--listen", ""])
    assert result.exit_code == 2
    assert f"config.toml not found in {tmp_path}" in result.output
    assert result.output.count(str(tmp_path)) == 1, result.output
    assert "emulate --write-config" in result.output


@pytest.mark.parametrize(
    ("index", "message"),
    [("7", "--shard-index 7 is outside 0..2"), ("agent", "does not end in -<number>")],
)
def test_a_bad_shard_index_is_a_configuration_error(tmp_path: Path, index: str, message: str) -> None:
    (tmp_path / "input.prometheus").mkdir()
    (tmp_path / "config.toml").write_text('[global]\nhostname = "n"\n')
    (tmp_path / "input.prometheus" / "prometheus.toml").write_text(
        '[[instances]]\nurls = ["http://127.0.0.1:9/metrics"]\n'
    )
    result = CliRunner().invoke(app, ["run", "--config-dir", str(tmp_path), "--listen", "", "--test",
                                      "--shard-count", "3", "--shard-index", index])
    assert result.exit_code == 2, result.output
    assert message in result.output
