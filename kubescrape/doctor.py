"""``kubescrape doctor``: check scrape targets step by step; for the first failure, say why and what to do.

The steps follow the path a scrape takes: resolve the name, connect, TLS (or, for ``http://``, notice that
the port speaks TLS), credentials, the HTTP request (401 / 403 with the exact RBAC that fixes it), the body
(Prometheus text or not) and the timing. :func:`diagnose` is pure data in, data out; :func:`render_text`
and :func:`render_json` turn the result into what a person or a script reads.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import datetime as dt
import json
import re
import socket
import ssl
import sys
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from cryptography import x509

from kubescrape.clock import SYSTEM_CLOCK, Clock
from kubescrape.errors import KubescrapeError, ParseError

__all__ = [
    "SA_CA_FILE",
    "Diagnosis",
    "Finding",
    "Forbidden",
    "Stats",
    "Step",
    "TargetSpec",
    "diagnose",
    "diagnose_all",
    "parse_forbidden",
    "rbac_fix_yaml",
    "render_json",
    "render_text",
    "run_command",
    "token_claims",
]

SA_CA_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
SA_PREFIX = "system:serviceaccount:"
# Go's net/http answers a plain-HTTP request on a TLS port with exactly this body (status 400).
GO_HTTP_ON_HTTPS = "Client sent an HTTP request to an HTTPS server."
TOKEN_EXPIRY_WARNING = 600.0
ACCEPT = "text/plain;version=0.0.4;q=1,*/*;q=0.1"

# OpenSSL verify codes (X509_V_ERR_*) that mean "no trusted CA signed this chain".
_UNKNOWN_AUTHORITY = {2, 18, 19, 20, 21, 27}
_NOT_YET_VALID, _EXPIRED = 9, 10
_NAME_MISMATCH = {62, 64}


@dataclass(frozen=True)
class TargetSpec:
    """What to check: a URL and the credentials/TLS settings a scrape of it uses."""

    url: str
    token_file: str | None = None
    token: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None
    insecure_skip_verify: bool = False
    timeout: float = 5.0
    interval: float | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Step:
    """One check: its name, whether it passed, what was seen, and a warning that does not fail it."""

    name: str
    ok: bool
    detail: str
    warning: str | None = None


@dataclass
class Finding:
    """Why the first failing step failed and what to do; ``yaml`` is a manifest that fixes it, if any."""

    cause: str
    fix: str
    yaml: str | None = None


@dataclass
class Stats:
    """A successful scrape: series count, payload size in bytes and scrape time in seconds."""

    series: int
    bytes: int
    seconds: float


@dataclass
class Diagnosis:
    """The result for one target."""

    url: str
    steps: list[Step] = field(default_factory=list)
    finding: Finding | None = None
    stats: Stats | None = None

    @property
    def ok(self) -> bool:
        return self.finding is None and all(s.ok for s in self.steps)

    @property
    def warnings(self) -> list[str]:
        return [s.warning for s in self.steps if s.warning]

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` shape: url, ok, steps [{name, ok, detail, warning?}], diagnosis, stats, warnings."""
        steps = []
        for s in self.steps:
            item: dict[str, Any] = {"name": s.name, "ok": s.ok, "detail": s.detail}
            if s.warning:
                item["warning"] = s.warning
            steps.append(item)
        finding = None
        if self.finding is not None:
            finding = {"cause": self.finding.cause, "fix": self.finding.fix}
            if self.finding.yaml is not None:
                finding["yaml"] = self.finding.yaml
        return {
            "url": self.url,
            "ok": self.ok,
            "steps": steps,
            "diagnosis": finding,
            "stats": asdict(self.stats) if self.stats else None,
            "warnings": self.warnings,
        }


@dataclass(frozen=True)
class Forbidden:
    """The attributes a kubelet names in its 403 body."""

    user: str
    verb: str
    resource: str
    subresources: tuple[str, ...]


_FORBIDDEN_OLD = re.compile(
    r"Forbidden \(user=(?P<user>[^,]*), verb=(?P<verb>[^,]*), resource=(?P<resource>[^,]*), "
    r"subresource=(?P<sub>[^,)]*)"
)
# Kubelets with fine-grained authorization (KEP-2862) try several subresources and list them all.
_FORBIDDEN_NEW = re.compile(
    r"Forbidden \(user=(?P<user>[^,]*), verb=(?P<verb>[^,]*), resource=(?P<resource>[^,]*), "
    r"subresource\(s\)=\[(?P<subs>[^\]]*)\]"
)


def parse_forbidden(body: str) -> Forbidden | None:
    """Parse a kubelet 403 body, old (``subresource=metrics``) or new (``subresource(s)=[pods proxy]``)."""
    m = _FORBIDDEN_NEW.search(body)
    if m:
        subs = tuple(s for s in re.split(r"[\s,]+", m["subs"]) if s)
        return Forbidden(m["user"], m["verb"], m["resource"], subs)
    m = _FORBIDDEN_OLD.search(body)
    if m:
        return Forbidden(m["user"], m["verb"], m["resource"], (m["sub"],) if m["sub"] else ())
    return None


