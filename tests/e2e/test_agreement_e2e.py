"""doctor and `run --test` agree: the same Categraf configuration, loaded once per row, is diagnosed by doctor
and scraped once by the agent (``Agent.scrape_once``, what ``kubescrape run --test`` runs), against the real
kubelet emulator (real TLS, real tokens, its authn → authz chain) on loopback. In every row both verdicts must
equal the expected one — doctor predicts the agent because it runs the agent's own fetch and parse.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from kubescrape.agent import Agent
from kubescrape.config.categraf import load_categraf
from kubescrape.doctor import diagnose_all
from kubescrape.emulator.fleet import Emulator
from kubescrape.emulator.pki import CertificateAuthority
from kubescrape.scrape.targets import build_targets
from tests.e2e.test_doctor_e2e import expired_node_state

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Env:
    """What a row may point its configuration at."""

    emu: Emulator
    tmp: Path

    @property
    def https(self) -> str:
        return self.emu.nodes[0].url + "/metrics"

    @property
    def http_to_https_port(self) -> str:
        node = self.emu.nodes[0]
        return f"http://{node.address}:{node.port}/metrics"

    @property
    def https_to_http_port(self) -> str:
        node = self.emu.nodes[0]
        return f"https://{node.address}:{node.proxy_port}/metrics"

    @property
    def ca(self) -> str:
        return str(self.emu.ca_path)

    def token(self, namespace: str = "flashcat", name: str = "categraf-daemonset") -> str:
        return str(self.emu.token_path(namespace, name))

    def file(self, name: str, content: str | bytes) -> str:
        path = self.tmp / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return str(path)

    def other_ca(self) -> str:
        return self.file("other-ca.crt", CertificateAuthority.create("someone-else").cert_pem)


Row = Callable[[Env], dict[str, object]]

ROWS: list[tuple[str, Row, bool]] = [
    ("good: use_tls, tls_ca, token",
     lambda e: {"urls": [e.https], "use_tls": True, "tls_ca": e.ca, "bearer_token_file": e.token()}, True),
    ("use_tls on, insecure_skip_verify on",
     lambda e: {"urls": [e.https], "use_tls": True, "insecure_skip_verify": True,
                "bearer_token_file": e.token()}, True),
    ("use_tls on, insecure_skip_verify off, no tls_ca",
     lambda e: {"urls": [e.https], "use_tls": True, "bearer_token_file": e.token()}, False),
    # Categraf builds no TLS config without use_tls: https is verified against the system store.
    ("use_tls off, insecure_skip_verify on",
     lambda e: {"urls": [e.https], "use_tls": False, "insecure_skip_verify": True,
                "bearer_token_file": e.token()}, False),
    ("use_tls off, insecure_skip_verify off, tls_ca set",
     lambda e: {"urls": [e.https], "use_tls": False, "tls_ca": e.ca, "bearer_token_file": e.token()}, False),
    ("wrong CA",
     lambda e: {"urls": [e.https], "use_tls": True, "tls_ca": e.other_ca(), "bearer_token_file": e.token()},
     False),
    ("wrong server name",
     lambda e: {"urls": [e.https], "use_tls": True, "tls_ca": e.ca, "tls_server_name": "kubelet.example",
                "bearer_token_file": e.token()}, False),
    ("right server name",
     lambda e: {"urls": [e.https], "use_tls": True, "tls_ca": e.ca, "tls_server_name": "node-1",
                "bearer_token_file": e.token()}, True),
    ("HTTP to the HTTPS port",
     lambda e: {"urls": [e.http_to_https_port], "bearer_token_file": e.token()}, False),
    ("HTTPS to an HTTP port",
     lambda e: {"urls": [e.https_to_http_port], "use_tls": True, "insecure_skip_verify": True}, False),
    ("missing token file",
     lambda e: {"urls": [e.https], "use_tls": True, "tls_ca": e.ca,
                "bearer_token_file": str(e.tmp / "no-such-token")}, False),
    ("garbage token (401)",
     lambda e: {"urls": [e.https], "use_tls": True, "tls_ca": e.ca,
                "bearer_token_file": e.file("garbage", "123456\n")}, False),
    ("no credentials (401)",
     lambda e: {"urls": [e.https], "use_tls": True, "tls_ca": e.ca}, False),
    ("unbound token (403)",
     lambda e: {"urls": [e.https], "use_tls": True, "tls_ca": e.ca,
                "bearer_token_file": e.token("default", "unbound")}, False),
    ("client certificate (admin)",
     lambda e: {"urls": [e.https], "use_tls": True, "tls_ca": e.ca,
                "tls_cert": str(e.emu.admin_cert_paths()[0]), "tls_key": str(e.emu.admin_cert_paths()[1])},
     True),
    ("bearer_token_string (401)",
     lambda e: {"urls": [e.https], "use_tls": True, "tls_ca": e.ca, "bearer_token_string": "not-a-token"},
     False),
]


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_config(directory: Path, instance: dict[str, object]) -> Path:
    (directory / "input.prometheus").mkdir(parents=True)
    (directory / "config.toml").write_text('[global]\nhostname = "node-1"\ninterval = 15\n')
    lines = ["[[instances]]", *(f"{k} = {_toml(v)}" for k, v in instance.items()), "timeout = 5",
             'labels = { job="kubelet" }']
    (directory / "input.prometheus" / "prometheus.toml").write_text("\n".join(lines) + "\n")
    return directory


@pytest.fixture
async def emulator(tmp_path: Path) -> AsyncIterator[Emulator]:
    async with Emulator(tmp_path / "state", port=0, healthz_port=None, proxy_port=0, pods=3) as emu:
        yield emu


async def verdicts(config_dir: Path) -> tuple[bool, bool, str, str]:
    """(doctor ok, agent ok, doctor's finding, agent's error) for the one target of ``config_dir``."""
    config = load_categraf(config_dir)
    (diagnosis,) = await diagnose_all(build_targets(config), timeout=3)
    (report,) = await Agent(load_categraf(config_dir), sink=None).scrape_once()
    finding = f"{diagnosis.finding.cause}" if diagnosis.finding else ""
    return diagnosis.ok, report.ok, finding, str(report.error or "")


@pytest.mark.parametrize(("name", "row", "expected"), ROWS, ids=[r[0] for r in ROWS])
async def test_doctor_and_run_test_agree(
    emulator: Emulator, tmp_path: Path, name: str, row: Row, expected: bool
) -> None:
    env = Env(emulator, tmp_path)
    doctor_ok, agent_ok, finding, error = await verdicts(write_config(tmp_path / "conf", row(env)))
    sys.stderr.write(f"| {name:<52} | doctor {'up' if doctor_ok else 'DOWN':<4} | run --test "
                     f"{'up' if agent_ok else 'DOWN':<4} |\n")
    assert doctor_ok == agent_ok == expected, (finding, error)


async def test_expired_serving_certificate_agrees(tmp_path: Path) -> None:
    state = tmp_path / "state"
    expired_node_state(state)
    async with Emulator(state, port=0, healthz_port=None, proxy_port=None, pods=3) as emu:
        env = Env(emu, tmp_path)
        instance = {"urls": [env.https], "use_tls": True, "tls_ca": env.ca, "bearer_token_file": env.token()}
        doctor_ok, agent_ok, finding, error = await verdicts(write_config(tmp_path / "conf", instance))
    assert doctor_ok is False and agent_ok is False
    assert "expired" in finding and "expired" in error


@pytest.mark.parametrize(("use_tls", "expected_code"), [(False, 1), (True, 0)])
async def test_the_two_commands_agree_on_use_tls_and_insecure_skip_verify(
    emulator: Emulator, tmp_path: Path, use_tls: bool, expected_code: int
) -> None:
    """The case that used to split them: https with insecure_skip_verify, with and without use_tls."""
    env = Env(emulator, tmp_path)
    conf = write_config(tmp_path / "conf", {"urls": [env.https], "use_tls": use_tls,
                                            "insecure_skip_verify": True, "bearer_token_file": env.token()})
    codes = []
    for command in (["run", "--config-dir", str(conf), "--test"],
                    ["doctor", "--config-dir", str(conf), "--timeout", "3"]):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "kubescrape", *command, cwd=ROOT,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        codes.append(proc.returncode)
        if expected_code:
            assert "unknown authority" in (out + err).decode() or "does not trust" in (out + err).decode()
    assert codes == [expected_code, expected_code]
