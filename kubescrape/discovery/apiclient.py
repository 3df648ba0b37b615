"""A small Kubernetes API client for discovery: where the apiserver is, how to authenticate, list, watch.

Plain aiohttp rather than ``kubernetes_asyncio`` or ``lightkube``: discovery needs four calls (list,
watch, with selectors, on a handful of resources) and reads a few fields of each object, so the objects
stay the JSON dicts the server sent (no generated model classes to instantiate for thousands of pods),
and the TLS context and the re-read ServiceAccount token are the agent's own
(:func:`kubescrape.client.client_ssl_context`, :class:`kubescrape.auth.BearerToken`), shared with the
scrape loop instead of a second implementation inside a client library. Measured with
``bench/discovery.py`` (100 nodes × 50 pods, 600 pods replaced per minute, 2 CPUs): holding all 5,000
pods took 134 MiB resident and 0.24 CPU-seconds per minute of watching here, against 365 MiB and 1.64
for the official ``kubernetes`` client's models (which ``kubernetes_asyncio`` shares), and 44 MiB and
0.34 for vmagent (bench/results/2026-12-02-discovery.md).

Configuration comes from the pod's environment (:func:`in_cluster_config`: ``KUBERNETES_SERVICE_HOST``
/ ``_PORT``, the mounted token — re-read when it rotates — and CA) or from a kubeconfig file
(:func:`load_kubeconfig`: server, CA, client certificate, token or tokenFile; ``*-data`` fields are
written to a private temporary directory because Python's ssl module loads certificates from files).
"""

from __future__ import annotations

import atexit
import base64
import binascii
import json
import os
import shutil
import ssl
import tempfile
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from kubescrape.auth import IN_CLUSTER_CA_FILE, IN_CLUSTER_TOKEN_FILE, BearerToken
from kubescrape.client import client_ssl_context
from kubescrape.errors import ConfigError, KubescrapeError

Json = dict[str, Any]

__all__ = [
    "ApiClient",
    "ApiConfig",
    "ApiError",
    "DiscoveryError",
    "in_cluster_config",
    "load_kubeconfig",
]


class DiscoveryError(KubescrapeError):
    """Service discovery could not reach or use the Kubernetes API."""

    reason = "discovery"


class ApiError(DiscoveryError):
    """The apiserver answered with a failure ``Status`` (or a non-JSON error)."""

    def __init__(self, code: int, reason: str, message: str, fix: str | None = None) -> None:
        self.code = code
        self.status_reason = reason
        super().__init__(f"the Kubernetes API answered {code} {reason}: {message}", fix,
                         reason=f"http_{code}")


_FIXES = {
    401: "the token or client certificate was rejected: check bearer_token_file / the kubeconfig's user",
    403: "grant the ServiceAccount list and watch on this resource (a ClusterRole with verbs "
         "[get, list, watch]; kubescrape manifests --mode cluster prints one)",
    404: "the resource or API group is not served: check the role and the apiserver version",
}


