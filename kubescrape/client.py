"""The HTTP client side of kubescrape, in one place: the session, client TLS contexts, credentials on the
wire, the body limit, the scrape timeout (through the injectable clock) and the one table that translates
low-level errors (aiohttp, ssl, OSError, timeouts) into the :mod:`kubescrape.errors` tree.

Scraping (:class:`ScrapeClient`, used by the scrape loop), remote write (``remote_write/sender.py``) and
``doctor`` all go through here, so the three cannot disagree about what a configuration means or what an
error says. As in Prometheus' ``scrape/scrape.go``, the HTTP part of a scrape (``targetScraper``) is apart
from scheduling and appending (``scrapeLoop``, here :mod:`kubescrape.scrape.loop`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import functools
import ipaddress
import logging
import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import NamedTuple, Protocol
from urllib.parse import urlsplit

from kubescrape import __version__
from kubescrape._aiohttp import aiohttp
from kubescrape.auth import IN_CLUSTER_CA_FILE, IN_CLUSTER_TOKEN_FILE, BearerToken, read_credential_file
from kubescrape.clock import SYSTEM_CLOCK, Clock
from kubescrape.errors import (
    BodyTooLargeError,
    ConnectError,
    HTTPStatusError,
    KubescrapeError,
    RemoteWriteError,
    ScrapeError,
    ScrapeTimeoutError,
    TLSConfigError,
    TLSError,
)
from kubescrape.selfmon import SelfMetrics

__all__ = [
    "ACCEPT_HEADER",
    "ERROR_TABLE",
    "PLAIN_HTTP_ON_TLS",
    "USER_AGENT",
    "FetchResult",
    "GzipBody",
    "ScrapeClient",
    "ScrapeTarget",
    "TLSConfig",
    "TLSOptions",
    "client_ssl_context",
    "clock_timeout",
    "credential_source",
    "ignored_tls_options",
    "make_session",
    "release_buffers",
    "remote_write_error",
    "status_error",
    "system_ssl_context",
    "translate_error",
]

log = logging.getLogger(__name__)

# What Prometheus 2.42 sends by default (scrape/scrape.go scrapeAcceptHeader): OpenMetrics first.
ACCEPT_HEADER = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
USER_AGENT = f"kubescrape/{__version__}"
# What Go's net/http server answers to plain HTTP on a TLS port (the kubelet's :10250 does this).
PLAIN_HTTP_ON_TLS = "Client sent an HTTP request to an HTTPS server."

_READ_CHUNK = 1 << 16
# Inflated bytes per decompress call: bounds what a highly compressed chunk allocates at once.
_INFLATE_STEP = 1 << 18
_GZIP_WBITS = 16 + 15  # gzip header and trailer, 32 KiB window
_ERROR_BODY_LIMIT = 4096


# ---- TLS -------------------------------------------------------------------------------------------

_TLS_VERSIONS = {
    "1.0": ssl.TLSVersion.TLSv1,
    "1.1": ssl.TLSVersion.TLSv1_1,
    "1.2": ssl.TLSVersion.TLSv1_2,
    "1.3": ssl.TLSVersion.TLSv1_3,
}


class TLSOptions(Protocol):
    """Client TLS settings (``kubescrape.scrape.targets.TLSSettings`` has this shape). The optional
    ``min_version``/``max_version`` ("1.2") and ``key_password`` are read when present."""

    @property
    def use_tls(self) -> bool: ...
    @property
    def ca_file(self) -> str | None: ...
    @property
    def cert_file(self) -> str | None: ...
    @property
    def key_file(self) -> str | None: ...
    @property
    def server_name(self) -> str | None: ...
    @property
    def insecure_skip_verify(self) -> bool: ...


@dataclass(frozen=True)
class TLSConfig:
    """Plain TLS settings for callers without a scrape target (a remote-write writer)."""

    use_tls: bool = True
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None
    insecure_skip_verify: bool = False
    min_version: str | None = None
    max_version: str | None = None
    key_password: str | None = None


def _version(tls: TLSOptions, option: str, default: str | None) -> ssl.TLSVersion | None:
    value = getattr(tls, option, None) or default
    if value is None:
        return None
    version = _TLS_VERSIONS.get(str(value).removeprefix("TLS").removeprefix("v"))
    if version is None:
        raise TLSConfigError(f"tls_{option} = {value!r} is not a TLS version",
                             f"use one of {', '.join(_TLS_VERSIONS)}")
    return version


def ignored_tls_options(tls: TLSOptions) -> list[str]:
    """The ``tls_*`` options that are set but not applied because ``use_tls`` is off (as in Categraf)."""
    if tls.use_tls:
        return []
    return [name for name, on in (("tls_ca", tls.ca_file), ("tls_cert", tls.cert_file),
                                  ("tls_key", tls.key_file), ("tls_server_name", tls.server_name),
                                  ("insecure_skip_verify", tls.insecure_skip_verify)) if on]


@functools.cache
def system_ssl_context() -> ssl.SSLContext:
    """The verifying context with the system trust store (``SSL_CERT_FILE`` respected), what Go's default
    transport uses for an https URL when ``use_tls`` is off (Categraf builds no TLS config then)."""
    return ssl.create_default_context(ssl.Purpose.SERVER_AUTH)


def client_ssl_context(tls: TLSOptions) -> ssl.SSLContext | None:
    """The client SSL context for ``tls``, or None without ``use_tls`` (as in Categraf's
    ``pkg/tls.ClientConfig.TLSConfig``: the ``tls_*`` options then do not apply, and an https URL is
    verified against the system trust store, see :func:`system_ssl_context`).

    Verification is on unless ``insecure_skip_verify``. ``tls_ca`` REPLACES the system trust store, as
    Prometheus' ``ca_file`` and Go's ``RootCAs`` do. ``tls_cert`` + ``tls_key`` present a client certificate;
    ``min_version`` (default 1.2) and ``max_version`` bound the protocol. ``tls_server_name`` is not part of
    the context: it is passed as ``server_hostname`` with each request. Raises :class:`TLSConfigError`.
    """
    if not tls.use_tls:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and check_hostname, no CA loaded yet
    minimum = _version(tls, "min_version", "1.2")
    maximum = _version(tls, "max_version", None)
    assert minimum is not None
    if maximum is not None and maximum < minimum:
        raise TLSConfigError(f"tls_max_version ({getattr(tls, 'max_version', '')}) is lower than "
                             f"tls_min_version ({getattr(tls, 'min_version', None) or '1.2'})",
                             "raise tls_max_version or lower tls_min_version")
    ctx.minimum_version = minimum
    if maximum is not None:
        ctx.maximum_version = maximum
    if tls.ca_file:
        _load_ca(ctx, tls.ca_file)
    else:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if tls.insecure_skip_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if tls.cert_file or tls.key_file:
        if not (tls.cert_file and tls.key_file):
            missing = "tls_key" if tls.cert_file else "tls_cert"
            raise TLSConfigError(
                f"a client certificate needs both tls_cert and tls_key; {missing} is not set",
                f"set {missing} to the client {'key' if missing == 'tls_key' else 'certificate'} PEM file",
            )
        _load_client_cert(ctx, tls.cert_file, tls.key_file, getattr(tls, "key_password", None))
    return ctx


def _load_ca(ctx: ssl.SSLContext, ca_file: str) -> None:
    raw = read_credential_file(
        ca_file, what="tls_ca file", error=TLSConfigError,
        fix="point tls_ca at the CA bundle that signed the server's certificate (in a pod: "
        f"{IN_CLUSTER_CA_FILE})",
    )
    data = raw.decode("ascii", "replace")
    if "-----BEGIN CERTIFICATE-----" not in data:
        raise TLSConfigError(f"tls_ca file {ca_file} holds no PEM certificate",
                             "tls_ca must be a PEM bundle (-----BEGIN CERTIFICATE-----)")
    try:
        ctx.load_verify_locations(cadata=data)
    except ssl.SSLError as e:
        raise TLSConfigError(f"tls_ca file {ca_file} does not parse: {e.reason or e}",
                             "tls_ca must be a valid PEM certificate bundle") from None


def _load_client_cert(ctx: ssl.SSLContext, cert_file: str, key_file: str, password: str | None) -> None:
    for option, name in (("tls_cert", cert_file), ("tls_key", key_file)):
        # Read (checked: regular, small) before ssl opens the path itself, so a FIFO cannot block here.
        read_credential_file(name, what=f"{option} file", error=TLSConfigError,
                             fix=f"point {option} at the PEM file of the client {option[4:]}")
    try:
        ctx.load_cert_chain(cert_file, key_file, password=password or None)
    except ssl.SSLError as e:
        raise TLSConfigError(
            f"client certificate {cert_file} and key {key_file} do not load: {e.reason or e}",
            "check that both are PEM and that the key belongs to the certificate",
        ) from None
    except OSError as e:
        raise TLSConfigError(f"client certificate {cert_file} / key {key_file} cannot be read: {e}",
                             "make both files readable by the agent's user") from None


# ---- time ------------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def clock_timeout(clock: Clock, seconds: float | None) -> AsyncIterator[None]:
    """Like ``asyncio.timeout`` but measured by ``clock``, so a test clock decides when it expires.

    A watchdog task sleeps on the clock and cancels the current task; the cancellation is turned into
    ``TimeoutError`` here (and only that one: an outside cancel still propagates). ``None`` or a
    non-positive value means no limit.
    """
    if seconds is None or seconds <= 0:
        yield
        return
    task = asyncio.current_task()
    assert task is not None
    fired = False

    async def watchdog() -> None:
        nonlocal fired
        await clock.sleep(seconds)
        fired = True
        task.cancel()

    dog = asyncio.create_task(watchdog(), name="scrape timeout")
    try:
        yield
    except asyncio.CancelledError:
        if fired and task.uncancel() == 0:
            raise TimeoutError(f"no answer within {seconds:g}s") from None
        raise
    finally:
        if not dog.done():
            dog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await dog
        elif fired and not dog.cancelled() and task.cancelling():
            # Fired after the block finished on its own: take back the cancel we sent.
            task.uncancel()


# ---- the error table -------------------------------------------------------------------------------


class _Where(NamedTuple):
    url: str
    host: str
    where: str
    https: bool


def _where(url: str) -> _Where:
    parts = urlsplit(url)
    host = parts.hostname or url
    try:
        port = parts.port
    except ValueError:
        port = None
    https = parts.scheme == "https"
    return _Where(url, host, f"{host}:{port or (443 if https else 80)}", https)


def _cert_error(e: BaseException) -> ssl.SSLCertVerificationError | None:
    if isinstance(e, aiohttp.ClientConnectorCertificateError):
        inner = e.certificate_error
        return inner if isinstance(inner, ssl.SSLCertVerificationError) else None
    return e if isinstance(e, ssl.SSLCertVerificationError) else None


def _verify_code(codes: set[int]) -> Callable[[BaseException], bool]:
    def match(e: BaseException) -> bool:
        cert = _cert_error(e)
        return cert is not None and cert.verify_code in codes

    return match


def _ssl_text(*needles: str) -> Callable[[BaseException], bool]:
    def match(e: BaseException) -> bool:
        if not isinstance(e, ssl.SSLError | aiohttp.ClientSSLError | aiohttp.ClientOSError):
            return False
        text = f"{e} {getattr(e, 'os_error', '')}"
        return any(n in text for n in needles)

    return match


def _os_error(e: BaseException) -> BaseException:
    return getattr(e, "os_error", None) or e


def _is_connect_timeout(e: BaseException) -> bool:
    return isinstance(e, aiohttp.ConnectionTimeoutError) or (
        isinstance(e, aiohttp.ClientConnectorError) and isinstance(e.os_error, TimeoutError)
    )


def _is_timeout(e: BaseException) -> bool:
    return isinstance(e, TimeoutError)


def _is_dns(e: BaseException) -> bool:
    import socket

    return isinstance(e, aiohttp.ClientConnectorDNSError) or isinstance(_os_error(e), socket.gaierror)


def _is_refused(e: BaseException) -> bool:
    return isinstance(_os_error(e), ConnectionRefusedError)


def _is_reset(e: BaseException) -> bool:
    inner = _os_error(e)
    return (
        isinstance(inner, ConnectionResetError | BrokenPipeError | ConnectionAbortedError)
        or (isinstance(inner, OSError) and inner.errno in (errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED))
        or isinstance(e, aiohttp.ServerDisconnectedError)
    )


@dataclass(frozen=True)
class Translation:
    """One row of :data:`ERROR_TABLE`: which low-level errors it matches, the kubescrape error class and
    reason label, and the cause and fixes as templates over ``{url} {host} {where} {detail} {timeout}``
    and, for scrape fixes, ``{http_url}`` (the URL with http://)."""

    reason: str
    error: type[ScrapeError]
    matches: Callable[[BaseException], bool]
    cause: str
    fix: str
    writer_fix: str


_UNKNOWN_AUTHORITY_FIX = (
    "set tls_ca to the CA that signed the server's certificate (in a pod with a cluster-signed kubelet "
    f"certificate: {IN_CLUSTER_CA_FILE}); tls_ca replaces the system trust store and applies only with "
    "use_tls = true. For a kubelet with a self-signed certificate Categraf's example sets use_tls = true "
    "and insecure_skip_verify = true"
)

_SERVING_CSR_FIX = (
    "approve the node's serving certificate: `kubectl get csr` lists it Pending (SIGNERNAME "
    "kubernetes.io/kubelet-serving, REQUESTOR system:node:<node>); then `kubectl certificate approve "
    "<name>`. The kubelet serves as soon as it is approved; kube-controller-manager never approves "
    "kubelet-serving CSRs by itself"
)

ERROR_TABLE: tuple[Translation, ...] = (
    Translation(
        "cert_expired", TLSError, _verify_code({10}),
        "the certificate of {host} has expired ({detail})",
        "renew the server's serving certificate (kubelet: serverTLSBootstrap / rotateCertificates) and check "
        "this node's clock",
        "renew the backend's certificate and check this node's clock",
    ),
    Translation(
        "cert_not_yet_valid", TLSError, _verify_code({9}),
        "the certificate of {host} is not valid yet ({detail})",
        "a clock is wrong: check NTP here and on the server",
        "a clock is wrong: check NTP here and on the backend",
    ),
    Translation(
        "cert_name_mismatch", TLSError, _verify_code({62, 64}),
        "the certificate of {where} is not valid for the name {name!r} ({detail})",
        "set tls_server_name to a name listed in the certificate's subjectAltNames, or scrape an address the "
        "certificate names",
        "set the writer's tls_server_name to a name in the backend certificate, or use that name in url",
    ),
    Translation(
        "cert_unknown_authority", TLSError, _verify_code({2, 18, 19, 20, 21, 27}),
        "the certificate of {where} is signed by an unknown authority ({detail})",
        _UNKNOWN_AUTHORITY_FIX,
        "set the writer's tls_ca to the CA that signed the backend's certificate (or insecure_skip_verify "
        "for a test backend)",
    ),
    Translation(
        "cert_invalid", TLSError, lambda e: _cert_error(e) is not None,
        "the certificate of {where} failed verification: {detail}",
        "check tls_ca and tls_server_name, or the server's certificate",
        "check the writer's tls_ca and tls_server_name, or the backend's certificate",
    ),
    Translation(
        "tls_plain_http", TLSError,
        _ssl_text("WRONG_VERSION_NUMBER", "record layer failure", "packet length too long", "HTTP_REQUEST"),
        "TLS handshake with {where} failed: the port answers plain HTTP, not TLS ({detail})",
        "use {http_url} with use_tls = false (kube-proxy's :10249 is plain HTTP; the kubelet's :10250 is "
        "HTTPS)",
        "use http:// in the writer url: the backend does not speak TLS on that port",
    ),
    Translation(
        # Go's TLS server sends internal_error when GetCertificate fails: the kubelet with
        # serverTLSBootstrap: true has no serving certificate until its CSR is approved.
        "tls_no_serving_cert", TLSError, _ssl_text("TLSV1_ALERT_INTERNAL_ERROR", "alert internal error"),
        "{where} aborted the TLS handshake with the alert internal_error ({detail}): a kubelet with "
        "serverTLSBootstrap: true has no serving certificate until its kubernetes.io/kubelet-serving CSR "
        "is approved",
        _SERVING_CSR_FIX,
        "the backend aborted the TLS handshake (alert internal_error): check its log and its serving "
        "certificate",
    ),
    Translation(
        "tls_client_cert_required", TLSError,
        _ssl_text("CERTIFICATE_REQUIRED", "certificate required", "HANDSHAKE_FAILURE"),
        "{where} requires a client certificate ({detail})",
        "set tls_cert and tls_key to a client certificate signed by the server's client CA, or authenticate "
        "with bearer_token_file",
        "set the writer's tls_cert and tls_key to a client certificate the backend accepts",
    ),
    Translation(
        "tls_version", TLSError,
        _ssl_text("UNSUPPORTED_PROTOCOL", "PROTOCOL_VERSION", "NO_PROTOCOLS_AVAILABLE",
                  "no protocols available"),
        "{where} and this agent share no TLS version ({detail})",
        "check tls_min_version / tls_max_version against what the server accepts",
        "check the writer's TLS versions against what the backend accepts",
    ),
    Translation(
        "tls", TLSError, lambda e: isinstance(e, ssl.SSLError | aiohttp.ClientSSLError),
        "TLS handshake with {where} failed: {detail}",
        "check use_tls, tls_ca, tls_cert/tls_key and that the port speaks TLS",
        "check the writer's TLS settings and that the backend port speaks TLS",
    ),
    Translation(
        "connect_timeout", ConnectError, _is_connect_timeout,
        "connecting to {where} timed out ({detail})",
        "a firewall drops the packets or the address is wrong; allow TCP to that port from this node "
        "(hostNetwork: true for node ports)",
        "a firewall drops the packets or the address is wrong; data waits in the queue/spool meanwhile",
    ),
    Translation(
        "timeout", ScrapeTimeoutError, _is_timeout,
        "{url} did not answer within {timeout}",
        "raise timeout in the instance (seconds), or check the endpoint's load and the network",
        "the backend is slow or overloaded; raise the writer timeout if it is just slow (the batch is "
        "retried, data waits in the queue/spool)",
    ),
    Translation(
        "dns", ConnectError, _is_dns,
        "cannot resolve {host}: {detail}",
        "check the host name in urls (in a DaemonSet with hostNetwork use 127.0.0.1 or $HOSTIP)",
        "check the host name in the writer url and this node's DNS",
    ),
    Translation(
        "connect_refused", ConnectError, _is_refused,
        "connection to {where} refused: nothing listens there",
        "check the port in urls and that the process is running (kubelet: 10250 HTTPS; kube-proxy "
        "metrics: 10249 on 127.0.0.1)",
        "check the backend is up and listens on that port; data waits in the queue/spool meanwhile",
    ),
    Translation(
        "connect_reset", ConnectError, _is_reset,
        "{where} closed the connection before answering ({detail})",
        "check the server's log; a TLS server that requires a client certificate closes the connection: "
        "set tls_cert and tls_key",
        "check the backend's log and any proxy in between; the batch is retried",
    ),
    Translation(
        "payload", ScrapeError, lambda e: isinstance(e, aiohttp.ClientPayloadError),
        "the body from {url} was cut off or is not valid gzip: {detail}",
        "check proxies between the agent and the endpoint",
        "check proxies between the agent and the backend",
    ),
    Translation(
        "redirect", ScrapeError, lambda e: isinstance(e, aiohttp.TooManyRedirects),
        "{url} redirects in a loop ({detail})",
        "scrape the final URL directly",
        "write to the final URL directly",
    ),
    Translation(
        "url", ScrapeError, lambda e: isinstance(e, aiohttp.InvalidURL | ValueError),
        "invalid URL {url}: {detail}",
        "fix urls in prometheus.toml",
        "fix the writer url",
    ),
    Translation(
        "protocol", ScrapeError, lambda e: isinstance(e, aiohttp.ClientResponseError),
        "{where} did not answer valid HTTP: {detail}",
        "check the port; if it is a TLS port use https:// and use_tls = true",
        "check the writer url's port and scheme",
    ),
    Translation(
        "connect", ConnectError, lambda e: True,
        "request to {url} failed: {detail}",
        "check the address, port and network",
        "check the backend is up and reachable from this node; data waits in the queue/spool meanwhile",
    ),
)
"""Low-level error → kubescrape error, first match wins. Used for scrapes, remote write and doctor."""


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"


def _detail(e: BaseException) -> str:
    cert = _cert_error(e)
    if cert is not None:
        return _short(cert.verify_message or str(cert))
    inner = _os_error(e)
    text = str(inner) if inner is not e else str(e)
    if isinstance(e, aiohttp.ClientResponseError):
        text = e.message
    return _short(text) or type(inner).__name__


def lookup(e: BaseException) -> Translation:
    """The row of :data:`ERROR_TABLE` that matches ``e``."""
    return next(row for row in ERROR_TABLE if row.matches(e))


def _fill(template: str, where: _Where, detail: str, timeout: float | None, name: str | None = None) -> str:
    http_url = "http://" + where.url.removeprefix("https://") if where.https else where.url
    return template.format(url=where.url, host=where.host, where=where.where, detail=detail,
                           timeout=f"{timeout:g}s" if timeout else "its timeout", http_url=http_url,
                           name=name or where.host)


def translate_error(e: BaseException, url: str, *, timeout: float | None = None,
                    server_name: str | None = None) -> ScrapeError:
    """Translate an aiohttp/ssl/OS error (or timeout) of a request to ``url`` into the error tree.
    ``server_name`` is the name the certificate was checked against when it is not the URL's host."""
    row = lookup(e)
    where = _where(url)
    detail = _detail(e)
    error = row.error(_fill(row.cause, where, detail, timeout, server_name),
                      _fill(row.fix, where, detail, timeout, server_name), target=url)
    error.reason = row.reason
    return error


def remote_write_error(e: BaseException, url: str, writer: str, *, timeout: float | None = None,
                       server_name: str | None = None) -> RemoteWriteError:
    """The same translation for a remote-write request: always retryable (the data is kept)."""
    row = lookup(e)
    where = _where(url)
    detail = _detail(e)
    return RemoteWriteError(f"writer {writer!r}: {_fill(row.cause, where, detail, timeout, server_name)}",
                            _fill(row.writer_fix, where, detail, timeout), writer=writer, retryable=True)


def release_buffers(e: BaseException) -> None:
    """Drop the tracebacks along ``e``'s chain: their frames may hold a scrape's partial body, which would
    otherwise live as long as the error (kept for the last-error report) or until the cycle collector."""
    seen: set[int] = set()
    current: BaseException | None = e
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        current.__traceback__ = None
        current = current.__cause__ or current.__context__


# ---- statuses --------------------------------------------------------------------------------------


_WHY_REJECTED = {
    "bearer": "the bearer token is expired, from another cluster, or not a ServiceAccount token (the kubelet "
              "needs --authentication-token-webhook)",
    "basic": "the username or password is wrong for this server",
    "cert": "the client certificate is not signed by the server's client CA (kubelet: clientCAFile) or "
            "has expired",
}


def _credentials(target: ScrapeTarget) -> list[tuple[str, str]]:
    """(kind, name as the configuration says it) of every credential a request to ``target`` carries."""
    sent = []
    if target.bearer_token_file:
        sent.append(("bearer", f"the bearer token in bearer_token_file ({target.bearer_token_file})"))
    elif target.bearer_token_string:
        sent.append(("bearer", "the bearer token in bearer_token_string"))
    elif target.username:
        sent.append(("basic", f"basic auth (username {target.username!r} and password)"))
    if target.tls.use_tls and target.tls.cert_file:
        sent.append(("cert", f"the client certificate tls_cert ({target.tls.cert_file})"))
    return sent


def credential_source(target: ScrapeTarget) -> str:
    """What credentials a request to ``target`` carries, as the configuration names them ("" = none)."""
    return " and ".join(name for _, name in _credentials(target))


def _rejected_fix(target: ScrapeTarget) -> str:
    return "; ".join(f"{_WHY_REJECTED[kind]}: check {name}" for kind, name in _credentials(target))


def status_error(status: int, body: str, url: str, *, credentials: str = "", rejected_fix: str = "",
                 requested_url: str | None = None) -> ScrapeError:
    """The error for a non-200 answer from ``url`` (the final URL after redirects; ``requested_url`` is
    the configured one when it differs), with the fix for that status. ``credentials`` names what was
    sent (:func:`credential_source`), ``rejected_fix`` what to check for each when it is refused."""
    shown = _short(body, 300)
    via = f" (redirected from {requested_url})" if requested_url and requested_url != url else ""
    where = url + via
    if status == 400 and PLAIN_HTTP_ON_TLS in body:
        https = "https://" + url.removeprefix("http://")
        return TLSError(f"{where} is an HTTPS port: the server answered 400 {PLAIN_HTTP_ON_TLS!r}",
                        f"use https:// and use_tls = true for {https}", target=url, reason="http_to_https")
    if status == 401:
        if credentials:
            cause = f"{where} answered 401 Unauthorized: {credentials} was rejected"
            fix = rejected_fix or f"check {credentials}"
        else:
            cause = (f"{where} answered 401 Unauthorized: the endpoint requires authentication and none "
                     "was sent")
            fix = (f"set bearer_token_file = \"{IN_CLUSTER_TOKEN_FILE}\" (and serviceAccountName in the "
                   "DaemonSet), or use_tls = true with tls_cert/tls_key for a client certificate")
        return HTTPStatusError(cause, fix, target=url, status=401, body=shown)
    if status == 403:
        return HTTPStatusError(
            f"{where} answered 403 Forbidden: {shown or 'the identity is not allowed'}",
            "the identity authenticated but RBAC does not allow it: bind it (ClusterRoleBinding) to a "
            "ClusterRole allowing verb get on nodes/metrics, nodes/stats and nodes/proxy "
            "(see `kubescrape manifests`)",
            target=url, status=403, body=shown,
        )
    if status == 404:
        return HTTPStatusError(f"{where} answered 404 Not Found",
                               "check the path in urls (kubelet: /metrics, /metrics/cadvisor, "
                               "/metrics/probes, /metrics/resource)", target=url, status=404, body=shown)
    return HTTPStatusError(f"{where} answered HTTP {status}{': ' + shown if shown else ''}",
                           "check the endpoint's log", target=url, status=status, body=shown)


# ---- the scrape client -----------------------------------------------------------------------------


class ScrapeTarget(Protocol):
    """What a fetch needs of a target (``kubescrape.scrape.targets.Target`` has this shape)."""

    @property
    def url(self) -> str: ...
    @property
    def timeout(self) -> float: ...
    @property
    def body_size_limit(self) -> int: ...
    @property
    def tls(self) -> TLSOptions: ...
    @property
    def bearer_token_file(self) -> str | None: ...
    @property
    def bearer_token_string(self) -> str | None: ...
    @property
    def username(self) -> str | None: ...
    @property
    def password(self) -> str | None: ...
    @property
    def headers(self) -> tuple[tuple[str, str], ...]: ...
    @property
    def enable_compression(self) -> bool: ...


class FetchResult(NamedTuple):
    """A successful fetch: the (uncompressed) body, its Content-Type, and the final URL after redirects.

    ``gzip``: with ``fetch(..., inflate=False)``, a gzip body left compressed for the series cache to
    inflate in pieces (:class:`GzipBody`); ``body`` is then empty."""

    body: bytes
    content_type: str
    url: str
    gzip: GzipBody | None = None


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def inflate_module() -> ModuleType:
    """The module that inflates gzip scrape bodies: ISA-L's ``isal.isal_zlib`` when installed (a
    dependency; wheels for x86-64 and arm64), the standard ``zlib`` otherwise. Same API, same bytes.

    Inflating is most of what a compressed scrape costs the agent: the emulator's 250-pod cAdvisor
    body (2.6 MB gzip, 13.9 MB text, 43,500 samples) inflates in 41 ms of CPU with zlib 1.2.13, 26 ms
    with zlib-ng and 21 ms with ISA-L; the whole fetch took 52 ms with aiohttp's zlib decoding, 25 ms
    uncompressed (TLS and reads alone).
    """
    global _INFLATE
    if _INFLATE is None:
        try:
            from isal import isal_zlib
        except ImportError:
            import zlib

            _INFLATE = zlib
        else:
            _INFLATE = isal_zlib
    return _INFLATE


_INFLATE: ModuleType | None = None


def make_session(*, limit: int, limit_per_host: int = 0, ssl_context: ssl.SSLContext | bool = True,
                 timeout: aiohttp.ClientTimeout | None = None,
                 auto_decompress: bool = True) -> aiohttp.ClientSession:
    """An aiohttp session as every kubescrape client uses one: environment proxies ignored (a node agent
    must not send kubelet credentials to an HTTP_PROXY), connections pooled up to ``limit``. Scrapes
    decode their bodies themselves (``auto_decompress=False``, see :func:`read_body`)."""
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=limit_per_host, ssl=ssl_context,
                                     enable_cleanup_closed=True)
    return aiohttp.ClientSession(connector=connector, auto_decompress=auto_decompress, trust_env=False,
                                 timeout=timeout or aiohttp.ClientTimeout(total=None))


