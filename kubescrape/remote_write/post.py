"""Remote-write POSTs over kept-alive HTTP/1.1 connections, without a client library in the way.

Why: aiohttp's request machinery (URL and header objects, cookie jar, tracing hooks, timers, response and
stream objects) costs about 0.3 ms of CPU per request in Python. A writer sends one request per ``batch``
samples: at 1 node × 100 pods and a 2 s interval that is ten requests per interval. Measured on the bench
VM (``uvloop``, a 40 KB body to ``kubescrape receive`` on loopback, 500-1000 requests): aiohttp 380-600 µs of
CPU per request, this path 80-150 µs.

This path does the common case only: one request at a time per connection, a ``Content-Length`` body, an
answer delimited by ``Content-Length``, ``chunked`` or the end of the connection. :meth:`Poster.post`
returns ``None`` when it could not get an answer that way (the connection failed or closed first, the
answer did not parse, it was too large to be a remote-write answer); the caller then sends the same request
with aiohttp, which reconnects and translates the failure into the error tree. A redirect is the caller's
to follow (aiohttp does). A request that is not answered within ``timeout`` raises :class:`TimeoutError`;
a connection not made within ``dial_timeout`` raises aiohttp's ``ConnectionTimeoutError``, as aiohttp would.
Sending a request twice is safe: receivers accept identical samples again.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Mapping
from typing import NamedTuple, cast
from urllib.parse import urlsplit

from aiohttp import ConnectionTimeoutError

__all__ = ["MAX_ANSWER_BYTES", "Answer", "Poster"]

log = logging.getLogger("kubescrape.remote_write")

# A remote-write answer is a status and at most an error line; anything bigger goes to aiohttp.
MAX_ANSWER_BYTES = 1 << 20


class Answer(NamedTuple):
    """A backend's answer: status, headers (names in lower case; repeated ones joined by ", "), body."""

    status: int
    headers: dict[str, str]
    body: bytes


class _Unusable(Exception):
    """The connection cannot give this request's answer (closed, malformed, too large)."""


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: bytes in a buffer, a waiter woken by every arrival and by the end."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.ended = False
        self._waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports have the interface but do not derive from asyncio.Transport
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self._wake()

    def eof_received(self) -> bool:
        self.ended = True
        self._wake()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.ended = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    @property
    def usable(self) -> bool:
        """Open, and nothing arrived that no request asked for."""
        return not self.ended and not self.buf and self.transport is not None and \
            not self.transport.is_closing()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        self.ended = True

    async def _more(self) -> None:
        if self.ended:
            raise _Unusable("the connection closed before the answer was complete")
        if len(self.buf) > MAX_ANSWER_BYTES:
            raise _Unusable("the answer is larger than a remote-write answer")
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    async def _until(self, delimiter: bytes) -> bytes:
        """The buffered bytes up to ``delimiter`` (removed with it from the buffer)."""
        start = 0
        while (i := self.buf.find(delimiter, start)) < 0:
            start = max(0, len(self.buf) - len(delimiter) + 1)
            await self._more()
        out = bytes(self.buf[:i])
        del self.buf[:i + len(delimiter)]
        return out

    async def _exactly(self, n: int) -> bytes:
        if n > MAX_ANSWER_BYTES:
            raise _Unusable("the answer is larger than a remote-write answer")
        while len(self.buf) < n:
            await self._more()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    async def _chunked(self) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            size = int(bytes((await self._until(b"\r\n")).split(b";", 1)[0]).strip(), 16)
            if size == 0:
                while await self._until(b"\r\n"):  # trailer fields, up to the empty line
                    pass
                return b"".join(parts)
            total += size
            if total > MAX_ANSWER_BYTES:
                raise _Unusable("the answer is larger than a remote-write answer")
            parts.append(await self._exactly(size))
            if await self._exactly(2) != b"\r\n":
                raise _Unusable("malformed chunked answer")

    async def _until_end(self) -> bytes:
        while not self.ended:
            await self._more()
        out = bytes(self.buf)
        self.buf.clear()
        return out

    async def read_answer(self) -> tuple[Answer, bool]:
        """The answer to the request just written, and whether the connection can carry another one."""
        while True:
            head = (await self._until(b"\r\n\r\n")).split(b"\r\n")
            version, _, rest = head[0].partition(b" ")
            if not version.startswith(b"HTTP/1.") or len(rest) < 3 or not rest[:3].isdigit():
                raise _Unusable("malformed status line")
            status = int(rest[:3])
            headers: dict[str, str] = {}
            for line in head[1:]:
                name, sep, value = line.partition(b":")
                if not sep:
                    raise _Unusable("malformed header line")
                key = name.strip().lower().decode("latin-1")
                text = value.strip().decode("latin-1")
                headers[key] = f"{headers[key]}, {text}" if key in headers else text
            if status >= 200:
                break  # 1xx answers are interim: the final one follows
        keep = version == b"HTTP/1.1" and "close" not in headers.get("connection", "").lower()
        if status in (204, 304):
            body = b""
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            body = await self._chunked()
        elif "content-length" in headers:
            body = await self._exactly(int(headers["content-length"]))
        else:
            body = await self._until_end()
            keep = False
        if self.buf:
            keep = False  # bytes nobody asked for: do not guess what they belong to
        return Answer(status, headers, body), keep


