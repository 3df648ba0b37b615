"""Credentials for scraping: bearer token files that rotate, and client TLS contexts (CA, x509, server name).

In a pod the kubelet mounts the ServiceAccount credentials at :data:`IN_CLUSTER_TOKEN_FILE` and
:data:`IN_CLUSTER_CA_FILE`. The token is a projected volume: the kubelet refreshes it (by default every
hour or at 80 % of its lifetime) by writing a new timestamped directory and swapping the ``..data``
symlink, so the token path must be ``stat``-ed by name on every use, never read once and cached.

Note that ``IN_CLUSTER_CA_FILE`` is the *API server's* CA: it verifies the kubelet's serving certificate
only when the kubelet's certificate is signed by the cluster CA (``serverTLSBootstrap: true``). Kubelets with
a self-signed serving certificate need ``insecure_skip_verify = true`` (as Categraf's example does) or their
own CA bundle in ``tls_ca``.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import logging
import os
import ssl
from pathlib import Path
from typing import Protocol

from kubescrape.clock import SYSTEM_CLOCK, Clock
from kubescrape.errors import TLSConfigError, TokenError
from kubescrape.selfmon import SelfMetrics

__all__ = [
    "IN_CLUSTER_CA_FILE",
    "IN_CLUSTER_TOKEN_FILE",
    "BearerToken",
    "TLSOptions",
    "client_ssl_context",
    "jwt_expiry",
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


def jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim (epoch seconds) of a JWT, read without verifying the signature; None if absent.

    Only for warnings: the server decides whether a token is valid.
    """
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (binascii.Error, ValueError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None


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
        try:
            raw = self.path.read_bytes()
        except OSError as e:
            raise self._unreadable(e) from e
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


_TLS_VERSIONS = {
    "1.0": ssl.TLSVersion.TLSv1,
    "1.1": ssl.TLSVersion.TLSv1_1,
    "1.2": ssl.TLSVersion.TLSv1_2,
    "1.3": ssl.TLSVersion.TLSv1_3,
}


class TLSOptions(Protocol):
    """The TLS settings of a target (``kubescrape.scrape.targets.TLSSettings`` has this shape; its optional
    ``min_version`` ("1.2") and ``key_password`` are used when present)."""

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


def client_ssl_context(tls: TLSOptions) -> ssl.SSLContext | None:
    """The client SSL context for a target, or None without ``use_tls`` (as in Categraf, the ``tls_*``
    options then do not apply, and https verifies against the system trust store like Go's default).

    Verification is on unless ``insecure_skip_verify``; ``tls_ca`` replaces the system store; ``tls_cert``
    + ``tls_key`` present a client certificate. ``tls_server_name`` is not part of the context: pass it
    as ``server_hostname`` to the request. Raises :class:`TLSConfigError` naming the file and the fix.
    """
    if not tls.use_tls:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    min_version = getattr(tls, "min_version", None) or "1.2"
    ctx.minimum_version = _TLS_VERSIONS.get(min_version, ssl.TLSVersion.TLSv1_2)
    if tls.ca_file:
        _load_ca(ctx, tls.ca_file)
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
    path = Path(ca_file)
    try:
        data = path.read_text("ascii")
    except FileNotFoundError as e:
        raise TLSConfigError(
            f"tls_ca file {ca_file} does not exist",
            "point tls_ca at the CA bundle that signed the server's certificate "
            f"(in a pod: {IN_CLUSTER_CA_FILE})",
        ) from e
    except (OSError, UnicodeDecodeError) as e:
        raise TLSConfigError(f"tls_ca file {ca_file} cannot be read: {e}",
                             "make it a readable PEM file") from e
    if "-----BEGIN CERTIFICATE-----" not in data:
        raise TLSConfigError(f"tls_ca file {ca_file} holds no PEM certificate",
                             "tls_ca must be a PEM bundle (-----BEGIN CERTIFICATE-----)")
    try:
        ctx.load_verify_locations(cadata=data)
    except ssl.SSLError as e:
        raise TLSConfigError(f"tls_ca file {ca_file} does not parse: {e.reason or e}",
                             "tls_ca must be a valid PEM certificate bundle") from e


def _load_client_cert(ctx: ssl.SSLContext, cert_file: str, key_file: str, password: str | None) -> None:
    for option, name in (("tls_cert", cert_file), ("tls_key", key_file)):
        if not Path(name).is_file():
            raise TLSConfigError(f"{option} file {name} does not exist",
                                 f"point {option} at the PEM file of the client {option[4:]}")
    try:
        ctx.load_cert_chain(cert_file, key_file, password=password or None)
    except ssl.SSLError as e:
        raise TLSConfigError(
            f"client certificate {cert_file} and key {key_file} do not load: {e.reason or e}",
            "check that both are PEM and that the key belongs to the certificate",
        ) from e
    except OSError as e:
        raise TLSConfigError(f"client certificate {cert_file} / key {key_file} cannot be read: {e}",
                             "make both files readable by the agent's user") from e