class ScrapeClient:
    """HTTP machinery shared by every scrape of one agent (and by doctor): one aiohttp session (its
    connector pools connections per host and TLS context), SSL contexts built once per distinct TLS
    settings, one :class:`BearerToken` per token file so a rotation is read once for every target using it.
    :meth:`fetch` is the whole HTTP part of a scrape.
    """

    def __init__(
        self,
        *,
        metrics: SelfMetrics | None = None,
        clock: Clock = SYSTEM_CLOCK,
        limit: int = 256,
        limit_per_host: int = 8,
    ) -> None:
        self._metrics = metrics
        self._clock = clock
        self._limit = limit
        self._limit_per_host = limit_per_host
        self._session: aiohttp.ClientSession | None = None
        self._contexts: dict[TLSOptions, ssl.SSLContext | None] = {}
        self._tokens: dict[str, BearerToken] = {}
        self._warned_plain: set[str] = set()

    @property
    def session(self) -> aiohttp.ClientSession:
        """The shared session, created on first use inside the running event loop."""
        if self._session is None or self._session.closed:
            # No session-wide timeout: each fetch has its own, on the clock.
            self._session = make_session(limit=self._limit, limit_per_host=self._limit_per_host,
                                         auto_decompress=False)
        return self._session

    def ssl_context(self, tls: TLSOptions) -> ssl.SSLContext:
        """The context an https request with ``tls`` uses (cached): the target's own with ``use_tls``,
        otherwise the system trust store's. Raises TLSConfigError."""
        if tls not in self._contexts:
            self._contexts[tls] = client_ssl_context(tls)
        return self._contexts[tls] or system_ssl_context()

    def token(self, path: str) -> BearerToken:
        """The shared, self-refreshing token of ``path``."""
        token = self._tokens.get(path)
        if token is None:
            token = self._tokens[path] = BearerToken(path, metrics=self._metrics, clock=self._clock)
        return token

    async def close(self) -> None:
        """Close the session and its connections."""
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    def headers(self, target: ScrapeTarget) -> dict[str, str]:
        """The request headers of ``target`` without the bearer token (which is read per request)."""
        headers = {
            "Accept": ACCEPT_HEADER,
            "Accept-Encoding": "gzip" if target.enable_compression else "identity",
            "User-Agent": USER_AGENT,
            "X-Prometheus-Scrape-Timeout-Seconds": f"{target.timeout:g}",
        }
        headers.update(target.headers)
        if target.username:
            basic = base64.b64encode(f"{target.username}:{target.password or ''}".encode()).decode()
            headers["Authorization"] = f"Basic {basic}"
        return headers

    def bearer(self, target: ScrapeTarget, *, reload: bool = False) -> str | None:
        """The bearer token to send (re-read if its file changed). Raises TokenError."""
        if target.bearer_token_file:
            token = self.token(target.bearer_token_file)
            return token.force_reload() if reload else token.get()
        return target.bearer_token_string or None

    def warn_plain_credentials(self, target: ScrapeTarget, *, log_it: bool = True) -> str | None:
        """A warning (logged once per target unless ``log_it`` is false) when credentials would cross the
        network unencrypted."""
        parts = urlsplit(target.url)
        if parts.scheme != "http" or _is_loopback(parts.hostname or ""):
            return None
        if not (target.bearer_token_file or target.bearer_token_string or target.username):
            return None
        what = "a bearer token" if target.bearer_token_file or target.bearer_token_string else "basic auth"
        message = (f"{target.url} sends {what} over plain http:// to a non-loopback host: anyone on the path "
                   "can read it. Fix: scrape https:// with use_tls = true")
        if log_it and target.url not in self._warned_plain:
            self._warned_plain.add(target.url)
            log.warning("%s", message)
        return message

    async def fetch(self, target: ScrapeTarget, *, inflate: bool = True) -> FetchResult:
        """GET ``target`` within its timeout (measured by the clock) and return the body. Raises errors of
        the ScrapeError tree, TokenError or TLSConfigError; a failure keeps no part of the body alive.

        ``inflate=False``: a gzip body is returned compressed (``FetchResult.gzip``, see :class:`GzipBody`)
        when it is whole and within the compressed-size cap; the reader then inflates it."""
        url = target.url
        https = url.startswith("https://")
        ssl_ctx: ssl.SSLContext | bool = self.ssl_context(target.tls) if https else False
        self.warn_plain_credentials(target)
        headers = self.headers(target)
        try:
            async with clock_timeout(self._clock, target.timeout):
                result = await self._get(target, ssl_ctx, headers, self.bearer(target), inflate)
                if isinstance(result, HTTPStatusError) and result.status == 401 and target.bearer_token_file:
                    # The token may have rotated between our stat and the server's check: read it again.
                    result = await self._get(target, ssl_ctx, headers, self.bearer(target, reload=True),
                                             inflate)
        except KubescrapeError:
            raise
        except (aiohttp.ClientError, OSError, ValueError) as e:  # TimeoutError is an OSError
            server_name = target.tls.server_name if https and target.tls.use_tls else None
            error = translate_error(e, url, timeout=target.timeout, server_name=server_name)
            ignored = ignored_tls_options(target.tls) if https else []
            if ignored and isinstance(error, TLSError):
                verb = "is" if len(ignored) == 1 else "are"
                error.fix = (f"{', '.join(ignored)} {verb} not applied without use_tls = true (as in "
                             f"Categraf): add use_tls = true. {error.fix}")
            release_buffers(e)
            raise error from e
        if isinstance(result, FetchResult):
            return result
        raise result

    async def _get(self, target: ScrapeTarget, ssl_ctx: ssl.SSLContext | bool, headers: dict[str, str],
                   token: str | None, inflate: bool = True) -> FetchResult | ScrapeError:
        """One request: the body of a 200, or the error for any other status (returned, not raised, so
        the caller may retry a 401)."""
        if token:
            headers = {**headers, "Authorization": f"Bearer {token}"}  # a token wins over basic auth
        server_name = target.tls.server_name if target.tls.use_tls and ssl_ctx else None
        async with self.session.get(target.url, headers=headers, ssl=ssl_ctx,
                                    server_hostname=server_name or None) as resp:
            final = str(resp.url)
            if resp.status != 200:
                # Error bodies are short (kubelet: "Unauthorized", "Forbidden (user=…)"); keep a bounded part.
                raw = await resp.content.read(_ERROR_BODY_LIMIT)
                if resp.headers.get("Content-Encoding", "").strip().lower() == "gzip":
                    raw = inflate_prefix(raw, _ERROR_BODY_LIMIT)
                return status_error(resp.status, raw.decode("utf-8", "replace").strip(), final,
                                    credentials=credential_source(target), rejected_fix=_rejected_fix(target),
                                    requested_url=target.url)
            body = await read_body(resp, target.body_size_limit, final, inflate=inflate)
            content_type = resp.headers.get("Content-Type", "")
            if isinstance(body, GzipBody):
                return FetchResult(b"", content_type, final, body)
            return FetchResult(body, content_type, final)


