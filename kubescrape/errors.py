"""The kubescrape exception tree.

Every error says what went wrong *and* what to do about it: ``str(err)`` is the cause followed by
``fix: …``. Errors from lower layers (aiohttp, ssl, OSError, pydantic) are translated once, at the
boundary where they happen, into one of these classes.
"""

from __future__ import annotations


class KubescrapeError(Exception):
    """Base of every error kubescrape raises on purpose.

    ``cause`` says what happened, ``fix`` what the user should do next. ``reason`` is a short
    machine-readable tag used as the ``reason`` label of self-metrics (``parse``, ``http_401`` …).
    """

    reason: str = "error"

    def __init__(self, cause: str, fix: str | None = None, *, reason: str | None = None) -> None:
        self.cause = cause
        self.fix = fix
        if reason is not None:
            self.reason = reason
        super().__init__(self.__str__())

    def __str__(self) -> str:
        return f"{self.cause}; fix: {self.fix}" if self.fix else self.cause


class ConfigError(KubescrapeError):
    """A configuration file or option is invalid. Names the file, the key/line and what is expected."""

    reason = "config"

    def __init__(
        self,
        cause: str,
        fix: str | None = None,
        *,
        file: str | None = None,
        key: str | None = None,
        line: int | None = None,
    ) -> None:
        self.file = file
        self.key = key
        self.line = line
        where = ""
        if file:
            where = file + (f":{line}" if line else "") + (f" [{key}]" if key else "") + ": "
        elif key:
            where = f"[{key}] "
        super().__init__(where + cause, fix)


class AuthError(KubescrapeError):
    """Credentials could not be loaded: token file, client cert/key, CA bundle."""

    reason = "auth"


class TokenError(AuthError):
    """A bearer token file is missing, unreadable, empty or expired."""

    reason = "token"


class TLSConfigError(AuthError):
    """A TLS file (CA, cert, key) is missing or does not parse."""

    reason = "tls_config"


class ScrapeError(KubescrapeError):
    """A scrape failed. ``target`` is the URL that was scraped."""

    reason = "scrape"

    def __init__(
        self, cause: str, fix: str | None = None, *, target: str = "", reason: str | None = None
    ) -> None:
        self.target = target
        super().__init__(cause, fix, reason=reason)


class ConnectError(ScrapeError):
    """TCP connect refused, timed out or the name did not resolve."""

    reason = "connect"


class ScrapeTimeoutError(ScrapeError):
    """The scrape did not finish within its timeout."""

    reason = "timeout"


class TLSError(ScrapeError):
    """TLS handshake failed: unknown authority, name mismatch, expired certificate, plain HTTP port …"""

    reason = "tls"


class HTTPStatusError(ScrapeError):
    """The endpoint answered with a non-200 status."""

    reason = "http_status"

    def __init__(
        self, cause: str, fix: str | None = None, *, target: str = "", status: int = 0, body: str = ""
    ) -> None:
        self.status = status
        self.body = body
        super().__init__(cause, fix, target=target, reason=f"http_{status}" if status else None)


class BodyTooLargeError(ScrapeError):
    """The response body exceeded the configured size limit."""

    reason = "body_size"


class SampleLimitError(ScrapeError):
    """More samples after relabeling than ``sample_limit``: the whole scrape fails, as in Prometheus."""

    reason = "sample_limit"


class LabelLimitError(ScrapeError):
    """A series breaks ``label_limit``, ``label_name_length_limit`` or ``label_value_length_limit``
    (``reason`` names which): the whole scrape fails, as in Prometheus."""

    reason = "label_limit"


class ParseError(ScrapeError):
    """The exposition text is malformed. ``line_no`` is 1-based; ``line`` is the offending line."""

    reason = "parse"

    def __init__(self, message: str, *, line_no: int = 0, line: str = "", target: str = "") -> None:
        self.message = message
        self.line_no = line_no
        self.line = line
        shown = line if len(line) <= 200 else line[:200] + "…"
        cause = f"invalid exposition text at line {line_no}: {message}: {shown!r}" if line_no else message
        super().__init__(
            cause,
            "the endpoint does not serve valid Prometheus text format; check the URL points at a /metrics "
            "endpoint and that no proxy rewrites the body",
            target=target,
        )


class RemoteWriteError(KubescrapeError):
    """Sending to a remote-write backend failed."""

    reason = "remote_write"

    def __init__(
        self,
        cause: str,
        fix: str | None = None,
        *,
        writer: str = "",
        status: int = 0,
        retryable: bool = True,
        retry_after: float | None = None,
    ) -> None:
        self.writer = writer
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after
        super().__init__(cause, fix, reason=f"http_{status}" if status else None)


class SpoolError(KubescrapeError):
    """The on-disk spool could not be written or read."""

    reason = "spool"


class SpoolCorruptError(SpoolError):
    """A spool segment is truncated or fails its checksum; the bad part is skipped and counted."""

    reason = "spool_corrupt"


class EmulatorError(KubescrapeError):
    """The kubelet emulator could not start (bad RBAC YAML, address in use, …)."""

    reason = "emulator"
