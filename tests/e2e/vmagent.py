"""vmagent (Debian ``victoria-metrics``) as the reference Kubernetes service discovery: run it with a
scrape configuration and read its targets API."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from tests.e2e.helpers import free_port

VMAGENT = shutil.which("vmagent")


def vmagent_available() -> bool:
    """True when the ``vmagent`` binary is installed."""
    return VMAGENT is not None


@contextlib.asynccontextmanager
async def running_vmagent(config: Path, workdir: Path, *extra: str) -> AsyncIterator[str]:
    """Start vmagent on a free loopback port with ``config``; yields its base URL. Remote write goes to a
    closed port: only discovery is under test."""
    assert VMAGENT is not None
    port = free_port()
    log = (workdir / "vmagent.log").open("w")
    proc = await asyncio.create_subprocess_exec(
        VMAGENT, f"-httpListenAddr=127.0.0.1:{port}", f"-promscrape.config={config}",
        "-remoteWrite.url=http://127.0.0.1:9/api/v1/write", f"-remoteWrite.tmpDataPath={workdir / 'vmdata'}",
        "-promscrape.kubernetesSDCheckInterval=1s", "-loggerLevel=ERROR", *extra,
        stdout=log, stderr=subprocess.STDOUT)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        log.close()


async def vmagent_targets(url: str) -> dict[str, Any]:
    """``/api/v1/targets`` data (``activeTargets``, ``droppedTargets``)."""
    async with aiohttp.ClientSession() as s, s.get(f"{url}/api/v1/targets",
                                                    timeout=aiohttp.ClientTimeout(total=10)) as r:
        data: dict[str, Any] = json.loads(await r.read())["data"]
        return data
