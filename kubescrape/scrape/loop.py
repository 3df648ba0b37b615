"""The scrape loop: one asyncio task per target, scraping on a fixed-rate schedule and handing encoded
samples to the sink.

Per scrape: HTTP GET (headers like Prometheus, gzip, streaming body limit, bearer token re-read when its
file changes and once more after a 401) → series cache (parse, label, encode) → the five synthetic series
Prometheus adds (``up``, ``scrape_duration_seconds`` …) → ``sink.append``. Every lower-layer error (aiohttp,
ssl, OSError, timeouts) is translated here, once, into the :mod:`kubescrape.errors` tree with a fix; a
failed scrape is reported as ``up 0`` and never ends the loop.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import math
import ssl
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urlsplit

import aiohttp

from kubescrape import __version__
from kubescrape.auth import (
    IN_CLUSTER_CA_FILE,
    IN_CLUSTER_TOKEN_FILE,
    BearerToken,
    TLSOptions,
    client_ssl_context,
)
from kubescrape.clock import SYSTEM_CLOCK, Clock
from kubescrape.errors import (
    BodyTooLargeError,
    ConnectError,
    HTTPStatusError,
    KubescrapeError,
    ScrapeError,
    ScrapeTimeoutError,
    TLSError,
)
from kubescrape.remote_write import Chunk, Sink
from kubescrape.remote_write.encode import encode_labels, encode_timeseries
from kubescrape.scrape.cache import ScrapeLimits, ScrapeResult, SeriesCache
from kubescrape.scrape.targets import Target, make_labeler, synthetic_labels
from kubescrape.selfmon import SelfMetrics

__all__ = [
    "ACCEPT_HEADER",
    "ScrapeClient",
    "ScrapeLoop",
    "ScrapeReport",
    "TargetStats",
    "make_loops",
    "scrape_offset",
    "status_error",
    "translate_error",
]

log = logging.getLogger(__name__)

# What Prometheus 2.42 sends (scrape.go scrapeAcceptHeader); the Content-Type answered selects the parser.
ACCEPT_HEADER = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
                 "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
USER_AGENT = f"kubescrape/{__version__}"
# What Go's net/http server answers to plain HTTP on a TLS port (the kubelet's :10250 does this).
PLAIN_HTTP_ON_TLS = "Client sent an HTTP request to an HTTPS server."

SYNTHETIC_NAMES = (
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
)

_READ_CHUNK = 1 << 16


class SeriesProcessor(Protocol):
    """What the loop needs of the series cache (:class:`kubescrape.scrape.cache.SeriesCache`)."""

    def process(self, body: bytes, scrape_ts_ms: int, *, content_type: str = "") -> ScrapeResult: ...

    def stale_all(self, scrape_ts_ms: int) -> list[Chunk]: ...


@dataclass
class ScrapeReport:
    """The outcome of one scrape: the encoded chunks (synthetic series included) and what happened."""

    url: str
    ok: bool
    duration: float
    timestamp: float
    samples_scraped: int = 0
    samples_post_relabel: int = 0
    series_added: int = 0
    error: KubescrapeError | None = None
    chunks: list[Chunk] = field(default_factory=list)

    @property
    def samples(self) -> int:
        """Samples handed to the sink: scraped (after relabeling), staleness markers, synthetic series."""
        return sum(c.samples for c in self.chunks)


@dataclass
class TargetStats:
    """Running state of one target, for ``Agent.stats()`` and the demo's summary."""

    url: str
    up: bool | None = None
    last_error: str | None = None
    last_error_reason: str | None = None
    samples: int = 0
    duration: float = 0.0
    last_scrape: float | None = None
    scrapes: int = 0
    failures: int = 0
    missed_ticks: int = 0
    error: KubescrapeError | None = None
    """The last scrape's error, with its ``cause`` and ``fix`` (the status pages show both)."""
    samples_scraped: int = 0


