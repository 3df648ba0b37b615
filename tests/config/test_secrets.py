"""Credentials in configuration are used, never shown: not in URLs, names, errors, warnings or dumps."""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from kubescrape.agent import run_command, writer_settings
from kubescrape.config.categraf import load_categraf
from kubescrape.config.models import AgentConfig, WriterConfig
from kubescrape.errors import ConfigError

PASSWORD = "PASS-w0rd"


def write(tmp_path: Path, config: str, prometheus: str = "") -> Path:
    (tmp_path / "config.toml").write_text(config)
    if prometheus:
        (tmp_path / "input.prometheus").mkdir(exist_ok=True)
        (tmp_path / "input.prometheus" / "prometheus.toml").write_text(prometheus)
    return tmp_path


def test_writer_url_credentials_become_basic_auth_and_leave_the_url() -> None:
    w = WriterConfig(url=f"https://alice:{PASSWORD}@rw.example:9090/api/v1/write")
    assert w.url == "https://rw.example:9090/api/v1/write"
    assert (w.basic_auth_user, w.basic_auth_pass) == ("alice", PASSWORD)
    assert w.safe_name == "rw.example:9090/api/v1/write"
    # basic_auth_user wins, as in Categraf; the URL still loses its userinfo.
    w = WriterConfig(url=f"https://alice:{PASSWORD}@rw:1/w", basic_auth_user="bob", basic_auth_pass="b")
    assert (w.url, w.basic_auth_user, w.basic_auth_pass) == ("https://rw:1/w", "bob", "b")


def test_loader_moves_writer_credentials_and_warns_on_conflict(tmp_path: Path) -> None:
    cfg = load_categraf(write(tmp_path, f'[[writers]]\nurl = "http://alice:{PASSWORD}@127.0.0.1:9090/w"\n'
                                        '\n[[writers]]\nurl = "http://u:x@127.0.0.1:9091/w"\n'
                                        'basic_auth_user = "bob"\nbasic_auth_pass = "b"\n'), env={})
    assert [w.url for w in cfg.writers] == ["http://127.0.0.1:9090/w", "http://127.0.0.1:9091/w"]
    assert [w.basic_auth_user for w in cfg.writers] == ["alice", "bob"]
    [warning] = [w for w in cfg.warnings if "[[writers]]" in w]
    assert "[[writers]] #2" in warning and "basic_auth_user" in warning and "x@" not in warning


def test_writer_name_label_and_spool_directory_carry_no_credentials(tmp_path: Path) -> None:
    cfg = load_categraf(write(tmp_path, f'[[writers]]\nurl = "https://alice:{PASSWORD}@rw:9090/api/v1/write"\n'),
                        env={})
    [settings] = writer_settings(cfg)
    assert settings.name == "rw:9090/api/v1/write" == cfg.writers[0].safe_name
    assert settings.url == "https://rw:9090/api/v1/write"
    assert settings.basic_auth == ("alice", PASSWORD)