def _k8s_name(text: str) -> str:
    return re.sub(r"[^a-z0-9.-]+", "-", text.lower()).strip("-.") or "kubelet-reader"


def rbac_fix_yaml(forbidden: Forbidden) -> str:
    """A ClusterRole granting ``verb`` on ``resource/subresource`` and a ClusterRoleBinding to the user.

    The subject is the ServiceAccount for ``system:serviceaccount:<ns>:<name>`` users, a User otherwise.
    With several subresources (fine-grained kubelet authorization) the first, most specific one is granted:
    the kubelet accepts any of them and the fallback (``proxy``) is much broader.
    """
    sub = forbidden.subresources[0] if forbidden.subresources else ""
    resource = f"{forbidden.resource}/{sub}" if sub else forbidden.resource
    role_name = _k8s_name(f"kubelet-{forbidden.resource}-{sub}-{forbidden.verb}")
    subject: dict[str, Any]
    if forbidden.user.startswith(SA_PREFIX) and forbidden.user.count(":") == 3:
        _, _, namespace, name = forbidden.user.split(":")
        subject = {"kind": "ServiceAccount", "name": name, "namespace": namespace}
        who = name
    else:
        subject = {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": forbidden.user}
        who = forbidden.user
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": role_name},
        "rules": [{"apiGroups": [""], "resources": [resource], "verbs": [forbidden.verb]}],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": _k8s_name(f"{who}-{role_name}")},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role_name},
        "subjects": [subject],
    }
    return yaml.safe_dump_all([role, binding], sort_keys=False, explicit_start=True)


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


def _service_account(claims: dict[str, Any]) -> str | None:
    k8s = claims.get("kubernetes.io")
    if isinstance(k8s, dict) and isinstance(k8s.get("serviceaccount"), dict):
        return f"{k8s.get('namespace')}/{k8s['serviceaccount'].get('name')}"
    legacy_ns = claims.get("kubernetes.io/serviceaccount/namespace")
    legacy_name = claims.get("kubernetes.io/serviceaccount/service-account.name")
    if legacy_ns and legacy_name:
        return f"{legacy_ns}/{legacy_name}"
    sub = claims.get("sub")
    if isinstance(sub, str) and sub.startswith(SA_PREFIX) and sub.count(":") == 3:
        _, _, ns, name = sub.split(":")
        return f"{ns}/{name}"
    return None


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _ago(seconds: float) -> str:
    seconds = abs(seconds)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


class _Stop(Exception):
    """A step failed; the diagnosis is complete."""


@dataclass
class _Cert:
    subject: str
    issuer: str
    sans: list[str]
    not_before: dt.datetime
    not_after: dt.datetime

    @classmethod
    def load(cls, der: bytes) -> _Cert:
        cert = x509.load_der_x509_certificate(der)
        sans: list[str] = []
        with contextlib.suppress(x509.ExtensionNotFound):
            ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            sans = [f"DNS:{n}" for n in ext.get_values_for_type(x509.DNSName)]
            sans += [f"IP:{ip}" for ip in ext.get_values_for_type(x509.IPAddress)]
        return cls(
            cert.subject.rfc4514_string(), cert.issuer.rfc4514_string(), sans,
            cert.not_valid_before_utc, cert.not_valid_after_utc,
        )

    @property
    def self_signed(self) -> bool:
        return self.subject == self.issuer


