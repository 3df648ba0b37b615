"""HTTP delivery to one remote-write backend: POST, classify the answer, back off and retry.

A send either succeeds (2xx), is retried (5xx, 429, connection errors, timeouts) with exponential
backoff and jitter capped at ``max_backoff`` — or, when the backend sent ``Retry-After`` with a 429 or
503, after exactly that long — or is given up (any other 4xx: the request itself is wrong and sending it
again cannot help). Given-up samples are counted in ``samples_dropped{reason="http_<status>"}`` and the
status plus the first line of the response body are logged. Every retryable failure counts the batch's
samples in ``samples_failed`` and, when it is sent again, in ``samples_retried``.

Retryable failures are retried until they succeed or the caller cancels (shutdown): with the spool on,
the data is on disk, so waiting for the backend loses nothing.
"""

from __future__ import annotations

import base64
import email.utils
import logging
import random
import ssl
from typing import TYPE_CHECKING

import aiohttp

from kubescrape.client import TLSConfig, client_ssl_context, make_session, remote_write_error
from kubescrape.clock import SYSTEM_CLOCK, Clock
from kubescrape.errors import RemoteWriteError
from kubescrape.remote_write.encode import REMOTE_WRITE_HEADERS, compress
from kubescrape.selfmon import SelfMetrics

if TYPE_CHECKING:
    from kubescrape.remote_write.queue import WriterSettings

log = logging.getLogger("kubescrape.remote_write")

