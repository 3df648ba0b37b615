"""Credentials: ServiceAccount paths, bearer token files that rotate, JWT claims, and the checked reading of
every credential file (token, CA, client certificate and key).

In a pod the kubelet mounts the ServiceAccount credentials at :data:`IN_CLUSTER_TOKEN_FILE` and
:data:`IN_CLUSTER_CA_FILE`. The token is a projected volume: the kubelet refreshes it (by default every
hour or at 80 % of its lifetime) by writing a new timestamped directory and swapping the ``..data``
symlink, so the token path must be ``stat``-ed by name on every use, never read once and cached.

Note that ``IN_CLUSTER_CA_FILE`` is the *API server's* CA: it verifies the kubelet's serving certificate
only when the kubelet's certificate is signed by the cluster CA (``serverTLSBootstrap: true``). Kubelets with
a self-signed serving certificate need ``insecure_skip_verify = true`` (as Categraf's example does) or their
own CA bundle in ``tls_ca``.

Credential files are read with :func:`read_credential_file`: opened non-blocking and checked to be a regular
file of bounded size first, so a FIFO or a device named by mistake gives a clear error instead of freezing
the event loop (a blocking ``read`` of a FIFO with no writer never returns).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import logging
import os
import stat
from pathlib import Path
from typing import Any

from kubescrape.clock import SYSTEM_CLOCK, Clock
from kubescrape.errors import AuthError, TokenError
from kubescrape.selfmon import SelfMetrics

__all__ = [
    "IN_CLUSTER_CA_FILE",
    "IN_CLUSTER_TOKEN_FILE",
    "MAX_CREDENTIAL_FILE",
    "SERVICEACCOUNT_DIR",
    "BearerToken",
    "jwt_expiry",
    "read_credential_file",
    "service_account_of",
    "token_claims",
]

log = logging.getLogger(__name__)

SERVICEACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
IN_CLUSTER_TOKEN_FILE = SERVICEACCOUNT_DIR / "token"
"""Where the kubelet mounts the pod's ServiceAccount token (``serviceAccountName`` in the pod spec)."""
IN_CLUSTER_CA_FILE = SERVICEACCOUNT_DIR / "ca.crt"
"""The cluster CA mounted next to the token."""

_TOKEN_FIX = (
    "mount a ServiceAccount token there (set serviceAccountName in the DaemonSet; the token appears at "
    f"{IN_CLUSTER_TOKEN_FILE}) or point bearer_token_file at a file holding the token"
)


MAX_CREDENTIAL_FILE = 1 << 20
"""Largest credential file read: 1 MiB (a ServiceAccount token is ~1 KiB, a CA bundle ~200 KiB)."""

_FILE_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a directory"),
)


def read_credential_file(
    path: str | os.PathLike[str], *, what: str, error: type[AuthError], fix: str,
    limit: int = MAX_CREDENTIAL_FILE,
) -> bytes:
    """Read a small credential file without ever blocking: open non-blocking, require a regular file of at
    most ``limit`` bytes, then read it. Raises ``error`` (TokenError, TLSConfigError) naming ``what``
    (e.g. "the tls_ca file").

    ``FileNotFoundError``/``PermissionError`` are raised as ``error`` too, with ``fix`` for a missing file.
    """
    name = os.fspath(path)
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise error(f"{what} {name} does not exist", fix) from None
    except OSError as e:
        raise error(f"{what} {name} cannot be read: {e.strerror or e}",
                    "make the file readable by the agent's user (check runAsUser and the volume's "
                    "defaultMode)") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = next((k for test, k in _FILE_KINDS if test(st.st_mode)), "not a regular file")
            raise error(f"{what} {name} is {kind}, not a regular file",
                        f"give a regular file (reading {kind} could block the agent)")
        if st.st_size > limit:
            raise error(f"{what} {name} is {st.st_size} bytes, more than the {limit} a credential "
                        "file may hold", "check the path: credential files are small")
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:  # grew while being read
            raise error(f"{what} {name} is larger than {limit} bytes",
                        "check the path: credential files are small")
        return b"".join(chunks)
    except OSError as e:
        raise error(f"{what} {name} cannot be read: {e.strerror or e}",
                    "make it a readable regular file") from None
    finally:
        os.close(fd)


def token_claims(token: str) -> dict[str, Any] | None:
    """The claims of a JWT, decoded WITHOUT verifying it (the server decides validity); None if not a JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError):
        return None
    return claims if isinstance(claims, dict) else None


def jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim (epoch seconds) of a JWT, read without verifying the signature; None if absent.

    Only for warnings: the server decides whether a token is valid.
    """
    claims = token_claims(token)
    exp = claims.get("exp") if claims is not None else None
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None


SA_USER_PREFIX = "system:serviceaccount:"