class Poster:
    """POSTs to one URL over a small pool of kept-alive connections (see the module docstring).

    ``headers`` are sent with every request (``Host`` and ``Content-Length`` are added); ``ssl_context``
    is used for ``https`` URLs, with ``server_name`` as the name to verify (default: the URL's host).
    """

    def __init__(self, url: str, headers: Mapping[str, str], *, ssl_context: ssl.SSLContext | None,
                 server_name: str | None, timeout: float, dial_timeout: float, max_idle: int) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.username is not None:
            raise ValueError(f"{url!r} is not a plain http(s) URL")
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._ssl = ssl_context if parts.scheme == "https" else None
        if parts.scheme == "https" and self._ssl is None:
            raise ValueError("an https URL needs a TLS context")
        self._server_name = (server_name or self._host) if self._ssl is not None else None
        default = (parts.scheme, self._port) in (("http", 80), ("https", 443))
        host = f"[{self._host}]" if ":" in self._host else self._host
        host_header = host if default else f"{host}:{self._port}"
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        # A configured Host header wins over the URL's (virtual hosting behind a proxy), as with aiohttp.
        given = [v for k, v in headers.items() if k.lower() == "host"]
        lines = [f"POST {target} HTTP/1.1", f"Host: {given[-1] if given else host_header}"]
        lines += [f"{k}: {v}" for k, v in headers.items() if k.lower() not in ("host", "content-length")]
        self._head = ("\r\n".join(lines) + "\r\n").encode("latin-1")
        # As aiohttp's ClientTimeout: zero or less means no limit.
        self.timeout = timeout if timeout > 0 else None
        self.dial_timeout = dial_timeout if dial_timeout > 0 else None
        self.max_idle = max(1, max_idle)
        self._idle: list[_Connection] = []
        self.connections = 0  # opened so far (tests: kept alive means few)
        self._logged = False

    async def post(self, body: bytes) -> Answer | None:
        """POST ``body``; the answer, or None when this path could not get one (send it another way).
        Raises TimeoutError when no answer came within ``timeout`` seconds."""
        conn: _Connection | None = None
        while self._idle and conn is None:
            candidate = self._idle.pop()
            if candidate.usable:
                conn = candidate
            else:
                candidate.close()
        try:
            async with asyncio.timeout(self.timeout):
                if conn is None:
                    conn = await self._connect()
                    if conn is None:
                        return None
                assert conn.transport is not None
                conn.transport.writelines((self._head, b"Content-Length: %d\r\n\r\n" % len(body), body))
                answer, keep = await conn.read_answer()
        except TimeoutError:
            if conn is not None:
                conn.close()
            raise
        except Exception as e:  # the caller sends the request another way
            if conn is not None:
                conn.close()
            self._unexpected(e)
            return None
        except BaseException:  # cancelled mid-request: the connection's state is unknown
            if conn is not None:
                conn.close()
            raise
        if keep and conn.usable and len(self._idle) < self.max_idle:
            self._idle.append(conn)
        else:
            conn.close()
        return answer

    async def _connect(self) -> _Connection | None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.dial_timeout):
                _, conn = await loop.create_connection(
                    _Connection, self._host, self._port, ssl=self._ssl, server_hostname=self._server_name)
        except TimeoutError:
            # Raised, not left to aiohttp: it would wait for the dial timeout a second time. Its own class,
            # so the error is translated as aiohttp's is ("connecting to … timed out").
            raise ConnectionTimeoutError(
                f"Connection timeout to host {self._host}:{self._port} (dial_timeout {self.dial_timeout:g}s)"
            ) from None
        except Exception as e:  # refused, TLS, DNS: the caller's aiohttp path reports the failure
            self._unexpected(e)
            return None
        self.connections += 1
        return conn

    def _unexpected(self, e: Exception) -> None:
        """Failures of the connection or the answer are expected (the caller retries another way);
        anything else is a bug here, logged once, that would otherwise only make every request slower."""
        if isinstance(e, _Unusable | OSError | ValueError) or self._logged:
            return
        self._logged = True
        log.error("remote-write POST path failed unexpectedly (requests go through aiohttp instead): %r",
                  e, exc_info=e)

    def close(self) -> None:
        """Close the idle connections."""
        for conn in self._idle:
            conn.close()
        self._idle.clear()