@dataclass(frozen=True)
class _TLS:
    """The TLS options :func:`kubescrape.client.client_ssl_context` takes."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None
    insecure_skip_verify: bool = False
    use_tls: bool = True


@dataclass(frozen=True)
class ApiConfig:
    """Where the apiserver is and how to authenticate to it."""

    server: str
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    token_file: str | None = None
    token: str | None = None
    insecure_skip_verify: bool = False
    server_name: str | None = None
    namespace: str = "default"

    def ssl_context(self) -> ssl.SSLContext | None:
        """The client TLS context (None for an ``http://`` server)."""
        if not self.server.startswith("https://"):
            return None
        return client_ssl_context(_TLS(self.ca_file, self.cert_file, self.key_file, self.server_name,
                                       self.insecure_skip_verify))


def in_cluster_config(environ: Mapping[str, str] | None = None, *,
                      token_file: str | os.PathLike[str] = IN_CLUSTER_TOKEN_FILE,
                      ca_file: str | os.PathLike[str] = IN_CLUSTER_CA_FILE) -> ApiConfig:
    """client-go's ``rest.InClusterConfig``: ``https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT``
    with the mounted ServiceAccount token and CA."""
    env = os.environ if environ is None else environ
    host, port = env.get("KUBERNETES_SERVICE_HOST", ""), env.get("KUBERNETES_SERVICE_PORT", "")
    if not host or not port:
        raise DiscoveryError(
            "not running in a Kubernetes pod: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are "
            "not set",
            "run inside a pod, or set api_server / kubeconfig_file in kubernetes_sd_configs")
    if not Path(token_file).exists():
        raise DiscoveryError(f"the ServiceAccount token {token_file} does not exist",
                             "set automountServiceAccountToken: true (and serviceAccountName) on the pod")
    host = f"[{host}]" if ":" in host else host
    namespace = "default"
    ns_file = Path(token_file).parent / "namespace"
    if ns_file.exists():
        namespace = ns_file.read_text().strip() or "default"
    return ApiConfig(f"https://{host}:{port}", ca_file=str(ca_file), token_file=str(token_file),
                     namespace=namespace)


_DATA_DIRS: list[str] = []


def _data_file(data: str, name: str, where: str) -> str:
    """Write a kubeconfig ``*-data`` field (base64) to a private file; returns its path."""
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ConfigError(f"{name} is not valid base64", "paste the PEM base64-encoded, as kubectl writes it",
                          file=where, key=name) from e
    if not _DATA_DIRS:
        tmp = tempfile.mkdtemp(prefix="kubescrape-kubeconfig-")
        _DATA_DIRS.append(tmp)
        atexit.register(shutil.rmtree, tmp, True)
    fd, path = tempfile.mkstemp(dir=_DATA_DIRS[0], suffix=f"-{name}")
    with os.fdopen(fd, "wb") as f:
        f.write(raw)
    return path


def _named(items: Any, name: str, kind: str, where: str) -> Json:
    for item in items or ():
        if isinstance(item, dict) and item.get("name") == name:
            value = item.get(kind)
            return value if isinstance(value, dict) else {}
    raise ConfigError(f"no {kind} named {name!r}", f"add it to the kubeconfig's {kind}s", file=where)


def load_kubeconfig(path: str | os.PathLike[str], *, context: str | None = None) -> ApiConfig:
    """The server and credentials of ``context`` (default: ``current-context``) in a kubeconfig file."""
    where = str(path)
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except OSError as e:
        raise ConfigError(f"cannot read the kubeconfig: {e.strerror or e}", "check kubeconfig_file",
                          file=where) from e
    except yaml.YAMLError as e:
        raise ConfigError(f"the kubeconfig is not YAML: {e}", "fix the file", file=where) from e
    if not isinstance(doc, dict):
        raise ConfigError("the kubeconfig is empty or not a mapping", "point kubeconfig_file at a kubeconfig",
                          file=where)
    name = context or doc.get("current-context")
    if not name:
        raise ConfigError("the kubeconfig has no current-context", "set current-context", file=where)
    ctx = _named(doc.get("contexts"), name, "context", where)
    cluster = _named(doc.get("clusters"), ctx.get("cluster", ""), "cluster", where)
    user = _named(doc.get("users"), ctx.get("user", ""), "user", where) if ctx.get("user") else {}
    base = Path(path).parent

    def file_or_data(file_key: str, data_key: str, section: Json) -> str | None:
        if section.get(data_key):
            return _data_file(str(section[data_key]), data_key, where)
        if section.get(file_key):
            p = Path(str(section[file_key]))
            return str(p if p.is_absolute() else base / p)
        return None

    server = str(cluster.get("server", ""))
    if not server:
        raise ConfigError(f"cluster {ctx.get('cluster')!r} has no server", "set clusters[].cluster.server",
                          file=where)
    token_file = user.get("tokenFile")
    if token_file and not Path(token_file).is_absolute():
        token_file = str(base / token_file)
    return ApiConfig(
        server.rstrip("/"),
        ca_file=file_or_data("certificate-authority", "certificate-authority-data", cluster),
        cert_file=file_or_data("client-certificate", "client-certificate-data", user),
        key_file=file_or_data("client-key", "client-key-data", user),
        token_file=token_file,
        token=user.get("token"),
        insecure_skip_verify=bool(cluster.get("insecure-skip-tls-verify", False)),
        server_name=cluster.get("tls-server-name"),
        namespace=str(ctx.get("namespace") or "default"),
    )


def _status_error(code: int, body: bytes) -> ApiError:
    try:
        status = json.loads(body)
        reason, message = str(status.get("reason", "")), str(status.get("message", ""))
    except (ValueError, AttributeError):
        reason, message = "", body[:200].decode("utf-8", "replace")
    return ApiError(code, reason or "Failure", message, _FIXES.get(code))


class ApiClient:
    """GET lists and watches from the apiserver, with the configured credentials on every request."""

    def __init__(self, config: ApiConfig, *, user_agent: str = "kubescrape-discovery",
                 connect_timeout: float = 10.0, list_timeout: float = 120.0) -> None:
        self.config = config
        self._ssl = config.ssl_context()
        self._token = BearerToken(config.token_file) if config.token_file else None
        self._user_agent = user_agent
        self._connect_timeout = connect_timeout
        self._list_timeout = list_timeout
        self._session: aiohttp.ClientSession | None = None
        self.requests = 0

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": self._user_agent}
        token = self._token.get() if self._token is not None else self.config.token
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    def _sess(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(ssl=self._ssl if self._ssl is not None else False, limit=32)
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    async def close(self) -> None:
        """Close the connection pool."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _translate(self, e: Exception) -> DiscoveryError:
        return DiscoveryError(f"cannot reach the Kubernetes API at {self.config.server}: {e}",
                              "check api_server / KUBERNETES_SERVICE_HOST and the network policy")

    async def get(self, path: str, params: Mapping[str, str] | None = None) -> Json:
        """One GET; the JSON body, or :class:`ApiError` carrying the server's Status."""
        self.requests += 1
        timeout = aiohttp.ClientTimeout(total=self._list_timeout, connect=self._connect_timeout)
        try:
            async with self._sess().get(self.config.server + path, params=params or {},
                                        headers=self._headers(), timeout=timeout,
                                        server_hostname=self.config.server_name) as r:
                body = await r.read()
                if r.status == 401 and self._token is not None:
                    self._token.force_reload()
                if r.status != 200:
                    raise _status_error(r.status, body)
                result: Json = json.loads(body)
                return result
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            raise self._translate(e) from e

    async def watch(self, path: str, params: Mapping[str, str]) -> AsyncIterator[Json]:
        """Events of a watch (``{"type": …, "object": …}``) until the server ends the stream."""
        self.requests += 1
        timeout = aiohttp.ClientTimeout(total=None, connect=self._connect_timeout,
                                        sock_read=float(params.get("timeoutSeconds", "300")) + 30)
        try:
            async with self._sess().get(self.config.server + path, params={**params, "watch": "1"},
                                        headers=self._headers(), timeout=timeout,
                                        server_hostname=self.config.server_name) as r:
                if r.status != 200:
                    body = await r.read()
                    if r.status == 401 and self._token is not None:
                        self._token.force_reload()
                    raise _status_error(r.status, body)
                async for line in r.content:
                    if not line.strip():
                        continue
                    try:
                        event = json.loads(line)
                    except ValueError as e:
                        raise DiscoveryError(
                            f"the watch of {path} sent a line that is not JSON: {line[:120]!r}",
                            "check that api_server points at a Kubernetes apiserver") from e
                    yield event
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            raise self._translate(e) from e