# A backend asking for more than this in Retry-After is treated as asking for this much: a typo'd or
# hostile header must not park a writer for days.
MAX_RETRY_AFTER = 15 * 60.0


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date (RFC 9110 §10.2.3).

    ``now`` is wall-clock seconds (for the date form). Returns None when absent or unparseable.
    """
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - now
    return min(max(0.0, seconds), MAX_RETRY_AFTER)


class Backoff:
    """Exponential backoff with jitter: attempt n waits ``min(max, min * 2**n)`` scaled by [0.5, 1.0)."""

    def __init__(self, minimum: float, maximum: float, rng: random.Random | None = None) -> None:
        self.minimum = minimum
        self.maximum = maximum
        self.attempt = 0
        self._rng = rng or random.Random()

    def next(self) -> float:
        """The next delay; grows until it reaches the cap."""
        delay = min(self.maximum, self.minimum * (2.0 ** min(self.attempt, 62)))
        self.attempt += 1
        # Jitter spreads the retries of many agents after a shared backend outage.
        return delay * (0.5 + 0.5 * self._rng.random())

    def reset(self) -> None:
        self.attempt = 0


def tls_context(settings: WriterSettings) -> ssl.SSLContext | None:
    """The TLS context for an https writer (None for http), built by the one client-side builder
    (:func:`kubescrape.client.client_ssl_context`): ``ca_file`` replaces the system trust store."""
    if not settings.url.startswith("https://"):
        return None
    ctx = client_ssl_context(TLSConfig(
        ca_file=settings.ca_file, cert_file=settings.cert_file, key_file=settings.key_file,
        server_name=getattr(settings, "server_name", None),
        insecure_skip_verify=settings.insecure_skip_verify,
        min_version=getattr(settings, "min_version", None),
        max_version=getattr(settings, "max_version", None),
    ))
    assert ctx is not None
    return ctx


def _writer_credentials(settings: WriterSettings) -> str:
    """What credentials a writer sends, named as its configuration names them ("" = none)."""
    sent = []
    if settings.basic_auth:
        sent.append(f"basic auth (basic_auth_user {settings.basic_auth[0]!r})")
    if any(k.lower() == "authorization" for k, _ in settings.headers):
        sent.append("the Authorization header in headers")
    if settings.cert_file and settings.url.startswith("https://"):
        sent.append(f"the client certificate tls_cert ({settings.cert_file})")
    return " and ".join(sent)


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line[:300]


class Sender:
    """Sends request bodies to one writer. ``start`` before use, ``close`` after."""

    def __init__(self, settings: WriterSettings, *, metrics: SelfMetrics, clock: Clock = SYSTEM_CLOCK,
                 rng: random.Random | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        self._rng = rng or random.Random()
        self._session: aiohttp.ClientSession | None = None
        self._server_name: str | None = None
        self._headers: dict[str, str] = {**REMOTE_WRITE_HEADERS, **dict(settings.headers)}
        if settings.basic_auth:
            user, password = settings.basic_auth
            token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
            self._headers["Authorization"] = f"Basic {token}"
        w = settings.name
        self._m_sent = metrics.samples_sent.labels(w)
        self._m_failed = metrics.samples_failed.labels(w)
        self._m_retried = metrics.samples_retried.labels(w)
        self._m_duration = metrics.send_duration.labels(w)
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self.last_error: str = ""

    async def start(self) -> None:
        """Open the connection pool (one per writer so a dead backend holds no one else's sockets)."""
        if self._session is not None:
            return
        s = self.settings
        if s.url.startswith("https://"):
            self._server_name = getattr(s, "server_name", None) or None
        self._session = make_session(
            limit=max(1, s.max_shards) * 2, ssl_context=tls_context(s) or False,
            timeout=aiohttp.ClientTimeout(total=s.timeout, sock_connect=s.dial_timeout),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send_once(self, body: bytes, samples: int) -> None:
        """POST one compressed request; raise :class:`RemoteWriteError` on anything but 2xx."""
        if self._session is None:
            await self.start()
        assert self._session is not None
        s = self.settings
        started = self.clock.monotonic()
        try:
            async with self._session.post(s.url, data=body, headers=self._headers,
                                          server_hostname=self._server_name) as resp:
                status = resp.status
                where = s.url if str(resp.url) == s.url else f"{resp.url} (redirected from {s.url})"
                if 200 <= status < 300:
                    await resp.read()
                    return
                text = await resp.text(errors="replace")
                retry_after = parse_retry_after(resp.headers.get("Retry-After"), self.clock.time())
        except (aiohttp.ClientError, OSError) as e:  # TimeoutError (aiohttp's total timeout) is an OSError
            raise remote_write_error(e, s.url, s.name, timeout=s.timeout,
                                     server_name=self._server_name) from e
        finally:
            self._m_duration.observe(max(0.0, self.clock.monotonic() - started))
        line = _first_line(text)
        if status in (401, 403):
            sent = _writer_credentials(s)
            if sent:
                fix = (f"the backend rejected {sent}: check {'them' if ' and ' in sent else 'it'} "
                       "(and, for a 403, that the identity may write)")
            else:
                fix = ("the backend wants credentials and none were sent: set basic_auth_user/"
                       "basic_auth_pass, or an Authorization bearer token in headers")
            raise RemoteWriteError(
                f"writer {s.name!r} at {where} answered {status} "
                f"{'Unauthorized' if status == 401 else 'Forbidden'}: {line}",
                fix, writer=s.name, status=status, retryable=False)
        if status == 429 or status >= 500:
            raise RemoteWriteError(
                f"writer {s.name!r} at {where} answered {status}: {line}",
                "the backend is overloaded or failing; the batch is retried with backoff",
                writer=s.name, status=status, retryable=True,
                retry_after=retry_after if status in (429, 503) else None)
        raise RemoteWriteError(
            f"writer {s.name!r} at {where} answered {status}: {line}",
            "the backend refused this batch (bad request, samples too old or out of order); it cannot "
            "succeed on retry and was dropped", writer=s.name, status=status, retryable=False)

    async def deliver(self, raw: bytes, samples: int) -> bool:
        """Send one uncompressed WriteRequest body until it is accepted or refused for good.

        Returns True when acknowledged, False when dropped (non-retryable answer; counted). Retryable
        failures are retried with backoff until success; cancel the task to give up (shutdown).
        """
        body = compress(raw)
        backoff = Backoff(self.settings.min_backoff, self.settings.max_backoff, self._rng)
        w = self.settings.name
        while True:
            try:
                await self.send_once(body, samples)
            except RemoteWriteError as e:
                self._m_failed.inc(samples)
                self.failed += samples
                self.last_error = str(e)
                if not e.retryable:
                    reason = f"http_{e.status}" if e.status else "error"
                    self.metrics.samples_dropped.labels(w, reason).inc(samples)
                    self.dropped += samples
                    log.error("dropped %d samples: %s", samples, e)
                    return False
                delay = e.retry_after if e.retry_after is not None else backoff.next()
                log.warning("send of %d samples failed, retrying in %.2fs: %s", samples, delay, e)
                await self.clock.sleep(delay)
                self._m_retried.inc(samples)
                continue
            self._m_sent.inc(samples)
            self.sent += samples
            self.last_error = ""
            return True