class _Doctor:
    def __init__(self, spec: TargetSpec, timeout: float, clock: Clock, result: Diagnosis) -> None:
        self.spec = spec
        self.timeout = timeout
        self.clock = clock
        self.result = result
        self.host = ""
        self.port = 0
        self.https = False
        self.ssl_ctx: ssl.SSLContext | None = None
        self.token: str | None = None

    # -- bookkeeping -----------------------------------------------------------------------------------

    def passed(self, name: str, detail: str, warning: str | None = None) -> None:
        self.result.steps.append(Step(name, True, detail, warning))

    def fail(self, name: str, detail: str, cause: str, fix: str, yaml_text: str | None = None) -> _Stop:
        self.result.steps.append(Step(name, False, detail))
        self.result.finding = Finding(cause, fix, yaml_text)
        return _Stop()

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    # -- steps -----------------------------------------------------------------------------------------

    async def run(self) -> None:
        self.check_url()
        addr = await self.resolve()
        await self.connect(addr)
        if self.https:
            self.load_tls_settings()
            await self.handshake()
        self.load_token()
        body, content_type, elapsed = await self.request()
        self.check_body(body, content_type, elapsed)

    def check_url(self) -> None:
        parts = urllib.parse.urlsplit(self.spec.url)
        if parts.scheme in ("http", "https") and not parts.hostname:
            raise self.fail(
                "url", f"no host in {self.spec.url!r}", f"{self.spec.url!r} has no host",
                "an environment variable in the URL is probably unset and expanded to nothing: set HOSTIP "
                "(the generated DaemonSet sets it from status.hostIP) or write the node address",
            )
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise self.fail(
                "url", f"cannot use {self.spec.url!r}",
                f"{self.spec.url!r} is not an http:// or https:// URL",
                "write the full URL, e.g. https://$HOSTIP:10250/metrics for the kubelet",
            )
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        try:
            self.port = parts.port or (443 if self.https else 80)
        except ValueError:
            raise self.fail("url", f"bad port in {self.spec.url!r}", "the port is not a number in 1-65535",
                            "use the kubelet's port 10250 (HTTPS) or kube-proxy's 10249 (HTTP)") from None
        self.passed("url", f"{parts.scheme}://{self.where}{parts.path or '/'}")

    async def resolve(self) -> str:
        try:
            infos = await asyncio.wait_for(
                asyncio.get_running_loop().getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM),
                self.timeout,
            )
        except (OSError, TimeoutError) as e:
            raise self.fail(
                "resolve", f"{self.host}: {e}", f"the name {self.host!r} does not resolve ({e})",
                "check the spelling; in a DaemonSet use the node IP ($HOSTIP from the downward API, "
                "status.hostIP) rather than a node name the pod's DNS may not know",
            ) from None
        addrs = list(dict.fromkeys(str(info[4][0]) for info in infos))
        self.passed("resolve", f"{self.host} → {', '.join(addrs)}")
        return addrs[0]

    async def connect(self, addr: str) -> None:
        started = time.perf_counter()
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(addr, self.port), self.timeout)
        except ConnectionRefusedError:
            raise self.fail(
                "connect", f"{addr}:{self.port}: connection refused",
                f"nothing listens on {addr}:{self.port} (connection refused)",
                "check the port: the kubelet serves HTTPS on 10250 (10248 is only healthz, 10255 the "
                "read-only port, often off), kube-proxy serves HTTP on 10249. Is the component running "
                "(systemctl status kubelet)? From a pod, 127.0.0.1 is the pod itself unless the DaemonSet "
                "has hostNetwork: true; or scrape the node IP ($HOSTIP). Is it bound to another address "
                "(the kubelet's `address:` setting)?",
            ) from None
        except TimeoutError:
            raise self.fail(
                "connect", f"{addr}:{self.port}: no answer within {self.timeout:g}s",
                f"connecting to {addr}:{self.port} timed out after {self.timeout:g}s",
                "a firewall or security group drops the packets, or the address is wrong; allow TCP "
                f"{self.port} from the nodes (hostNetwork pods connect from the node IP)",
            ) from None
        except OSError as e:
            raise self.fail(
                "connect", f"{addr}:{self.port}: {e.strerror or e}",
                f"cannot connect to {addr}:{self.port}: {e}",
                "check the address and the routes between this host and the target",
            ) from None
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        self.passed("connect", f"{addr}:{self.port} in {(time.perf_counter() - started) * 1000:.1f} ms")

    def load_tls_settings(self) -> None:
        spec = self.spec
        ctx = ssl.create_default_context()
        for key, path in (("tls_ca", spec.ca_file), ("tls_cert", spec.cert_file), ("tls_key", spec.key_file)):
            if path and not Path(path).is_file():
                raise self.fail(
                    "tls config", f"{key} {path}: no such file", f"the {key} file {path} does not exist",
                    f"in a pod, the cluster CA is at {SA_CA_FILE} (mounted with the ServiceAccount "
                    "token); outside, point tls_ca / tls_cert / tls_key at existing PEM files",
                )
        try:
            if spec.ca_file:
                ctx.load_verify_locations(cafile=spec.ca_file)
            if spec.cert_file or spec.key_file:
                if not (spec.cert_file and spec.key_file):
                    raise ssl.SSLError("tls_cert and tls_key must be given together")
                ctx.load_cert_chain(spec.cert_file, spec.key_file)
        except (ssl.SSLError, OSError) as e:
            raise self.fail(
                "tls config", str(e), f"the TLS files do not load: {e}",
                "tls_ca must hold PEM CA certificates; tls_cert/tls_key a PEM certificate and its key",
            ) from None
        if spec.insecure_skip_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        self.ssl_ctx = ctx

    async def _open_tls(self, ctx: ssl.SSLContext) -> ssl.SSLObject:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(
                self.host, self.port, ssl=ctx, server_hostname=self.spec.server_name or self.host,
                ssl_handshake_timeout=self.timeout,
            ),
            self.timeout,
        )
        try:
            obj = writer.get_extra_info("ssl_object")
            assert isinstance(obj, ssl.SSLObject)
            return obj
        finally:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()

    async def peer_certificate(self) -> _Cert | None:
        """The server's certificate, fetched without verifying it (to print what is wrong with it)."""
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        try:
            der = (await self._open_tls(ctx)).getpeercert(binary_form=True)
        except (OSError, TimeoutError, ssl.SSLError):
            return None
        return _Cert.load(der) if der else None

    async def speaks_plain_http(self) -> bool:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), self.timeout
            )
        except (OSError, TimeoutError):
            return False
        try:
            writer.write(f"GET / HTTP/1.0\r\nHost: {self.host}\r\n\r\n".encode())
            head = await asyncio.wait_for(reader.read(5), self.timeout)
        except (OSError, TimeoutError):
            return False
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        return head == b"HTTP/"

    async def handshake(self) -> None:
        assert self.ssl_ctx is not None
        spec = self.spec
        try:
            obj = await self._open_tls(self.ssl_ctx)
        except ssl.SSLCertVerificationError as e:
            raise await self.certificate_failure(e) from None
        except TimeoutError:
            raise self.fail(
                "tls", f"no TLS handshake within {self.timeout:g}s",
                f"{self.where} accepted the connection but did not complete a TLS handshake",
                "check that this is the kubelet's HTTPS port (10250); a plain HTTP server may be waiting "
                "for a request: then use http://",
            ) from None
        except (ssl.SSLError, OSError, asyncio.IncompleteReadError) as e:
            if await self.speaks_plain_http():
                raise self.fail(
                    "tls", f"TLS handshake failed ({e}); the port answers plain HTTP",
                    f"{self.where} speaks plain HTTP, not TLS: the TLS handshake failed ({e})",
                    f"use http://{self.where}/… and remove use_tls (kube-proxy's 10249 and the kubelet's "
                    "healthz 10248 are plain HTTP; only the kubelet's 10250 is HTTPS)",
                ) from None
            raise self.fail(
                "tls", f"TLS handshake failed: {e}", f"the TLS handshake with {self.where} failed: {e}",
                "if the server requires a client certificate, set tls_cert and tls_key (signed by the "
                "kubelet's clientCAFile); otherwise check the TLS versions (tls_min_version)",
            ) from None
        der = obj.getpeercert(binary_form=True)
        cert = _Cert.load(der) if der else None
        detail = f"{obj.version()}"
        warning = None
        if cert is not None:
            detail += (f", server certificate {cert.subject} issued by {cert.issuer}, "
                       f"expires {cert.not_after:%Y-%m-%d}")
            left = cert.not_after.timestamp() - self.clock.time()
            if spec.insecure_skip_verify and left < 0:
                warning = f"the server certificate expired {_ago(left)} ago (not verified)"
            elif left < 7 * 86400:
                warning = (f"the server certificate expires in {_ago(left)}; "
                           "check the kubelet's certificate rotation")
        if spec.insecure_skip_verify:
            detail += "; NOT verified (insecure_skip_verify)"
            warning = warning or (
                "the server certificate is not verified (insecure_skip_verify): anyone on the path can "
                f"impersonate the kubelet; prefer tls_ca = \"{SA_CA_FILE}\""
            )
        else:
            detail += f"; verified against {spec.ca_file or 'the system CA store'}"
        self.passed("tls", detail, warning)

    async def certificate_failure(self, e: ssl.SSLCertVerificationError) -> _Stop:
        code = e.verify_code
        cert = await self.peer_certificate()
        seen = (f"server certificate: subject {cert.subject}, issuer {cert.issuer}, SANs "
                f"{', '.join(cert.sans) or 'none'}, valid {cert.not_before:%Y-%m-%d %H:%M} → "
                f"{cert.not_after:%Y-%m-%d %H:%M} UTC") if cert else "server certificate could not be read"
        trusted = f"the CA in {self.spec.ca_file}" if self.spec.ca_file else "the system CA store"
        if code in _UNKNOWN_AUTHORITY:
            what = "self-signed" if cert and cert.self_signed else f"issued by {cert.issuer if cert else '?'}"
            return self.fail(
                "tls", f"certificate signed by unknown authority ({e.verify_message}); {seen}",
                f"the server certificate of {self.where} is {what}, which {trusted} does not trust",
                f"give the CA that signed it: tls_ca = \"{SA_CA_FILE}\" (the cluster CA, in a pod) "
                "works when the kubelet serving certificate is signed by the cluster CA (serverTLSBootstrap: "
                "true and the kubelet-serving CSRs approved); a default kubelet serves a self-signed "
                "certificate (/var/lib/kubelet/pki/kubelet.crt): pass that file's CA as tls_ca, or — "
                "knowingly giving up server authentication — set insecure_skip_verify = true "
                "(doctor: --ca FILE / --insecure-skip-verify)",
            )
        if code in _NAME_MISMATCH:
            dns = [s[4:] for s in (cert.sans if cert else []) if s.startswith("DNS:")]
            ips = [s[3:] for s in (cert.sans if cert else []) if s.startswith("IP:")]
            name = self.spec.server_name or self.host
            suggestion = (f"set tls_server_name = \"{dns[0]}\" (doctor: --server-name {dns[0]})" if dns
                          else "set tls_server_name to a name the certificate holds")
            if ips:
                suggestion += f", or scrape an address the certificate holds ({', '.join(ips)})"
            return self.fail(
                "tls", f"name mismatch ({e.verify_message}); {seen}",
                f"the server certificate of {self.where} is not valid for {name!r}: its SANs are "
                f"{', '.join(cert.sans) if cert and cert.sans else 'empty'}",
                suggestion + "; or reissue the kubelet serving certificate with this address "
                "(serverTLSBootstrap puts the node IPs and hostname in it)",
            )
        if code in (_EXPIRED, _NOT_YET_VALID) and cert is not None:
            now = self.clock.time()
            if code == _EXPIRED:
                cause = (f"the server certificate of {self.where} expired on "
                         f"{cert.not_after:%Y-%m-%d %H:%M} UTC "
                         f"({_ago(now - cert.not_after.timestamp())} ago; now {_iso(now)})")
                fix = ("renew the kubelet serving certificate: enable rotateCertificates / "
                       "serverTLSBootstrap and approve the kubelet-serving CSRs, or restart the kubelet "
                       "to regenerate its self-signed one")
            else:
                cause = (f"the server certificate of {self.where} is not valid before "
                         f"{cert.not_before:%Y-%m-%d %H:%M} UTC (now {_iso(now)})")
                fix = "a clock is wrong: check NTP (chronyc tracking / timedatectl) here and on the node"
            return self.fail("tls", f"{e.verify_message}; {seen}", cause, fix)
        return self.fail(
            "tls", f"certificate verification failed: {e.verify_message}; {seen}",
            f"the server certificate of {self.where} was rejected: {e.verify_message}",
            "check the certificate chain served by the kubelet and the CA in tls_ca",
        )

    def load_token(self) -> None:
        spec = self.spec
        if spec.token_file:
            path = Path(spec.token_file)
            fix = ("in a pod, set serviceAccountName in the DaemonSet (and leave "
                   "automountServiceAccountToken on): the token appears at "
                   "/var/run/secrets/kubernetes.io/serviceaccount/token; outside a pod, "
                   "write one with `kubectl create token <serviceaccount> -n <namespace> > FILE`")
            try:
                token = path.read_text().strip()
            except FileNotFoundError:
                raise self.fail("token", f"{path}: no such file",
                                f"the bearer token file {path} does not exist", fix) from None
            except (PermissionError, IsADirectoryError, UnicodeDecodeError) as e:
                raise self.fail("token", f"{path}: {e}", f"the bearer token file {path} cannot be read: {e}",
                                "make it readable by the agent's user (projected tokens are 0644; check "
                                "fsGroup / runAsUser) and make sure it holds the token text") from None
            if not token:
                raise self.fail("token", f"{path}: empty", f"the bearer token file {path} is empty", fix)
            source = str(path)
        elif spec.token:
            token, source = spec.token.strip(), "bearer_token_string"
        else:
            how = "client certificate" if spec.cert_file else "none: the request is anonymous"
            self.passed("credentials", how)
            return
        claims = token_claims(token)
        if claims is None:
            self.passed("token", f"{source}: {len(token)} bytes, not a JWT (the server decides its validity)")
            self.token = token
            return
        sa = _service_account(claims)
        who = f"ServiceAccount {sa}" if sa else f"subject {claims.get('sub', '?')}"
        exp = claims.get("exp")
        now = self.clock.time()
        if isinstance(exp, int | float) and not isinstance(exp, bool):
            if exp <= now:
                raise self.fail(
                    "token", f"{source}: JWT of {who}, expired {_iso(exp)}",
                    f"the bearer token ({who}) expired at {_iso(exp)}, {_ago(now - exp)} ago",
                    "the kubelet refreshes projected ServiceAccount tokens in the pod (re-read the file "
                    "every scrape, as kubescrape does); a token copied out of a pod or from `kubectl create "
                    "token` expires: create a new one (`kubectl create token <sa> -n <ns> --duration 24h`)",
                ) from None
            left = exp - now
            detail = f"{source}: JWT of {who}, expires {_iso(exp)} (in {_ago(left)})"
            warning = (f"the bearer token expires in {_ago(left)}: make sure the file is refreshed"
                       if left < TOKEN_EXPIRY_WARNING else None)
            self.passed("token", detail, warning)
        else:
            self.passed("token", f"{source}: JWT of {who}, no expiry")
        self.token = token

    async def request(self) -> tuple[bytes, str, float]:
        spec = self.spec
        headers = {"Accept": ACCEPT, "User-Agent": "kubescrape-doctor", **spec.headers}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        limit = max(self.timeout, spec.timeout)
        ssl_setting: ssl.SSLContext | bool = self.ssl_ctx if self.https and self.ssl_ctx else False
        connector = aiohttp.TCPConnector(ssl=ssl_setting, force_close=True)
        started = time.perf_counter()
        try:
            async with (
                aiohttp.ClientSession(
                    connector=connector, timeout=aiohttp.ClientTimeout(total=limit)
                ) as session,
                session.get(
                    spec.url, headers=headers, allow_redirects=False,
                    server_hostname=spec.server_name if self.https else None,
                ) as resp,
            ):
                body = await resp.read()
                status, reason = resp.status, resp.reason or ""
                content_type = resp.headers.get("Content-Type", "")
        except TimeoutError:
            raise self.fail(
                "http", f"no complete answer within {limit:g}s",
                f"{spec.url} did not answer within {limit:g}s",
                "the endpoint is overloaded or stuck; raise timeout or check the kubelet's load",
            ) from None
        except aiohttp.ClientError as e:
            if not self.https and await self.speaks_tls():
                raise self.https_port() from None
            raise self.fail("http", f"request failed: {e}", f"the request to {spec.url} failed: {e}",
                            "check that the URL points at an HTTP endpoint") from None
        elapsed = time.perf_counter() - started
        text = body.decode("utf-8", "replace")
        if status == 200:
            self.passed("http", f"200 OK in {elapsed * 1000:.0f} ms, {len(body)} bytes, "
                        f"{content_type or 'no content type'}")
            return body, content_type, elapsed
        if status == 400 and GO_HTTP_ON_HTTPS in text:
            raise self.https_port()
        detail = f"{status} {reason}: {' '.join(text.split())[:300]}"
        if status == 401:
            if self.token is None and not spec.cert_file:
                raise self.fail(
                    "http", detail, f"{self.where} answered 401 Unauthorized: no credentials were sent",
                    "send the ServiceAccount token: bearer_token_file = "
                    "\"/var/run/secrets/kubernetes.io/serviceaccount/token\" (doctor: --token-file)",
                )
            raise self.fail(
                "http", detail,
                f"{self.where} answered 401 Unauthorized: the kubelet did not accept the "
                f"{'bearer token' if self.token else 'client certificate'}",
                "check that the token belongs to THIS cluster (a token from another cluster or a deleted "
                "ServiceAccount/Secret is rejected), that the kubelet has webhook token authentication on "
                "(authentication.webhook.enabled: true in its KubeletConfiguration) and can reach the "
                "apiserver for TokenReview, and that the token has not expired; a client certificate must be "
                "signed by the kubelet's authentication.x509.clientCAFile",
            )
        if status == 403:
            forbidden = parse_forbidden(text)
            if forbidden is None:
                raise self.fail("http", detail, f"{self.where} answered 403 Forbidden: {text.strip()[:200]}",
                                "grant the scraper get on nodes/metrics, nodes/stats and nodes/proxy")
            sub = forbidden.subresources[0] if forbidden.subresources else ""
            target = f"{forbidden.resource}/{sub}" if sub else forbidden.resource
            if forbidden.user == "system:anonymous":
                raise self.fail(
                    "http", detail,
                    f"{self.where} treated the request as anonymous (user system:anonymous) and denied "
                    f"{forbidden.verb} {target}",
                    "send credentials: bearer_token_file = "
                    "\"/var/run/secrets/kubernetes.io/serviceaccount/token\" (and bind that ServiceAccount "
                    "with `kubescrape manifests`); do not grant system:anonymous",
                )
            raise self.fail(
                "http", detail,
                f"the kubelet authenticated {forbidden.user} but RBAC does not allow "
                f"{forbidden.verb} on {target}",
                "apply this ClusterRole and ClusterRoleBinding (kubectl apply -f -); the kubelet caches the "
                "denial for up to 30 s (authorization.webhook.cacheUnauthorizedTTL). `kubescrape manifests` "
                "grants everything the agent scrapes (nodes/metrics, nodes/stats, nodes/proxy)",
                rbac_fix_yaml(forbidden),
            )
        if status == 404:
            raise self.fail("http", detail, f"{spec.url} does not exist (404)",
                            "kubelet paths: /metrics, /metrics/cadvisor, /metrics/resource, /metrics/probes; "
                            "kube-proxy: /metrics")
        if status in (301, 302, 303, 307, 308):
            raise self.fail("http", detail, f"{spec.url} redirects to {text.strip()[:100] or 'another URL'}",
                            "scrape the final URL directly; scrapes do not follow redirects to login pages")
        raise self.fail("http", detail, f"{spec.url} answered {status} {reason}",
                        "a 5xx is a server-side problem: check the kubelet's log (journalctl -u kubelet)")

    async def speaks_tls(self) -> bool:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        try:
            await self._open_tls(ctx)
        except (OSError, TimeoutError, ssl.SSLError, asyncio.IncompleteReadError):
            return False
        return True

    def https_port(self) -> _Stop:
        url = urllib.parse.urlsplit(self.spec.url)._replace(scheme="https").geturl()
        return self.fail(
            "http", f"400 Bad Request: {GO_HTTP_ON_HTTPS}",
            f"{self.where} speaks HTTPS, but the request was plain HTTP (\"{GO_HTTP_ON_HTTPS}\")",
            f"use {url} with use_tls = true, tls_ca = \"{SA_CA_FILE}\" and bearer_token_file = "
            "\"/var/run/secrets/kubernetes.io/serviceaccount/token\"",
        )

    def check_body(self, body: bytes, content_type: str, elapsed: float) -> None:
        spec = self.spec
        text = body.decode("utf-8", "replace")
        head = text.lstrip()[:200].lower()
        ctype = content_type.lower()
        if "html" in ctype or head.startswith(("<!doctype", "<html", "<head", "<body")):
            title = re.search(r"<title[^>]*>(.*?)</title>", text, re.I | re.S)
            raise self.fail(
                "body", f"HTML page ({content_type or 'no content type'})"
                + (f", title {title.group(1).strip()!r}" if title else ""),
                f"{spec.url} serves an HTML page, not Prometheus metrics",
                "the URL points at a web page (a login page, a proxy, a dashboard): scrape the /metrics "
                "endpoint itself",
            )
        if "json" in ctype or head.startswith(("{", "[")):
            raise self.fail(
                "body", f"JSON ({content_type or 'no content type'})",
                f"{spec.url} serves JSON, not Prometheus text",
                "/stats/summary and /pods are JSON APIs; for metrics scrape /metrics/resource or "
                "/metrics/cadvisor instead",
            )
        try:
            from kubescrape.scrape.parser import parse

            samples = parse(text)
        except ParseError as e:
            shown = e.line if len(e.line) <= 120 else e.line[:120] + "…"
            raise self.fail(
                "body", f"line {e.line_no}: {e.message}: {shown!r}",
                f"{spec.url} serves invalid Prometheus text: line {e.line_no}: {e.message}: {shown!r}",
                "fix the exporter (see the line above); check that no proxy rewrites the body",
            ) from None
        series = len(samples)
        self.result.stats = Stats(series=series, bytes=len(body), seconds=elapsed)
        self.passed("body", f"{series} series, {len(body)} bytes",
                    None if series else "the endpoint answered 200 with no series")
        warnings = []
        if elapsed > spec.timeout:
            raise self.fail(
                "timing", f"{elapsed:.2f}s > timeout {spec.timeout:g}s",
                f"the scrape took {elapsed:.2f}s, longer than its timeout ({spec.timeout:g}s): "
                "every scrape fails",
                "raise timeout for this instance, or drop series at the source",
            )
        if elapsed > 0.5 * spec.timeout:
            warnings.append(f"the scrape took {elapsed:.2f}s, over half its timeout ({spec.timeout:g}s)")
        if spec.interval and elapsed > 0.5 * spec.interval:
            warnings.append(f"the scrape took {elapsed:.2f}s, over half its interval ({spec.interval:g}s)")
        limits = f"timeout {spec.timeout:g}s" + (f", interval {spec.interval:g}s" if spec.interval else "")
        self.passed("timing", f"{elapsed * 1000:.0f} ms ({limits})", "; ".join(warnings) or None)