@pytest.mark.parametrize(
    "config",
    [
        f'[[writers]]\nurl = "http://alice:{PASSWORD}@127.0.0.1:99999/w"\n',
        f'[[writers]]\nurl = "http://alice:{PASSWORD}@127.0.0.1:9090/a b"\n',
        # An unencoded "/" in the password: URL parsing sees no userinfo, the message still hides it.
        f'[[writers]]\nurl = "http://alice:{PASSWORD}/x@127.0.0.1:9090/w"\n',
        f'[[writers]]\nurl = "http://127.0.0.1:9090/w"\nbasic_auth_pass = ["{PASSWORD}"]\n',
        f'[[writers]]\nurl = "http://127.0.0.1:9090/w"\nbasic_auth_pass = "{PASSWORD}\n',
    ],
)
def test_errors_do_not_show_credentials(tmp_path: Path, config: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_categraf(write(tmp_path, config), env={})
    assert PASSWORD not in str(info.value)
    assert info.value.line is not None


def test_instance_errors_and_writer_url_option_do_not_show_credentials(tmp_path: Path) -> None:
    write(tmp_path, "", f'[[instances]]\nurls = ["http://alice:{PASSWORD}@127.0.0.1:70000/metrics"]\n'
                        f'\n[[instances]]\nurls = ["http://127.0.0.1:1/m"]\npassword = 5\n')
    with pytest.raises(ConfigError) as info:
        load_categraf(tmp_path, env={})
    assert PASSWORD not in str(info.value) and "70000" in str(info.value)
    with pytest.raises(ConfigError) as info:
        load_categraf(write(tmp_path, ""), env={}, writer_urls=[f"http://alice:{PASSWORD}@h:99999/w"])
    assert PASSWORD not in str(info.value)


def test_redacted_dump_has_no_secret(tmp_path: Path) -> None:
    cfg = load_categraf(write(
        tmp_path,
        f'[[writers]]\nurl = "http://alice:{PASSWORD}@127.0.0.1:9090/w"\n'
        f'headers = ["Authorization", "Bearer {PASSWORD}", "X-Tenant", "t1"]\n',
        f'[[instances]]\nurls = ["http://bob:{PASSWORD}@127.0.0.1:9100/metrics"]\n'
        f'bearer_token_string = "{PASSWORD}"\ntls_key_pwd = "{PASSWORD}"\n',
    ), env={})
    dump = cfg.redacted()
    text = json.dumps(dump)
    assert PASSWORD not in text
    assert dump["writers"][0]["basic_auth_pass"] == "<secret>"
    assert dump["writers"][0]["headers"] == {"Authorization": "<secret>", "X-Tenant": "t1"}
    assert dump["instances"][0]["urls"] == ["http://127.0.0.1:9100/metrics"]
    assert dump["instances"][0]["bearer_token_string"] == "<secret>"
    # The dump reads back into an equivalent (redacted) configuration.
    assert AgentConfig.model_validate(dump).instances[0].urls == ["http://127.0.0.1:9100/metrics"]


class _BasicAuthHandler(BaseHTTPRequestHandler):
    expected = "Basic " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode()

    def do_GET(self) -> None:
        ok = self.headers.get("Authorization") == self.expected
        body = b"node_up 1\n" if ok else b"Unauthorized\n"
        self.send_response(200 if ok else 401)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def basic_auth_server() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _BasicAuthHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_run_test_mode_scrapes_with_url_credentials_and_never_prints_them(
    tmp_path: Path, basic_auth_server: int, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"http://alice:{PASSWORD}@127.0.0.1:{basic_auth_server}/metrics"
    write(tmp_path, '[global]\nhostname = "node-1"\n', f'[[instances]]\nurls = ["{url}"]\n')
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        code = run_command(config_dir=tmp_path, writer_urls=[], test=True, listen="", spool_dir=tmp_path,
                           spool_max_bytes=1 << 20, spool=False, shutdown_timeout=1.0, log_level="info")
    finally:
        for h in list(root.handlers):
            if h not in handlers:
                root.removeHandler(h)
        root.setLevel(level)
    out, err = capsys.readouterr()
    assert code == 0, err
    clean = f"http://127.0.0.1:{basic_auth_server}/metrics"
    assert f'node_up{{agent_hostname="node-1",instance="{clean}"}} 1' in out
    assert f"up   {clean}" in err
    assert PASSWORD not in out + err and "alice" not in out + err


def test_unknown_option_warning_is_printed_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, '[global]\nhostname = "node-1"\ncolour = "blue"\n', "# no instances\n")
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        code = run_command(config_dir=tmp_path, writer_urls=[], test=True, listen="", spool_dir=tmp_path,
                           spool_max_bytes=1 << 20, spool=False, shutdown_timeout=1.0, log_level="warning")
    finally:
        for h in list(root.handlers):
            if h not in handlers:
                root.removeHandler(h)
        root.setLevel(level)
    err = capsys.readouterr().err
    assert code == 0, err
    assert err.count("unknown option 'colour'") == 1, err
