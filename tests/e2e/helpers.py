"""Shared end-to-end helpers: a real HTTPS metrics server on loopback with bearer-token checking, and a
Categraf config directory written from the seed files with URLs and paths pointed at test servers."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import re
import signal
import socket
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from kubescrape.emulator.pki import CertificateAuthority, CertPair, server_ssl_context, write_private

SEED_DIR = Path(__file__).resolve().parent.parent / "data" / "categraf_seed"
PLAIN_HTTP_ON_TLS_BODY = b"Client sent an HTTP request to an HTTPS server.\n"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class TLSFiles:
    """A CA and a serving certificate for 127.0.0.1/localhost, written to ``directory``."""

    ca: CertificateAuthority
    server: CertPair
    ca_file: Path
    cert_file: Path
    key_file: Path

    @classmethod
    def create(cls, directory: Path, *, ips: tuple[str, ...] = ("127.0.0.1",),
               dns_names: tuple[str, ...] = ("localhost",)) -> TLSFiles:
        ca = CertificateAuthority.create()
        server = ca.issue_server("kubelet", ips=ips, dns_names=dns_names)
        directory.mkdir(parents=True, exist_ok=True)
        ca_file = directory / "ca.crt"
        ca_file.write_bytes(ca.cert_pem)
        server.write(directory / "tls.crt", directory / "tls.key")
        return cls(ca, server, ca_file, directory / "tls.crt", directory / "tls.key")


@dataclass
class MetricsServer:
    """A kubelet-like metrics endpoint: serves ``pages`` (path → exposition text), answers 401
    ``Unauthorized`` unless the request carries one of ``tokens`` (None = no auth), gzips when asked."""

    pages: dict[str, str]
    tokens: set[str] | None = None
    tls: TLSFiles | None = None
    host: str = "127.0.0.1"
    port: int = 0
    before: Callable[[], None] | None = None
    """Called as each request arrives, before the token check (tests rotate tokens here)."""
    requests: list[dict[str, str]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    _runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(dict(request.headers))
        if self.before is not None:
            self.before()
        if self.tokens is not None:
            auth = request.headers.get("Authorization", "")
            if not auth.startswith("Bearer ") or auth[len("Bearer "):] not in self.tokens:
                self.statuses.append(401)
                return web.Response(status=401, text="Unauthorized\n")
        text = self.pages.get(request.path)
        if text is None:
            self.statuses.append(404)
            return web.Response(status=404, text="404 page not found\n")
        self.statuses.append(200)
        body = text.encode()
        headers = {"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            body = gzip.compress(body)
            headers["Content-Encoding"] = "gzip"
        return web.Response(body=body, headers=headers)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        ssl_ctx = server_ssl_context(self.tls.server) if self.tls else None
        self.port = self.port or free_port(self.host)
        await web.TCPSite(self._runner, self.host, self.port, ssl_context=ssl_ctx).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@contextlib.asynccontextmanager
async def metrics_server(pages: Mapping[str, str], *, tokens: set[str] | None = None,
                         tls: TLSFiles | None = None) -> AsyncIterator[MetricsServer]:
    """Run a :class:`MetricsServer` for the duration of the block."""
    server = MetricsServer(dict(pages), tokens=tokens, tls=tls)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def rotate_token(token_file: Path, new_token: str, server: MetricsServer) -> None:
    """Rotate like a projected ServiceAccount volume: the file is replaced atomically and, at the same
    moment, the server stops accepting every other token."""
    write_private(token_file, new_token.encode(), 0o600)
    server.tokens = {new_token}


def write_categraf_config(
    dest: Path,
    *,
    urls: Mapping[str, str],
    writer_url: str,
    token_file: Path | None = None,
    interval: float | None = None,
    tls_ca: Path | None = None,
) -> Path:
    """Copy the seed's config.toml + input.prometheus/prometheus.toml to ``dest``, changing only what
    must point at the test: each seed URL (key of ``urls``, e.g. ``"https://127.0.0.1:10250/metrics"``)
    is replaced by its value, the token path by ``token_file``, the writer URL by ``writer_url``,
    ``interval`` (seconds) in ``[global]``; with ``tls_ca`` the ``insecure_skip_verify = true`` lines
    become ``tls_ca = "<path>"`` (verification on). Returns ``dest``."""
    main = (SEED_DIR / "config.toml").read_text()
    main = re.sub(r'(?m)^url = ".*"$', f'url = "{writer_url}"', main)
    if interval is not None:
        short = "\nallow_short_intervals = true" if interval < 1 else ""
        main = re.sub(r"(?m)^interval = .*$", f"interval = {interval:g}{short}", main, count=1)
    inputs = (SEED_DIR / "input.prometheus" / "prometheus.toml").read_text()
    for old, new in urls.items():
        if f'"{old}"' not in inputs:
            raise ValueError(f"{old} is not a URL of the seed prometheus.toml")
        inputs = inputs.replace(f'"{old}"', f'"{new}"')
    if token_file is not None:
        inputs = inputs.replace("/var/run/secrets/kubernetes.io/serviceaccount/token", str(token_file))
    if tls_ca is not None:
        inputs = inputs.replace("insecure_skip_verify = true", f'tls_ca = "{tls_ca}"')
    (dest / "input.prometheus").mkdir(parents=True, exist_ok=True)
    (dest / "config.toml").write_text(main)
    (dest / "input.prometheus" / "prometheus.toml").write_text(inputs)
    return dest


async def terminate(proc: asyncio.subprocess.Process, timeout: float) -> tuple[int | None, str]:
    """SIGTERM ``proc`` (a ``kubescrape`` started with ``stderr=PIPE``), wait up to ``timeout`` s, kill it if
    it is still running; return its exit code (``None`` if it had to be killed) and its stderr."""
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
    code: int | None
    try:
        code = await asyncio.wait_for(proc.wait(), timeout)
    except TimeoutError:
        code = None
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.stderr is not None
    return code, (await proc.stderr.read()).decode()