async def diagnose(target_spec: TargetSpec, *, timeout: float, clock: Clock = SYSTEM_CLOCK) -> Diagnosis:
    """Check one target step by step; stop at the first failing step and record its cause and fix.

    ``timeout`` bounds each network step (resolve, connect, handshake); the request itself may take up
    to the target's own scrape timeout.
    """
    result = Diagnosis(url=target_spec.url)
    with contextlib.suppress(_Stop):
        await _Doctor(target_spec, timeout, clock, result).run()
    return result


async def diagnose_all(specs: Sequence[TargetSpec], *, timeout: float) -> list[Diagnosis]:
    """Diagnose several targets concurrently, results in the order of ``specs``."""
    return list(await asyncio.gather(*(diagnose(s, timeout=timeout) for s in specs)))


def render_json(results: Sequence[Diagnosis]) -> str:
    """The ``--json`` output: a list with one object per target (see :meth:`Diagnosis.to_dict`)."""
    return json.dumps([r.to_dict() for r in results], indent=2)


def render_text(results: Sequence[Diagnosis], console: Any) -> None:
    """Print the results readably on a rich ``Console``: ✓/✗ per step, then cause, fix and YAML."""
    from rich.markup import escape
    from rich.syntax import Syntax

    for r in results:
        mark = "[green]OK[/]" if r.ok else "[red]FAILED[/]"
        console.print(f"[bold]{escape(r.url)}[/]  {mark}")
        for s in r.steps:
            sign = "[green]✓[/]" if s.ok else "[red]✗[/]"
            console.print(f"  {sign} {s.name:<12} {escape(s.detail)}")
            if s.warning:
                console.print(f"    [yellow]! {escape(s.warning)}[/]")
        if r.finding is not None:
            console.print(f"  [bold red]Cause:[/] {escape(r.finding.cause)}")
            console.print(f"  [bold green]Fix:[/] {escape(r.finding.fix)}")
            if r.finding.yaml:
                console.print(Syntax(r.finding.yaml.rstrip("\n"), "yaml", background_color="default"))
        if r.stats is not None:
            stats = r.stats
            console.print(f"  {stats.series} series, {stats.bytes} bytes, {stats.seconds * 1000:.0f} ms")
        console.print()
    failed = sum(not r.ok for r in results)
    summary = f"{len(results) - failed} of {len(results)} target(s) OK"
    console.print(f"[bold]{summary}[/]" if not failed else f"[bold red]{summary}[/]")


