"""HTTP delivery to one remote-write backend: POST, classify the answer, back off and retry.

A send either succeeds (2xx), is retried (5xx, 429, connection errors, timeouts) with exponential
backoff and jitter capped at ``max_backoff`` — or, when the backend sent ``Retry-After`` with a 429 or
503, after exactly that long — or is given up (any other 4xx: the request itself is wrong and sending it
again cannot help). :meth:`Sender.deliver` returns the :class:`Outcome`; the dispatcher counts the
samples as sent or dropped (``reason="http_<status>"``) when it acknowledges the round, so the books
change in one place. Every failed attempt counts the batch's samples in ``samples_failed`` and, when it
is sent again, in ``samples_retried``.

Retryable failures are retried until they succeed, until ``max_retries`` retries were made (then the
batch is given up with ``reason="retries_exhausted"``; ``-1``, the default, retries forever), or until
the caller cancels (shutdown): with the spool on, the data is on disk, so waiting for the backend loses
nothing. The first failure of a streak is logged as a warning, the following ones at debug level, and
the recovery once.
"""

from __future__ import annotations

import base64
import email.utils
import logging
import random
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp

from kubescrape.client import TLSConfig, client_ssl_context, make_session, remote_write_error
from kubescrape.clock import MIN_BACKOFF, SYSTEM_CLOCK, Backoff, Clock
from kubescrape.errors import RemoteWriteError
from kubescrape.remote_write.encode import REMOTE_WRITE_HEADERS, compress
from kubescrape.remote_write.ledger import WriterCounters
from kubescrape.remote_write.post import Poster
from kubescrape.selfmon import SelfMetrics

if TYPE_CHECKING:
    from kubescrape.remote_write.settings import WriterSettings

__all__ = ["MAX_RETRY_AFTER", "Backoff", "Outcome", "Sender", "parse_retry_after", "tls_context"]

log = logging.getLogger("kubescrape.remote_write")

# Answers that refuse the data, not the writer (bad samples, too large): the backend itself works.
DATA_REFUSED = frozenset({400, 409, 413, 422})

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


@dataclass(frozen=True)
class Outcome:
    """How a delivery ended: accepted (``reason == ""``) or given up for ``reason`` (after ``status``)."""

    reason: str = ""
    status: int = 0
    error: str = ""

    @property
    def accepted(self) -> bool:
        return not self.reason

    def __bool__(self) -> bool:
        return self.accepted


ACCEPTED = Outcome()


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
                 rng: random.Random | None = None, counters: WriterCounters | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        self._rng = rng or random.Random()
        self._session: aiohttp.ClientSession | None = None
        self._poster: Poster | None = None  # the cheap path; aiohttp for what it cannot do
        self._server_name: str | None = None
        self._headers: dict[str, str] = {**REMOTE_WRITE_HEADERS, **dict(settings.headers)}
        if settings.basic_auth:
            user, password = settings.basic_auth
            token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
            self._headers["Authorization"] = f"Basic {token}"
        self.counters = counters if counters is not None else WriterCounters(settings.name, metrics)
        self._m_duration = metrics.send_duration.labels(settings.name)

    async def start(self) -> None:
        """Open the connection pool (one per writer so a dead backend holds no one else's sockets)."""
        if self._session is not None:
            return
        s = self.settings
        if s.url.startswith("https://"):
            self._server_name = getattr(s, "server_name", None) or None
        ctx = tls_context(s)
        self._session = make_session(
            limit=max(1, s.max_shards) * 2, ssl_context=ctx or False,
            timeout=aiohttp.ClientTimeout(total=s.timeout, sock_connect=s.dial_timeout),
        )
        try:
            self._poster = Poster(s.url, self._headers, ssl_context=ctx, server_name=self._server_name,
                                  timeout=s.timeout, dial_timeout=s.dial_timeout, max_idle=s.max_shards)
        except ValueError:  # a URL it does not handle (credentials in it, another scheme): aiohttp only
            self._poster = None

    async def close(self) -> None:
        if self._poster is not None:
            self._poster.close()
            self._poster = None
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
            answer = await self._poster.post(body) if self._poster is not None else None
            if answer is not None and not 300 <= answer.status < 400:
                status, where = answer.status, s.url
                if 200 <= status < 300:
                    return
                text = answer.body.decode("utf-8", "replace")
                retry_after = parse_retry_after(answer.headers.get("retry-after"), self.clock.time())
            else:  # not answered that way, or redirected: aiohttp follows redirects, translates failures
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

    @property
    def failed(self) -> int:
        return self.counters.failed

    @property
    def last_error(self) -> str:
        return self.counters.last_error

    async def deliver(self, raw: bytes, samples: int) -> Outcome:
        """Send one uncompressed WriteRequest body until it is accepted or given up (see
        :meth:`deliver_body`)."""
        return await self.deliver_body(compress(raw), samples)

    async def deliver_body(self, body: bytes, samples: int) -> Outcome:
        """Send one snappy-compressed WriteRequest body until it is accepted or given up.

        Retryable failures are retried with backoff (or after ``Retry-After``) until success, until
        ``max_retries`` retries were made, or until the task is cancelled (shutdown). The caller counts
        the outcome (sent, or dropped with ``outcome.reason``).
        """
        s = self.settings
        backoff = Backoff(s.min_backoff, s.max_backoff, self._rng)
        c = self.counters
        retries = 0
        while True:
            try:
                await self.send_once(body, samples)
            except RemoteWriteError as e:
                first = c.failing_since is None
                c.attempt_failed(samples, str(e), self.clock.monotonic(),
                                 streak=e.retryable or e.status not in DATA_REFUSED)
                if not e.retryable:
                    return Outcome(f"http_{e.status}" if e.status else "error", e.status or 0, str(e))
                if 0 <= s.max_retries <= retries:
                    log.error("writer %r: giving up %d samples after %d retries: %s", s.name, samples,
                              retries, e)
                    return Outcome("retries_exhausted", e.status or 0, str(e))
                delay = max(MIN_BACKOFF, e.retry_after) if e.retry_after is not None else backoff.next()
                log.log(logging.WARNING if first else logging.DEBUG,
                        "send of %d samples failed, retrying in %.2fs: %s", samples, delay, e)
                await self.clock.sleep(delay)
                retries += 1
                c.retried_attempt(samples)
                continue
            c.attempt_succeeded()
            return ACCEPTED