async def read_body(resp: aiohttp.ClientResponse, limit: int, url: str, *,
                    inflate: bool = True) -> bytes | GzipBody:
    """The body of a scrape response, inflated if it is gzip, as Prometheus reads it: ``body_size_limit``
    applies to the inflated size, a gzip stream must be whole (Go's gzip reader fails on a missing
    trailer or a bad checksum, where aiohttp's own decoding silently returns what it got: a scrape cut
    short at a line boundary would then pass, and mark the series it lost stale), concatenated gzip
    members are read in a row, and any other Content-Encoding is refused (Prometheus asks for gzip
    only and would read such a body as text).

    ``inflate=False``: a gzip body within :func:`_compressed_cap` is returned as read, a
    :class:`GzipBody`, for its reader to inflate (whole or in pieces, with the same limit and errors)."""
    encoding = resp.headers.get("Content-Encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return await read_limited(resp.content, limit, url)
    if encoding == "gzip":
        body = await read_gzip(resp.content, limit, url)
        return body.whole() if inflate and isinstance(body, GzipBody) else body
    raise ScrapeError(
        f"{url} answered with Content-Encoding: {encoding}, which a scrape does not decode",
        "serve the metrics uncompressed or gzip-compressed (a scrape asks for gzip, or for identity "
        "with enable_compression = false); check that no proxy re-encodes the body",
        target=url, reason="content_encoding",
    )


async def inflate_limited(stream: aiohttp.StreamReader, limit: int, url: str) -> bytes:
    """Inflate a gzip body, failing as soon as the inflated size exceeds ``limit`` (0 = no limit); see
    :func:`read_gzip`."""
    body = await read_gzip(stream, limit, url)
    return body.whole() if isinstance(body, GzipBody) else body


async def read_gzip(stream: aiohttp.StreamReader, limit: int, url: str) -> bytes | GzipBody:
    """Read a gzip body: as read (:class:`GzipBody`, for its reader to inflate with ``limit``) while it
    is within the compressed-size cap, inflated (bytes) past it.

    The compressed bytes are gathered first (at most :func:`_compressed_cap` of them: a body that
    inflates to no more than ``limit`` is never larger than that) and inflated in one call whose
    output is sized by the gzip trailer's ISIZE: the body is allocated once, with no parts to join
    (half the peak memory, ~25 % less CPU for a 14 MB cAdvisor body). Whatever that call does not
    confirm (several members, a trailer that does not match, a size over the limit, a stream that is
    corrupt or cut short) is inflated again step by step (:class:`_Inflater`), which decides it; so
    is a compressed body past the cap, from the moment it passes it. Either way a "gzip bomb" cannot
    allocate more than one :data:`_INFLATE_STEP` past the limit."""
    zlib = inflate_module()
    cap = _compressed_cap(limit)
    parts: list[bytes] = []
    size = 0
    inflater: _Inflater | None = None
    try:
        async for chunk in stream.iter_chunked(_READ_CHUNK):
            if inflater is not None:
                inflater.feed(chunk)
                continue
            parts.append(chunk)
            size += len(chunk)
            if cap and size > cap:
                inflater = _Inflater(zlib, limit, url)
                for part in parts:
                    inflater.feed(part)
                parts.clear()
        if inflater is None:
            return GzipBody(parts[:], limit, url)
        return inflater.finish()
    except zlib.error as e:
        raise _not_gzip(url, e) from None
    finally:
        parts.clear()
        if inflater is not None:
            inflater.release()


def _compressed_cap(limit: int) -> int:
    """The most compressed bytes a gzip body that inflates to at most ``limit`` bytes can need (0: no
    limit): deflate's stored blocks add 5 bytes per 65,535, gzip's header and trailer 18 or more (an
    optional file name or comment is unbounded: such a body is read step by step past this)."""
    return limit + 5 * (limit // 65535 + 1) + (1 << 16) if limit else 0


def _inflate_whole(zlib: ModuleType, data: bytes, limit: int) -> bytes | None:
    """``data`` inflated in one call sized by its trailer's ISIZE, or ``None`` where that call cannot
    confirm the result is the whole body (then the step-wise path decides, errors included)."""
    if len(data) < 18:
        return None
    expected = int.from_bytes(data[-4:], "little")
    if not expected or (limit and expected > limit):
        return None
    inflater = zlib.decompressobj(_GZIP_WBITS)
    try:
        # Asking for one byte more than announced: a longer stream stops there and fails the check.
        body: bytes = inflater.decompress(data, expected + 1)
    except zlib.error:
        return None
    if inflater.eof and not inflater.unused_data and len(body) == expected:
        return body
    return None


class GzipBody:
    """A gzip scrape body as read (its compressed parts), inflated by its reader: whole
    (:meth:`whole`, as :func:`inflate_limited` does) or piece by piece (:meth:`pieces`).

    In pieces, the ~14 MB text of a 250-pod cAdvisor body never exists at once: each piece (at most
    :data:`_PIECE` bytes) is parsed and freed, and the next one reuses its heap space, where a whole body
    is a fresh mapping each scrape (with the agent's allocator tuning, ``kubescrape._memory``) whose
    ~3,300 pages are faulted in again every time."""

    def __init__(self, parts: list[bytes], limit: int, url: str) -> None:
        self._parts = parts
        self._limit = limit
        self._url = url
        # The error the step-wise inflation of :meth:`pieces` ended with: :meth:`whole` raises it again
        # instead of inflating a failing body (a gzip bomb up to body_size_limit) a second time.
        self._error: ScrapeError | None = None

    @property
    def compressed_size(self) -> int:
        """Bytes received (compressed)."""
        return sum(len(part) for part in self._parts)

    def whole(self) -> bytes:
        """The inflated body; the errors of :func:`inflate_limited` (:class:`BodyTooLargeError` past the
        limit, :class:`ScrapeError` for a gzip stream that does not inflate or ends early).

        Inflated in one call sized by the gzip trailer's ISIZE where it confirms the whole body, step by
        step (:class:`_Inflater`) otherwise, which decides it. After :meth:`pieces` failed, its error (the
        same: tests/test_client.py) is raised again without inflating anything."""
        if self._error is not None:
            raise self._error
        zlib = inflate_module()
        compressed = b"".join(self._parts)
        inflater: _Inflater | None = None
        try:
            body = _inflate_whole(zlib, compressed, self._limit)
            if body is not None:
                return body
            inflater = _Inflater(zlib, self._limit, self._url)
            inflater.feed(compressed)
            del compressed
            return inflater.finish()
        except zlib.error as e:
            raise _not_gzip(self._url, e) from None
        finally:
            if inflater is not None:
                inflater.release()

    def pieces(self) -> Iterator[bytes]:
        """The inflated body in pieces of at most :data:`_PIECE` bytes, cut anywhere (inside a line
        too). Raises what :meth:`whole` raises, from the piece where the step-wise inflation finds it: a
        reader that fails part-way may call :meth:`whole` for the error a whole inflation gives."""
        zlib = inflate_module()
        inflater = _Inflater(zlib, self._limit, self._url)
        try:
            for part in self._parts:
                yield from inflater.inflate(part, _PIECE)
            inflater.finish()
        except zlib.error as e:
            self._error = _not_gzip(self._url, e)
            raise self._error from None
        except ScrapeError as e:
            self._error = e
            raise


# Inflated bytes per piece of :meth:`GzipBody.pieces`: well below the agent's mmap threshold (1 MiB,
# ``kubescrape._memory``), so each piece reuses the heap space of the last one.
_PIECE = 1 << 18


def _not_gzip(url: str, e: Exception) -> ScrapeError:
    return ScrapeError(
        f"{url} sent a gzip body that does not inflate ({e})",
        "check that the target (or a proxy in between) sends valid gzip, or set "
        "enable_compression = false for this target",
        target=url, reason="gzip",
    )


class _Inflater:
    """Step-wise gzip inflation: any number of members, at most :data:`_INFLATE_STEP` bytes of output
    per call, the limit checked after each."""

    def __init__(self, zlib: ModuleType, limit: int, url: str) -> None:
        self._zlib = zlib
        self._inflater = zlib.decompressobj(_GZIP_WBITS)
        self._limit = limit
        self._url = url
        self._parts: list[bytes] = []
        self._size = 0
        # Members inflated to their trailer, and what the current one has taken in and given out: bytes
        # after a complete member that never form one are named as such, not as a stream cut short.
        self._members = 0
        self._member_in = 0
        self._member_out = 0

    def feed(self, data: bytes) -> None:
        """Inflate ``data``, the next compressed bytes; :class:`BodyTooLargeError` past the limit."""
        self._parts.extend(self.inflate(data, _INFLATE_STEP))

    def inflate(self, data: bytes, step: int) -> Iterator[bytes]:
        """Inflate ``data``, the next compressed bytes, into pieces of at most ``step`` bytes (the
        inflated size counted, not kept); :class:`BodyTooLargeError` past the limit."""
        while data:
            if self._inflater.eof:  # the next gzip member
                self._inflater = self._zlib.decompressobj(_GZIP_WBITS)
                self._members += 1
                self._member_in = self._member_out = 0
            taken = len(data)
            out = self._inflater.decompress(data, step)
            data = self._inflater.unused_data if self._inflater.eof else self._inflater.unconsumed_tail
            self._member_in += taken - len(data)
            self._member_out += len(out)
            self._size += len(out)
            if self._limit and self._size > self._limit:
                del out, data
                self.release()
                raise _too_large(self._url, self._limit)
            if out:
                yield out

    def finish(self) -> bytes:
        """The inflated body; :class:`ScrapeError` if the stream ended before its gzip trailer."""
        if not self._inflater.eof:
            size = self._size
            self.release()
            if self._members and not self._member_out:
                raise ScrapeError(
                    f"{self._url} sent {self._member_in} bytes after its gzip stream ({size} bytes inflated) "
                    "that do not complete a gzip member (bytes that are not gzip, or a member cut short "
                    "before its first data)",
                    "check the target and any proxy in between: nothing may follow the gzip stream; the "
                    "scrape is retried at the next interval",
                    target=self._url, reason="gzip",
                )
            raise ScrapeError(
                f"{self._url} sent a gzip body that ends early ({size} bytes inflated, the gzip trailer "
                "missing): the response was cut short",
                "check the target and any proxy in between; the scrape is retried at the next interval",
                target=self._url, reason="gzip",
            )
        body = b"".join(self._parts)
        self.release()
        return body

    def release(self) -> None:
        """Drop the inflated parts (also on failure: a traceback must not keep them alive)."""
        self._parts.clear()


def inflate_prefix(data: bytes, limit: int) -> bytes:
    """Up to ``limit`` inflated bytes of the gzip ``data`` (an error page's first bytes, for its message);
    ``data`` itself if it does not inflate."""
    zlib = inflate_module()
    try:
        return bytes(zlib.decompressobj(_GZIP_WBITS).decompress(data, limit))
    except zlib.error:
        return data


def _too_large(url: str, limit: int) -> BodyTooLargeError:
    return BodyTooLargeError(
        f"{url} sent more than body_size_limit = {limit} bytes (uncompressed)",
        "raise body_size_limit for this instance, or drop series at the source",
        target=url,
    )


async def read_limited(stream: aiohttp.StreamReader, limit: int, url: str) -> bytes:
    """Read a body, failing as soon as it exceeds ``limit`` bytes (0 = no limit) instead of after.

    On any failure the chunks read so far are released before the exception leaves (a traceback keeps
    this frame, and with it ``parts``, alive), so a hostile or broken target cannot pin its body in memory.
    """
    parts: list[bytes] = []
    size = 0
    try:
        async for chunk in stream.iter_chunked(_READ_CHUNK):
            size += len(chunk)
            if limit and size > limit:
                del chunk
                raise _too_large(url, limit)
            parts.append(chunk)
        body = b"".join(parts)
    finally:
        parts.clear()
    return body