def spec_from_target(target: Any) -> TargetSpec:
    """A :class:`TargetSpec` from a scrape target built by ``kubescrape.scrape.targets.build_targets``."""
    tls = target.tls

    def opt(value: Any) -> str | None:
        return str(value) if value else None

    def seconds(value: Any) -> float | None:
        if value is None:
            return None
        return float(value.total_seconds()) if isinstance(value, dt.timedelta) else float(value)

    return TargetSpec(
        url=str(target.url),
        token_file=opt(getattr(target, "bearer_token_file", None)),
        token=opt(getattr(target, "bearer_token_string", None)),
        ca_file=opt(tls.ca_file),
        cert_file=opt(tls.cert_file),
        key_file=opt(tls.key_file),
        server_name=opt(tls.server_name),
        insecure_skip_verify=bool(tls.insecure_skip_verify),
        timeout=seconds(getattr(target, "timeout", None)) or 3.0,
        interval=seconds(getattr(target, "interval", None)),
        headers=dict(getattr(target, "headers", None) or {}),
    )


def _specs_from_config(config_dir: Path) -> list[TargetSpec]:
    """Targets of a Categraf directory, or of a Prometheus configuration file (``doctor --config``)."""
    from kubescrape.config.categraf import load_categraf
    from kubescrape.config.prometheus import load_prometheus
    from kubescrape.scrape.targets import build_targets

    config = load_prometheus(config_dir) if config_dir.is_file() else load_categraf(config_dir)
    return [spec_from_target(t) for t in build_targets(config)]