def service_account_of(claims: dict[str, Any]) -> str | None:
    """``namespace/name`` of the ServiceAccount a token's claims name (bound or legacy token), or None."""
    k8s = claims.get("kubernetes.io")
    if isinstance(k8s, dict) and isinstance(k8s.get("serviceaccount"), dict):
        return f"{k8s.get('namespace')}/{k8s['serviceaccount'].get('name')}"
    legacy_ns = claims.get("kubernetes.io/serviceaccount/namespace")
    legacy_name = claims.get("kubernetes.io/serviceaccount/service-account.name")
    if legacy_ns and legacy_name:
        return f"{legacy_ns}/{legacy_name}"
    sub = claims.get("sub")
    if isinstance(sub, str) and sub.startswith(SA_USER_PREFIX) and sub.count(":") == 3:
        _, _, ns, name = sub.split(":")
        return f"{ns}/{name}"
    return None


class BearerToken:
    """A bearer token read from a file and re-read whenever the file changes.

    :meth:`get` costs one ``stat`` when nothing changed. The file's identity is (device, inode, size,
    mtime) of the path *as resolved now*, so a symlink swap in a projected volume, an atomic rename and an
    in-place rewrite are all seen. :meth:`force_reload` re-reads unconditionally (after a 401).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        metrics: SelfMetrics | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.path = Path(path)
        self._metrics = metrics
        self._clock = clock
        self._token: str | None = None
        self._signature: tuple[int, int, int, int] | None = None
        self._warned_expired: str | None = None
        self.reloads = 0
        """Times the file was re-read after the first read (changed, or forced)."""

    @property
    def expires_at(self) -> float | None:
        """The current token's ``exp`` claim, if it is a JWT that has one."""
        return jwt_expiry(self._token) if self._token else None

    def get(self) -> str:
        """The current token, re-read first if the file changed. Raises :class:`TokenError`."""
        signature = self._stat()
        if self._token is None or signature != self._signature:
            self._load(signature, counted=self._token is not None)
        assert self._token is not None
        return self._token

    def force_reload(self) -> str:
        """Re-read the file even if it looks unchanged (the server rejected the token). Raises TokenError."""
        self._load(self._stat(), counted=True)
        assert self._token is not None
        return self._token

    def _stat(self) -> tuple[int, int, int, int]:
        try:
            st = os.stat(self.path)  # follows symlinks: the ..data swap changes the inode we see
        except OSError as e:
            raise self._unreadable(e) from e
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    def _unreadable(self, e: OSError) -> TokenError:
        if isinstance(e, FileNotFoundError):
            return TokenError(f"bearer token file {self.path} does not exist", _TOKEN_FIX)
        return TokenError(
            f"bearer token file {self.path} cannot be read: {e.strerror or e}",
            "make the file readable by the agent's user (check runAsUser and the volume's defaultMode)",
        )

    def _load(self, signature: tuple[int, int, int, int], *, counted: bool) -> None:
        raw = read_credential_file(self.path, what="bearer token file", error=TokenError, fix=_TOKEN_FIX)
        try:
            token = raw.decode("utf-8").strip()
        except UnicodeDecodeError as e:
            raise TokenError(
                f"bearer token file {self.path} is not text", "the file must hold the token itself (a JWT)"
            ) from e
        if not token:
            if self._token is not None:
                # A writer that truncates then writes: keep the previous token and look again next time
                # (the signature is not recorded, so the next get() re-reads).
                log.debug("bearer token file %s is empty for now; keeping the previous token", self.path)
                self._signature = None
                return
            raise TokenError(
                f"bearer token file {self.path} is empty",
                "write the ServiceAccount token into it (kubectl create token <serviceaccount>) or mount "
                "the projected ServiceAccount token volume",
            )
        if any(c.isspace() for c in token):
            raise TokenError(
                f"bearer token file {self.path} holds more than one word",
                "the file must hold only the token, not 'Bearer <token>' or a kubeconfig",
            )
        if counted:
            self.reloads += 1
            if self._metrics is not None:
                self._metrics.token_reloads.labels(file=str(self.path)).inc()
            if token != self._token:
                log.info("bearer token file %s changed; using the new token", self.path)
        self._token = token
        self._signature = signature
        self._warn_if_expired(token)

    def _warn_if_expired(self, token: str) -> None:
        exp = jwt_expiry(token)
        if exp is None or exp > self._clock.time() or self._warned_expired == token:
            return
        self._warned_expired = token
        log.warning(
            "the bearer token in %s expired at %s (epoch %d); the server will answer 401. Fix: mount a "
            "projected ServiceAccount token (the kubelet refreshes it) or write a fresh token into the file",
            self.path, _iso(exp), int(exp),
        )


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="seconds")

