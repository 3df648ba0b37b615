"""One place that keeps secrets out of what kubescrape shows: labels, metric labels, log lines, file names,
``--test`` and doctor output, configuration dumps.

URLs may carry credentials (``http://alice:PASS@host/metrics``). They are *used* for basic auth
(:func:`split_userinfo` hands them to the scrape loop or the sender) and *never shown*: every URL that
leaves the configuration goes through :func:`redact_url`, which drops the userinfo entirely. Dropping it
(rather than writing ``alice:<secret>@``) keeps the URL a user sees in a log line identical to the
``target`` label of the self-metrics and to the ``instance`` label sent to the backend, so they can be
matched by eye. Prometheus does the same: ``__address__`` never holds userinfo.

Secret values in configuration dumps are replaced by :data:`SECRET`, the marker Prometheus prints for its
``Secret`` fields.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import quote, unquote, urlsplit, urlunsplit

__all__ = ["SECRET", "SECRET_HEADERS", "redact_text", "redact_url", "safe_name", "split_userinfo"]

SECRET = "<secret>"
"""What a secret value reads as in any output (as Prometheus' config dump)."""

SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "x-api-key", "x-auth-token"})
"""HTTP header names (lower case) whose values are credentials."""

# scheme://userinfo@ — userinfo is everything up to the last "@" before the first "/", "?" or "#".
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/?#\s@]*@)+")
# In free text, stricter: a password may hold an unencoded "/" or "#" (an invalid URL, but one a user may
# write), so everything from the scheme to the last "@" of the word goes. Over-redacting a message is fine.
_USERINFO_IN_TEXT = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^\s\"'<>]*@")


def split_userinfo(url: str) -> tuple[str, str | None, str | None]:
    """``url`` without its userinfo, plus the username and password it carried (percent-decoded, as Go's
    ``url.User`` returns them); ``None`` for a part that is absent. A URL without userinfo comes back
    unchanged, so this is safe to call on every URL."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None, None
    userinfo, _, host = parts.netloc.rpartition("@")
    user, sep, password = userinfo.partition(":")
    clean = urlunsplit(parts._replace(netloc=host))
    return clean, unquote(user), (unquote(password) if sep else None)


def redact_url(url: str) -> str:
    """``url`` with any userinfo removed: the form of a URL fit for labels, logs, metrics and messages.

    Never raises: a string that does not parse as a URL still has every ``scheme://user:pass@`` removed.
    """
    try:
        return split_userinfo(url)[0]
    except ValueError:
        return _USERINFO.sub(r"\g<scheme>", url)


def redact_text(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` (an exception message, a TOML line, a log line) with every URL's userinfo removed and
    every non-empty value of ``secrets`` (and its percent-encoded form) replaced by :data:`SECRET`."""
    out = _USERINFO_IN_TEXT.sub(r"\g<scheme>", text)
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        out = out.replace(secret, SECRET)
        encoded = quote(secret, safe="")
        if encoded != secret:
            out = out.replace(encoded, SECRET)
    return out


def safe_name(url: str) -> str:
    """A stable, credential-free name for an endpoint: host[:port] and path (``rw:9090/api/v1/write``).

    Used as a writer's name (the ``writer`` label, log lines, the spool directory name). For a URL without
    userinfo it is the name kubescrape has always used, so an existing spool directory is found again.
    """
    clean = redact_url(url)
    try:
        parts = urlsplit(clean)
    except ValueError:
        return clean
    return (parts.netloc + parts.path).rstrip("/") or clean