def run_command(
    *,
    url: str | None,
    config_dir: Path | None,
    token_file: Path | None,
    ca: Path | None,
    cert: Path | None,
    key: Path | None,
    server_name: str | None,
    insecure_skip_verify: bool,
    timeout: float,
    json_output: bool,
) -> int:
    """``kubescrape doctor``: 0 when every target works, 1 when any fails, 2 on bad arguments or config."""
    def usage(message: str) -> int:
        sys.stderr.write(f"kubescrape doctor: {message}\n")
        return 2

    if (url is None) == (config_dir is None):
        return usage("give either a URL or --config-dir DIR (not both)")
    if timeout <= 0:
        return usage("--timeout must be positive")
    if url is not None:
        specs = [TargetSpec(
            url=url, token_file=str(token_file) if token_file else None,
            ca_file=str(ca) if ca else None, cert_file=str(cert) if cert else None,
            key_file=str(key) if key else None, server_name=server_name,
            insecure_skip_verify=insecure_skip_verify, timeout=timeout,
        )]
    else:
        assert config_dir is not None
        if token_file or ca or cert or key or server_name or insecure_skip_verify:
            return usage("--token-file, --ca, --cert, --key, --server-name and --insecure-skip-verify "
                         "apply to a URL; with --config-dir the settings come from prometheus.toml")
        try:
            specs = _specs_from_config(config_dir)
        except KubescrapeError as e:
            return usage(str(e))
        if not specs:
            return usage(f"{config_dir} defines no scrape targets "
                         "(input.prometheus/prometheus.toml [[instances]])")
    results = asyncio.run(diagnose_all(specs, timeout=timeout))
    if json_output:
        sys.stdout.write(render_json(results) + "\n")
    else:
        from rich.console import Console

        render_text(results, Console(file=sys.stdout, soft_wrap=True, highlight=False))
    return 0 if all(r.ok for r in results) else 1
