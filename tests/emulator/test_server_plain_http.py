"""Plain HTTP on the secure port ends like Go's server ends it: the 400 body, then a clean close (FIN), not a
reset — Go has read the small request before answering, so the kernel has nothing unread to reset over."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kubescrape.emulator.fleet import Emulator
from kubescrape.emulator.server import GO_PLAIN_HTTP_RESPONSE, NodeSpec


class _Payloads:
    def __init__(self, spec: NodeSpec, pods: int) -> None:
        self.body = b"up 1\n"

    def metrics(self) -> bytes:
        return self.body

    cadvisor = resource = probes = kube_proxy_metrics = stats_summary = pods_json = configz = metrics


@pytest.fixture
async def emu(tmp_path: Path) -> AsyncIterator[Emulator]:
    async with Emulator(tmp_path / "state", port=0, healthz_port=None, proxy_port=None, pods=1,
                        payload_factory=_Payloads) as e:
        yield e


def _read_to_eof(port: int, request: bytes) -> bytes:
    """Send ``request`` and read until EOF; a reset raises ConnectionResetError (the test fails)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        chunks = []
        while chunk := s.recv(4096):
            chunks.append(chunk)
        return b"".join(chunks)


async def test_plain_http_gets_the_400_and_a_clean_close(emu: Emulator) -> None:
    request = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n"
    for _ in range(5):  # a reset would show up at least once in a few tries
        assert await asyncio.to_thread(_read_to_eof, emu.nodes[0].port, request) == GO_PLAIN_HTTP_RESPONSE
    assert emu.stats.plain_http_rejected == 5


async def test_bytes_that_are_neither_tls_nor_http_are_dropped_without_a_reset(emu: Emulator) -> None:
    assert await asyncio.to_thread(_read_to_eof, emu.nodes[0].port, b"\x00\x01\x02\x03\x04junk") == b""


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed (scripts/apt.d/newcomer.txt)")
async def test_curl_prints_the_message_and_exits_0(emu: Emulator) -> None:
    proc = await asyncio.to_thread(
        subprocess.run, ["curl", "-sS", "--max-time", "10", f"http://127.0.0.1:{emu.nodes[0].port}/metrics"],
        capture_output=True, text=True, check=False)
    assert proc.stdout == "Client sent an HTTP request to an HTTPS server.\n"
    assert proc.returncode == 0, proc.stderr  # 56 = "Recv failure: Connection reset by peer"