def scrape_offset(target: Target, interval: float, now: float, seed: int = 0) -> float:
    """Seconds to wait before the first scrape, as Prometheus' ``Target.offset``.

    Each target gets a fixed phase within the interval, derived from a hash of its URL and labels (and
    ``seed``, e.g. the hostname, so agents on different nodes spread out): scrapes of many targets are
    spread evenly, and a restart keeps every target on the same phase.
    """
    if interval <= 0:
        return 0.0
    key = target.url + "\xff" + "\xff".join(f"{k}={v}" for k, v in sorted(target.labels))
    h = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") ^ seed
    interval_ns = max(1, int(interval * 1e9))
    now_ns = int(now * 1e9)
    base = interval_ns - now_ns % interval_ns
    wait = base + h % interval_ns
    if wait > interval_ns:
        wait -= interval_ns
    return wait / 1e9


def hostname_seed(hostname: str) -> int:
    """A deterministic offset seed from the agent's hostname (Prometheus seeds with its external labels)."""
    return int.from_bytes(hashlib.blake2b(hostname.encode(), digest_size=8).digest(), "big")


class ScrapeClient:
    """HTTP machinery shared by all loops of one agent: one aiohttp session (its connector pools
    connections per host and TLS context), SSL contexts built once per distinct TLS settings, and one
    :class:`BearerToken` per token file so a rotation is read once for every target using it.
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

    @property
    def session(self) -> aiohttp.ClientSession:
        """The shared session, created on first use inside the running event loop."""
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._limit, limit_per_host=self._limit_per_host, enable_cleanup_closed=True
            )
            # auto_decompress: the body limit below then applies to the uncompressed text, as Prometheus'.
            self._session = aiohttp.ClientSession(
                connector=connector, auto_decompress=True, trust_env=False,
                timeout=aiohttp.ClientTimeout(total=None),
            )
        return self._session

    def ssl_context(self, tls: TLSOptions) -> ssl.SSLContext | None:
        """The (cached) client SSL context for ``tls``; raises TLSConfigError."""
        if tls not in self._contexts:
            self._contexts[tls] = client_ssl_context(tls)
        return self._contexts[tls]

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


class ScrapeLoop:
    """Scrapes one target on its interval until cancelled. Never raises out of :meth:`run`."""

    def __init__(
        self,
        target: Target,
        *,
        client: ScrapeClient,
        sink: Sink | None = None,
        metrics: SelfMetrics | None = None,
        clock: Clock = SYSTEM_CLOCK,
        cache: SeriesProcessor | None = None,
        batch: int = 2000,
        offset_seed: int = 0,
    ) -> None:
        self.target = target
        self._client = client
        self.sink = sink
        """Where scraped chunks go (None: nowhere, e.g. ``--test``)."""
        self._metrics = metrics
        self._clock = clock
        self._cache: SeriesProcessor = cache if cache is not None else SeriesCache(
            make_labeler(target), honor_timestamps=target.honor_timestamps, batch=batch,
            limits=ScrapeLimits(target.sample_limit, target.label_limit, target.label_name_length_limit,
                                target.label_value_length_limit),
        )
        self._offset_seed = offset_seed
        self._content_type = ""  # of the last 200 response: selects the text or OpenMetrics parser
        self.stats = TargetStats(url=target.url)
        self._task: asyncio.Task[None] | None = None
        self._last_state: tuple[str, str] | None = None
        # Routes this target's chunks to one remote-write shard, so its series stay in order.
        self._route_key = zlib.crc32(repr((target.url, target.labels)).encode()) or 1
        self._synthetic_labels = [encode_labels(synthetic_labels(target, name)) for name in SYNTHETIC_NAMES]
        self._headers = self._static_headers()
        if target.username:
            basic = base64.b64encode(f"{target.username}:{target.password or ''}".encode()).decode()
            self._headers["Authorization"] = f"Basic {basic}"
        if target.tls.insecure_skip_verify:
            log.warning(
                "TLS certificate verification is off for %s (insecure_skip_verify = true): the agent cannot "
                "tell the kubelet from an impostor. Fix: set tls_ca to the CA that signed the serving "
                "certificate and remove insecure_skip_verify", target.url,
            )

    # ---- scheduling ---------------------------------------------------------------------------------

    def start(self, *, jitter: bool = True) -> asyncio.Task[None]:
        """Start :meth:`run` as a task owned by this loop (stopped by :meth:`stop`)."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.run(jitter=jitter), name=f"scrape {self.target.url}")
        return self._task

    async def stop(self) -> None:
        """Cancel the task and wait for it to end."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def run(self, *, jitter: bool = True) -> None:
        """Scrape at ``start + k * interval`` for k = 0, 1, 2 …; ticks missed by a slow scrape are skipped,
        so the schedule never drifts and never bursts."""
        interval = self.target.interval
        if jitter:
            now = self._clock.time()
            await self._clock.sleep(scrape_offset(self.target, interval, now, self._offset_seed))
        start = self._clock.monotonic()
        k = 0
        while True:
            await self.scrape_and_append()
            now = self._clock.monotonic()
            due = math.floor((now - start) / interval) + 1 if interval > 0 else k + 1
            if due > k + 1:
                self.stats.missed_ticks += due - k - 1
                log.debug("scrape of %s took %.3fs: skipped %d tick(s)", self.target.url,
                          self.stats.duration, due - k - 1)
            k = max(k + 1, due)
            await self._clock.sleep(start + k * interval - now)

    async def scrape_and_append(self) -> ScrapeReport:
        """One scrape, then hand its chunks to the sink."""
        report = await self.scrape()
        if self.sink is not None and report.chunks:
            try:
                await self.sink.append(report.chunks)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the sink counts what it cannot take; the loop must go on regardless
                log.error("could not hand %d samples of %s to the remote-write queue: %s",
                          report.samples, self.target.url, e)
        return report

    # ---- one scrape --------------------------------------------------------------------------------

    async def scrape(self) -> ScrapeReport:
        """Scrape once and return the chunks (samples + synthetic series). Updates stats and self-metrics;
        never raises (except cancellation)."""
        url = self.target.url
        wall = self._clock.time()
        t0 = self._clock.monotonic()
        ts_ms = int(wall * 1000)
        result: ScrapeResult | None = None
        error: KubescrapeError | None = None
        try:
            body = await self.fetch()
            result = self._cache.process(body, ts_ms, content_type=self._content_type)
        except asyncio.CancelledError:
            raise
        except ScrapeError as e:
            e.target = e.target or url
            error = e
        except KubescrapeError as e:  # TokenError, TLSConfigError: local configuration, no request made
            error = e
        except Exception as e:
            log.exception("unexpected error scraping %s", url)
            error = ScrapeError(f"unexpected error scraping {url}: {e!r}",
                                "this is a bug in kubescrape; please report it with the log above",
                                target=url, reason="internal")
        duration = self._clock.monotonic() - t0
        report = ScrapeReport(url=url, ok=error is None, duration=duration, timestamp=wall, error=error)
        if result is not None:
            report.chunks = [c._replace(key=self._route_key) for c in result.chunks]
            report.samples_scraped = result.samples_scraped
            report.samples_post_relabel = result.samples_post_relabel
            report.series_added = result.series_added
        else:
            # As Prometheus: after a failed scrape every series of the last good one is marked stale.
            report.chunks = [c._replace(key=self._route_key) for c in self._cache.stale_all(ts_ms)]
        report.chunks.append(self._synthetic_chunk(report, ts_ms))
        self._record(report)
        return report

    def _synthetic_chunk(self, report: ScrapeReport, ts_ms: int) -> Chunk:
        # On failure Prometheus reports up 0, the duration, and zero for the counts.
        values = (
            1.0 if report.ok else 0.0,
            report.duration,
            float(report.samples_scraped),
            float(report.samples_post_relabel),
            float(report.series_added),
        )
        data = b"".join(
            encode_timeseries(lb, v, ts_ms) for lb, v in zip(self._synthetic_labels, values, strict=True)
        )
        return Chunk(data, len(values), self._route_key)

    def _record(self, report: ScrapeReport) -> None:
        s = self.stats
        s.scrapes += 1
        s.up = report.ok
        s.duration = report.duration
        s.last_scrape = report.timestamp
        s.samples = report.samples_post_relabel
        s.samples_scraped = report.samples_scraped
        err = s.error = report.error
        if err is not None:
            s.failures += 1
            s.last_error = str(err)
            s.last_error_reason = err.reason
        else:
            s.last_error = s.last_error_reason = None
        m = self._metrics
        if m is not None:
            url = self.target.url
            m.scrapes.labels(target=url, result="success" if report.ok else "failure").inc()
            m.target_up.labels(target=url).set(1 if report.ok else 0)
            m.scrape_duration.labels(target=url).observe(report.duration)
            if err is not None:
                m.scrape_errors.labels(target=url, reason=err.reason).inc()
            else:
                m.samples_scraped.labels(target=url).inc(report.samples_scraped)
        # Log on a change of state only: a target that is down for an hour logs once, not 240 times.
        state = (type(err).__name__, str(err)) if err is not None else None
        if state != self._last_state:
            if err is not None:
                log.warning("scrape of %s failed: %s", self.target.url, err)
            elif self._last_state is not None:
                log.info("scrape of %s works again (%d samples)", self.target.url, report.samples_scraped)
            self._last_state = state

    # ---- HTTP ----------------------------------------------------------------------------------------

    def _static_headers(self) -> dict[str, str]:
        headers = {
            "Accept": ACCEPT_HEADER,
            "Accept-Encoding": "gzip" if self.target.enable_compression else "identity",
            "User-Agent": USER_AGENT,
            "X-Prometheus-Scrape-Timeout-Seconds": f"{self.target.timeout:g}",
        }
        headers.update(self.target.headers)
        return headers

    def _bearer(self, *, reload: bool = False) -> str | None:
        t = self.target
        if t.bearer_token_file:
            token = self._client.token(t.bearer_token_file)
            return token.force_reload() if reload else token.get()
        return t.bearer_token_string or None

    async def fetch(self) -> bytes:
        """GET the target and return the (uncompressed) body. Raises errors of the ScrapeError tree,
        TokenError or TLSConfigError."""
        t = self.target
        ssl_ctx = self._client.ssl_context(t.tls)
        try:
            async with asyncio.timeout(t.timeout if t.timeout > 0 else None):
                status, body, text = await self._get(ssl_ctx, self._bearer())
                if status == 401 and t.bearer_token_file:
                    # The token may have rotated between our stat and the server's check: read it again.
                    status, body, text = await self._get(ssl_ctx, self._bearer(reload=True))
        except TimeoutError as e:
            raise ScrapeTimeoutError(
                f"{t.url} did not answer within {t.timeout:g}s",
                "raise timeout in the instance (seconds), or check the endpoint's load and the network",
                target=t.url,
            ) from e
        except KubescrapeError:
            raise
        except (aiohttp.ClientError, OSError) as e:
            raise translate_error(e, t.url, has_credentials=self._has_credentials()) from e
        if status != 200:
            raise status_error(status, text, t.url, has_credentials=self._has_credentials(),
                               token_file=t.bearer_token_file)
        return body

    def _has_credentials(self) -> bool:
        t = self.target
        return bool(t.bearer_token_file or t.bearer_token_string or t.username or t.tls.cert_file)

    async def _get(self, ssl_ctx: ssl.SSLContext | None, token: str | None) -> tuple[int, bytes, str]:
        t = self.target
        headers = self._headers
        if token:
            headers = {**headers, "Authorization": f"Bearer {token}"}  # a token wins over basic auth
        async with self._client.session.get(
            t.url,
            headers=headers,
            ssl=ssl_ctx if ssl_ctx is not None else True,
            server_hostname=t.tls.server_name or None,
        ) as resp:
            if resp.status != 200:
                # Error bodies are short (kubelet: "Unauthorized", "Forbidden (user=…)"); keep a bounded part.
                raw = await resp.content.read(4096)
                return resp.status, b"", raw.decode("utf-8", "replace").strip()
            self._content_type = resp.headers.get("Content-Type", "")
            return 200, await _read_limited(resp, t.body_size_limit, t.url), ""


async def _read_limited(resp: aiohttp.ClientResponse, limit: int, url: str) -> bytes:
    """Read the body, failing as soon as it exceeds ``limit`` bytes (0 = no limit) instead of after."""
    parts: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(_READ_CHUNK):
        size += len(chunk)
        if limit and size > limit:
            raise BodyTooLargeError(
                f"{url} sent more than body_size_limit = {limit} bytes (uncompressed)",
                "raise body_size_limit for this instance, or drop series at the source",
                target=url,
            )
        parts.append(chunk)
    return b"".join(parts)


def translate_error(e: BaseException, url: str, *, has_credentials: bool = False) -> ScrapeError:
    """Translate an aiohttp/ssl/OS error of a request to ``url`` into the kubescrape error tree."""
    parts = urlsplit(url)
    host = parts.hostname or url
    port = parts.port or (443 if parts.scheme == "https" else 80)
    where = f"{host}:{port}"
    if isinstance(e, aiohttp.ClientConnectorCertificateError):
        return _certificate_error(e.certificate_error, url, host)
    if isinstance(e, ssl.SSLCertVerificationError):
        return _certificate_error(e, url, host)
    if isinstance(e, aiohttp.ClientSSLError | ssl.SSLError):
        text = str(e)
        if any(m in text for m in ("WRONG_VERSION_NUMBER", "record layer failure", "packet length too long")):
            return TLSError(
                f"TLS handshake with {where} failed: the port answers plain HTTP, not TLS ({_short(text)})",
                f"use http:// and use_tls = false for {url} (kube-proxy's :10249 is plain HTTP; the "
                "kubelet's :10250 is HTTPS)",
                target=url,
            )
        if "CERTIFICATE_REQUIRED" in text or "alert certificate required" in text:
            return TLSError(
                f"{where} requires a client certificate ({_short(text)})",
                "set tls_cert and tls_key to a client certificate signed by the kubelet's client CA, "
                "or authenticate with bearer_token_file",
                target=url,
            )
        return TLSError(f"TLS handshake with {where} failed: {_short(text)}",
                        "check use_tls, tls_ca, tls_cert/tls_key and that the port speaks TLS", target=url)
    if isinstance(e, aiohttp.ClientConnectorDNSError):
        return ConnectError(f"cannot resolve {host}: {_short(str(e.os_error))}",
                            "check the host name in urls (in a DaemonSet with hostNetwork use 127.0.0.1 or "
                            "$HOSTIP)", target=url)
    if isinstance(e, aiohttp.ClientConnectorError):
        os_error = e.os_error
        if isinstance(os_error, ConnectionRefusedError):
            return ConnectError(f"connection to {where} refused: nothing listens there",
                                "check the port in urls and that the process is running (kubelet: 10250 "
                                "HTTPS; kube-proxy metrics: 10249 on 127.0.0.1)", target=url)
        return ConnectError(f"cannot connect to {where}: {_short(str(os_error))}",
                            "check the address, the port and firewalls (hostNetwork: true for node ports)",
                            target=url)
    if isinstance(e, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError):
        if parts.scheme == "https" and not has_credentials:
            fix = "check the server's TLS requirements (it may want a client certificate: tls_cert/tls_key)"
        else:
            fix = "check the server's log; if it needs a client certificate set tls_cert and tls_key"
        return ConnectError(f"{where} closed the connection: {_short(str(e)) or type(e).__name__}", fix,
                            target=url)
    if isinstance(e, aiohttp.ClientPayloadError):
        return ScrapeError(f"the body from {url} was cut off or is not valid gzip: {_short(str(e))}",
                           "check proxies between the agent and the endpoint", target=url, reason="payload")
    if isinstance(e, aiohttp.TooManyRedirects):
        return ScrapeError(f"{url} redirects in a loop", "scrape the final URL directly", target=url,
                           reason="redirect")
    if isinstance(e, aiohttp.InvalidURL):
        return ScrapeError(f"invalid URL {url}", "fix urls in prometheus.toml", target=url, reason="url")
    if isinstance(e, aiohttp.ClientResponseError):
        return ScrapeError(f"{where} did not answer valid HTTP: {_short(e.message)}",
                           "check the port; if it is a TLS port use https:// and use_tls = true",
                           target=url, reason="protocol")
    return ConnectError(f"request to {url} failed: {_short(str(e)) or type(e).__name__}",
                        "check the address, port and network", target=url)


def _certificate_error(e: BaseException, url: str, host: str) -> TLSError:
    code = getattr(e, "verify_code", 0)
    message = getattr(e, "verify_message", "") or str(e)
    if code == 10:  # X509_V_ERR_CERT_HAS_EXPIRED
        return TLSError(f"the certificate of {host} has expired ({message})",
                        "renew the server's serving certificate (kubelet: serverTLSBootstrap / "
                        "rotateCertificates) and check this node's clock", target=url)
    if code == 9:  # X509_V_ERR_CERT_NOT_YET_VALID
        return TLSError(f"the certificate of {host} is not valid yet ({message})",
                        "check this node's clock (NTP)", target=url)
    if code in (62, 64):  # hostname / IP address mismatch
        return TLSError(f"the certificate of {host} is not valid for {host!r} ({message})",
                        "set tls_server_name to a name listed in the certificate's subjectAltNames, or "
                        "scrape an address the certificate names", target=url)
    if code in (2, 18, 19, 20, 21):  # self-signed / unknown issuer
        return TLSError(f"the certificate of {host} is signed by an unknown authority ({message})",
                        "set tls_ca to the CA that signed the kubelet's serving certificate (in a pod with a "
                        f"cluster-signed kubelet certificate: {IN_CLUSTER_CA_FILE}); for a kubelet with a "
                        "self-signed certificate Categraf's example sets insecure_skip_verify = true",
                        target=url)
    return TLSError(f"the certificate of {host} failed verification: {message}",
                    "check tls_ca and tls_server_name, or the server's certificate", target=url)



def status_error(status: int, body: str, url: str, *, has_credentials: bool,
                 token_file: str | None = None) -> ScrapeError:
    """The error for a non-200 answer, with the fix a user needs for that status."""
    shown = _short(body, 300)
    if status == 400 and PLAIN_HTTP_ON_TLS in body:
        return TLSError(f"{url} is an HTTPS port: the server answered 400 {PLAIN_HTTP_ON_TLS!r}",
                        f"use https:// and use_tls = true for {_with_https(url)}", target=url)
    if status == 401:
        if has_credentials:
            cause = f"{url} answered 401 Unauthorized: the credentials were rejected"
            fix = ("the bearer token is expired, from another cluster, or not a ServiceAccount token; check "
                   f"bearer_token_file{f' ({token_file})' if token_file else ''} and that the kubelet "
                   "runs with --authentication-token-webhook")
        else:
            cause = f"{url} answered 401 Unauthorized: the endpoint requires authentication"
            fix = (f"set bearer_token_file = \"{IN_CLUSTER_TOKEN_FILE}\" (and serviceAccountName in the "
                   "DaemonSet), or tls_cert/tls_key for a client certificate")
        return HTTPStatusError(cause, fix, target=url, status=401, body=shown)
    if status == 403:
        return HTTPStatusError(
            f"{url} answered 403 Forbidden: {shown or 'the identity is not allowed'}",
            "the identity authenticated but RBAC does not allow it: bind it (ClusterRoleBinding) to a "
            "ClusterRole allowing verb get on nodes/metrics, nodes/stats and nodes/proxy "
            "(see `kubescrape manifests`)",
            target=url, status=403, body=shown,
        )
    if status == 404:
        return HTTPStatusError(f"{url} answered 404 Not Found",
                               "check the path in urls (kubelet: /metrics, /metrics/cadvisor, "
                               "/metrics/probes, /metrics/resource)", target=url, status=404, body=shown)
    return HTTPStatusError(f"{url} answered HTTP {status}{': ' + shown if shown else ''}",
                           "check the endpoint's log", target=url, status=status, body=shown)


def _with_https(url: str) -> str:
    return "https://" + url[len("http://"):] if url.startswith("http://") else url


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"


def make_loops(
    targets: Sequence[Target],
    *,
    client: ScrapeClient,
    sink: Sink | None,
    metrics: SelfMetrics | None,
    clock: Clock = SYSTEM_CLOCK,
    batch: int = 2000,
    offset_seed: int = 0,
) -> list[ScrapeLoop]:
    """One loop per target, sharing ``client``."""
    return [
        ScrapeLoop(t, client=client, sink=sink, metrics=metrics, clock=clock, batch=batch,
                   offset_seed=offset_seed)
        for t in targets
    ]

