"""``kubescrape doctor``: check scrape targets step by step; for the first failure, say why and what to do.

Doctor predicts the agent by *being* the agent: it takes the :class:`~kubescrape.scrape.targets.Target`
objects the agent builds from the same configuration (``build_targets``), runs the agent's own fetch
(:meth:`kubescrape.client.ScrapeClient.fetch`, same TLS context, token reading, timeout and error table) and
the agent's own parse (the series cache), and adds only probes the agent has no need for: name resolution,
TCP connect, the peer certificate, a plain-HTTP/TLS sniff, token claims and the RBAC YAML for a 403. Each
is a small function in :data:`CHECKS`; rendering is in :mod:`kubescrape.doctor_render`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import re
import socket
import ssl
import sys
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509

from kubescrape.auth import (
    IN_CLUSTER_CA_FILE,
    IN_CLUSTER_TOKEN_FILE,
    SA_USER_PREFIX,
    service_account_of,
    token_claims,
)
from kubescrape.client import (
    FetchResult,
    ScrapeClient,
    credential_source,
    ignored_tls_options,
    lookup,
    translate_error,
)
from kubescrape.clock import SYSTEM_CLOCK, Clock
from kubescrape.config.models import AgentConfig, GlobalConfig, InstanceConfig
from kubescrape.doctor_render import render_json, render_text
from kubescrape.errors import (
    ConfigError,
    HTTPStatusError,
    KubescrapeError,
    ParseError,
    ScrapeError,
    TLSConfigError,
    TokenError,
)
from kubescrape.scrape.cache import SeriesCache
from kubescrape.scrape.loop import process_body, series_cache
from kubescrape.scrape.targets import Target, build_targets

__all__ = [
    "CHECKS",
    "SA_CA_FILE",
    "Diagnosis",
    "Finding",
    "Forbidden",
    "Stats",
    "Step",
    "diagnose",
    "diagnose_all",
    "diagnose_url",
    "parse_forbidden",
    "rbac_fix_yaml",
    "render_json",
    "render_text",
    "run_command",
    "target_from_url",
    "token_claims",
]

SA_CA_FILE = str(IN_CLUSTER_CA_FILE)
SA_TOKEN_FILE = str(IN_CLUSTER_TOKEN_FILE)
SA_PREFIX = SA_USER_PREFIX
# Go's net/http answers a plain-HTTP request on a TLS port with exactly this body (status 400).
GO_HTTP_ON_HTTPS = "Client sent an HTTP request to an HTTPS server."
TOKEN_EXPIRY_WARNING = 600.0


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


def rbac_fix_yaml(forbidden: Forbidden, path: str = "") -> str:
    """A ClusterRole granting ``verb`` on ``resource/subresource`` and a ClusterRoleBinding to the user.

    The subject is the ServiceAccount for ``system:serviceaccount:<ns>:<name>`` users, a User otherwise.
    With several subresources (fine-grained kubelet authorization) the first, most specific one is granted:
    the kubelet accepts any of them and the fallback (``proxy``) is much broader. A denied ``/pods``
    (``path``, node-local discovery) grants both ``nodes/pods`` and ``nodes/proxy``: kubelets before 1.32
    check only ``proxy``, later ones ``pods`` first, and one cluster may run both during an upgrade.
    """
    sub = forbidden.subresources[0] if forbidden.subresources else ""
    resource = f"{forbidden.resource}/{sub}" if sub else forbidden.resource
    resources = [resource]
    if (path.rstrip("/") == "/pods" and forbidden.resource == "nodes"
            and {"pods", "proxy"} & set(forbidden.subresources)):
        resources = ["nodes/pods", "nodes/proxy"]
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
        "rules": [{"apiGroups": [""], "resources": resources, "verbs": [forbidden.verb]}],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": _k8s_name(f"{who}-{role_name}")},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role_name},
        "subjects": [subject],
    }
    return yaml.safe_dump_all([role, binding], sort_keys=False, explicit_start=True)


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



# ---- the probe state shared by the checks ------------------------------------------------------------


@dataclass
class Probe:
    """What the checks of one target share: the target, the agent's client, and what earlier checks saw."""

    target: Target
    client: ScrapeClient
    timeout: float
    clock: Clock
    result: Diagnosis
    host: str = ""
    port: int = 0
    https: bool = False
    token: str | None = None
    token_claims: dict[str, Any] | None = None
    body: bytes = b""
    content_type: str = ""
    elapsed: float = 0.0
    cache: SeriesCache = field(init=False)

    def __post_init__(self) -> None:
        # The series cache the agent's loop builds for this target: it parses the answer.
        self.cache = series_cache(self.target)

    @property
    def url(self) -> str:
        return self.target.url

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    def passed(self, name: str, detail: str, warning: str | None = None) -> None:
        self.result.steps.append(Step(name, True, detail, warning))

    def fail(self, name: str, detail: str, cause: str, fix: str, yaml_text: str | None = None) -> _Stop:
        self.result.steps.append(Step(name, False, detail))
        self.result.finding = Finding(cause, fix, yaml_text)
        return _Stop()


def _parse_url(url: str) -> tuple[str, int, bool] | tuple[str, str, str]:
    """(host, port, https) for a usable URL, else (detail, cause, fix)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme in ("http", "https") and not parts.hostname:
        return (f"no host in {url!r}", f"{url!r} has no host",
                "an environment variable in the URL is probably unset and expanded to nothing: set HOSTIP "
                "(the generated DaemonSet sets it from status.hostIP) or write the node address")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return (f"cannot use {url!r}", f"{url!r} is not an http:// or https:// URL",
                "write the full URL, e.g. https://$HOSTIP:10250/metrics for the kubelet")
    https = parts.scheme == "https"
    try:
        port = parts.port or (443 if https else 80)
    except ValueError:
        return (f"bad port in {url!r}", "the port is not a number in 1-65535",
                "use the kubelet's port 10250 (HTTPS) or kube-proxy's 10249 (HTTP)")
    return parts.hostname, port, https


# ---- the checks, in the order a scrape meets them --------------------------------------------------------


async def check_url(p: Probe) -> None:
    parsed = _parse_url(p.url)
    if not isinstance(parsed[1], int):
        raise p.fail("url", *(str(x) for x in parsed))
    p.host, p.port, p.https = str(parsed[0]), int(parsed[1]), bool(parsed[2])
    path = urllib.parse.urlsplit(p.url).path or "/"
    # Flagged first: it is true whether or not the target answers.
    plain_credentials = p.client.warn_plain_credentials(p.target, log_it=False)  # shown as a step warning
    p.passed("url", f"{'https' if p.https else 'http'}://{p.where}{path}", plain_credentials)


async def check_resolve(p: Probe) -> None:
    try:
        infos = await asyncio.wait_for(
            asyncio.get_running_loop().getaddrinfo(p.host, p.port, type=socket.SOCK_STREAM), p.timeout
        )
    except (OSError, TimeoutError) as e:
        raise p.fail(
            "resolve", f"{p.host}: {e}", f"the name {p.host!r} does not resolve ({e})",
            "check the spelling; in a DaemonSet use the node IP ($HOSTIP from the downward API, "
            "status.hostIP) rather than a node name the pod's DNS may not know",
        ) from None
    addrs = list(dict.fromkeys(str(info[4][0]) for info in infos))
    p.passed("resolve", f"{p.host} → {', '.join(addrs)}")


async def check_connect(p: Probe) -> None:
    started = time.perf_counter()
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(p.host, p.port), p.timeout)
    except ConnectionRefusedError:
        raise p.fail(
            "connect", f"{p.where}: connection refused",
            f"nothing listens on {p.where} (connection refused)",
            "check the port: the kubelet serves HTTPS on 10250 (10248 is only healthz, 10255 the "
            "read-only port, often off), kube-proxy serves HTTP on 10249. Is the component running "
            "(systemctl status kubelet)? From a pod, 127.0.0.1 is the pod itself unless the DaemonSet "
            "has hostNetwork: true; or scrape the node IP ($HOSTIP). Is it bound to another address "
            "(the kubelet's `address:` setting)?",
        ) from None
    except TimeoutError:
        raise p.fail(
            "connect", f"{p.where}: no answer within {p.timeout:g}s",
            f"connecting to {p.where} timed out after {p.timeout:g}s",
            "a firewall or security group drops the packets, or the address is wrong; allow TCP "
            f"{p.port} from the nodes (hostNetwork pods connect from the node IP)",
        ) from None
    except OSError as e:
        raise p.fail("connect", f"{p.where}: {e.strerror or e}", f"cannot connect to {p.where}: {e}",
                     "check the address and the routes between this host and the target") from None
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    p.passed("connect", f"{p.where} in {(time.perf_counter() - started) * 1000:.1f} ms")


async def check_tls(p: Probe) -> None:
    """The handshake with the agent's own context (https only); on failure the peer certificate says why."""
    if not p.https:
        return
    tls = p.target.tls
    try:
        ctx = p.client.ssl_context(tls)
    except TLSConfigError as e:
        raise p.fail("tls config", e.cause, e.cause, e.fix or "") from None
    server_name = (tls.server_name if tls.use_tls else None) or p.host
    try:
        obj = await _open_tls(p, ctx, server_name)
    except TimeoutError:
        raise p.fail(
            "tls", f"no TLS handshake within {p.timeout:g}s",
            f"{p.where} accepted the connection but did not complete a TLS handshake",
            "check that this is the kubelet's HTTPS port (10250); a plain HTTP server may be waiting "
            "for a request: then use http://",
        ) from None
    except (ssl.SSLError, OSError, asyncio.IncompleteReadError) as e:
        raise await _tls_failure(p, e) from None
    der = obj.getpeercert(binary_form=True)
    cert = _Cert.load(der) if der else None
    detail = f"{obj.version()}"
    warning = None
    if cert is not None:
        detail += (f", server certificate {cert.subject} issued by {cert.issuer}, "
                   f"expires {cert.not_after:%Y-%m-%d}")
        left = cert.not_after.timestamp() - p.clock.time()
        if ctx.verify_mode == ssl.CERT_NONE and left < 0:
            warning = f"the server certificate expired {_ago(left)} ago (not verified)"
        elif left < 7 * 86400:
            warning = (f"the server certificate expires in {_ago(left)}; "
                       "check the kubelet's certificate rotation")
    if ctx.verify_mode == ssl.CERT_NONE:
        detail += "; NOT verified (insecure_skip_verify)"
        warning = warning or (
            "the server certificate is not verified (insecure_skip_verify): anyone on the path can "
            f"impersonate the kubelet; prefer tls_ca = \"{SA_CA_FILE}\""
        )
    else:
        detail += f"; verified against {(tls.use_tls and tls.ca_file) or 'the system CA store'}"
    ignored = ignored_tls_options(p.target.tls)
    if ignored:
        warning = (f"{', '.join(ignored)} {'is' if len(ignored) == 1 else 'are'} not applied without "
                   "use_tls = true (as in Categraf)" + (f"; {warning}" if warning else ""))
    p.passed("tls", detail, warning)


async def _open_tls(p: Probe, ctx: ssl.SSLContext, server_name: str) -> ssl.SSLObject:
    _, writer = await asyncio.wait_for(
        asyncio.open_connection(p.host, p.port, ssl=ctx, server_hostname=server_name,
                                ssl_handshake_timeout=p.timeout),
        p.timeout,
    )
    try:
        obj = writer.get_extra_info("ssl_object")
        assert isinstance(obj, ssl.SSLObject)
        return obj
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()


def _insecure_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def peer_certificate(p: Probe) -> _Cert | None:
    """Probe: the server's certificate, fetched without verifying it (to show what is wrong with it)."""
    try:
        der = (await _open_tls(p, _insecure_context(), p.host)).getpeercert(binary_form=True)
    except (OSError, TimeoutError, ssl.SSLError, asyncio.IncompleteReadError):
        return None
    return _Cert.load(der) if der else None


async def speaks_plain_http(p: Probe) -> bool:
    """Probe: does the port answer a plain HTTP request?"""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(p.host, p.port), p.timeout)
    except (OSError, TimeoutError):
        return False
    try:
        writer.write(f"GET / HTTP/1.0\r\nHost: {p.host}\r\n\r\n".encode())
        head = await asyncio.wait_for(reader.read(5), p.timeout)
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return head == b"HTTP/"


async def speaks_tls(p: Probe) -> bool:
    """Probe: does the port complete a TLS handshake?"""
    try:
        await _open_tls(p, _insecure_context(), p.host)
    except (OSError, TimeoutError, ssl.SSLError, asyncio.IncompleteReadError):
        return False
    return True


async def _tls_failure(p: Probe, e: BaseException) -> _Stop:
    """The agent's translation of a failed handshake, with what the peer certificate shows."""
    tls = p.target.tls
    error = translate_error(e, p.url, timeout=p.timeout, server_name=tls.server_name if tls.use_tls else None)
    reason = lookup(e).reason
    if reason == "tls_no_serving_cert":
        # Before the plain-HTTP probe: the kubelet's sniffing listener answers HTTP with a 400 either way.
        return p.fail(
            "tls", f"the handshake was refused with the alert internal_error ({_short_exc(e)})",
            f"{p.where} has no serving certificate yet: the kubelet runs with serverTLSBootstrap: true and "
            "its serving certificate request (a CSR with SIGNERNAME kubernetes.io/kubelet-serving, REQUESTOR "
            "system:node:<this node>) is Pending, not approved; until then every TLS handshake on 10250 "
            "fails with this alert",
            "with cluster-admin rights: `kubectl get csr` shows that CSR as Pending; approve it with "
            "`kubectl certificate approve <name>` (the name from the first column, e.g. csr-5rwzm). The "
            "kubelet serves at once; kube-controller-manager never approves kubelet-serving CSRs itself",
        )
    if not reason.startswith("cert_"):
        if reason == "tls_plain_http" or await speaks_plain_http(p):
            return p.fail(
                "tls", f"TLS handshake failed ({_short_exc(e)}); the port answers plain HTTP",
                f"{p.where} speaks plain HTTP, not TLS: the TLS handshake failed ({_short_exc(e)})",
                f"use http://{p.where}{urllib.parse.urlsplit(p.url).path} and remove use_tls (kube-proxy's "
                "10249 and the kubelet's healthz 10248 are plain HTTP; only the kubelet's 10250 is HTTPS)",
            )
        return p.fail("tls", f"TLS handshake failed: {_short_exc(e)}", error.cause, error.fix or "")
    cert = await peer_certificate(p)
    seen = (f"server certificate: subject {cert.subject}, issuer {cert.issuer}, SANs "
            f"{', '.join(cert.sans) or 'none'}, valid {cert.not_before:%Y-%m-%d %H:%M} → "
            f"{cert.not_after:%Y-%m-%d %H:%M} UTC") if cert else "server certificate could not be read"
    detail = f"{error.cause}; {seen}"
    ignored = ignored_tls_options(p.target.tls)
    prefix = (f"{', '.join(ignored)} {'is' if len(ignored) == 1 else 'are'} ignored without use_tls = true "
              "(as in Categraf, the certificate is then checked against the system CA store): add "
              "use_tls = true. ") if ignored else ""
    trusted = f"the CA in {tls.ca_file}" if tls.use_tls and tls.ca_file else "the system CA store"
    if reason == "cert_unknown_authority":
        what = "self-signed" if cert and cert.self_signed else f"issued by {cert.issuer if cert else '?'}"
        return p.fail(
            "tls", detail, f"the server certificate of {p.where} is {what}, which {trusted} does not trust",
            prefix + f"give the CA that signed it: tls_ca = \"{SA_CA_FILE}\" (the cluster CA, in a pod) "
            "works when the kubelet serving certificate is signed by the cluster CA (serverTLSBootstrap: "
            "true and the kubelet-serving CSRs approved); a default kubelet serves a self-signed "
            "certificate (/var/lib/kubelet/pki/kubelet.crt): pass that file's CA as tls_ca, or — "
            "knowingly giving up server authentication — set insecure_skip_verify = true "
            "(doctor: --ca FILE / --insecure-skip-verify)",
        )
    if reason == "cert_name_mismatch":
        dns = [s[4:] for s in (cert.sans if cert else []) if s.startswith("DNS:")]
        ips = [s[3:] for s in (cert.sans if cert else []) if s.startswith("IP:")]
        name = (tls.server_name if tls.use_tls else None) or p.host
        suggestion = (f"set tls_server_name = \"{dns[0]}\" (doctor: --server-name {dns[0]})" if dns
                      else "set tls_server_name to a name the certificate holds")
        if ips:
            suggestion += f", or scrape an address the certificate holds ({', '.join(ips)})"
        return p.fail(
            "tls", detail,
            f"the server certificate of {p.where} is not valid for {name!r}: its SANs are "
            f"{', '.join(cert.sans) if cert and cert.sans else 'empty'}",
            prefix + suggestion + "; or reissue the kubelet serving certificate with this address "
            "(serverTLSBootstrap puts the node IPs and hostname in it)",
        )
    if reason in ("cert_expired", "cert_not_yet_valid") and cert is not None:
        now = p.clock.time()
        if reason == "cert_expired":
            cause = (f"the server certificate of {p.where} expired on {cert.not_after:%Y-%m-%d %H:%M} UTC "
                     f"({_ago(now - cert.not_after.timestamp())} ago; now {_iso(now)})")
            fix = ("renew the kubelet serving certificate: enable rotateCertificates / serverTLSBootstrap "
                   "and approve the kubelet-serving CSRs, or restart the kubelet to regenerate its "
                   "self-signed one")
        else:
            cause = (f"the server certificate of {p.where} is not valid before "
                     f"{cert.not_before:%Y-%m-%d %H:%M} UTC (now {_iso(now)})")
            fix = "a clock is wrong: check NTP (chronyc tracking / timedatectl) here and on the node"
        return p.fail("tls", detail, cause, fix)
    return p.fail("tls", detail, error.cause, prefix + (error.fix or ""))


def _short_exc(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text[:200] or type(e).__name__


async def check_credentials(p: Probe) -> None:
    """The token exactly as the agent reads it, and what its claims say (expiry, ServiceAccount)."""
    t = p.target
    if not (t.bearer_token_file or t.bearer_token_string):
        how = credential_source(t) or "none: the request is anonymous"
        p.passed("credentials", how)
        return
    try:
        token = p.client.bearer(t)
    except TokenError as e:
        raise p.fail("token", e.cause, e.cause, e.fix or "") from None
    assert token is not None
    p.token = token
    source = t.bearer_token_file or "bearer_token_string"
    claims = p.token_claims = token_claims(token)
    if claims is None:
        p.passed("token", f"{source}: {len(token)} bytes, not a JWT (the server decides its validity)")
        return
    sa = service_account_of(claims)
    who = f"ServiceAccount {sa}" if sa else f"subject {claims.get('sub', '?')}"
    exp = claims.get("exp")
    now = p.clock.time()
    if isinstance(exp, int | float) and not isinstance(exp, bool):
        left = exp - now
        if left <= 0:
            # Not a failure by itself: the server decides (and doctor must agree with the agent).
            expired = f"the bearer token ({who}) expired at {_iso(exp)}, {_ago(left)} ago"
            p.passed("token", f"{source}: JWT of {who}, EXPIRED {_iso(exp)}", expired)
            return
        warning = (f"the bearer token expires in {_ago(left)}: make sure the file is refreshed"
                   if left < TOKEN_EXPIRY_WARNING else None)
        p.passed("token", f"{source}: JWT of {who}, expires {_iso(exp)} (in {_ago(left)})", warning)
    else:
        p.passed("token", f"{source}: JWT of {who}, no expiry")


async def check_fetch(p: Probe) -> None:
    """The agent's own fetch: same client, same headers, token, timeout and error translation."""
    started = p.clock.monotonic()
    try:
        fetched = await p.client.fetch(p.target)
    except HTTPStatusError as e:
        raise _status_failure(p, e) from None
    except ScrapeError as e:
        if e.reason == "http_to_https":
            raise _https_port(p) from None
        if not p.https and e.reason.startswith("connect_") and await speaks_tls(p):
            raise _https_port(p) from None
        raise p.fail("http", e.cause, e.cause, e.fix or "") from None
    except KubescrapeError as e:
        raise p.fail("http", e.cause, e.cause, e.fix or "") from None
    p.elapsed = p.clock.monotonic() - started
    p.body, p.content_type = fetched.body, fetched.content_type
    redirect = f", redirected to {fetched.url}" if fetched.url != p.url else ""
    p.passed("http", f"200 OK in {p.elapsed * 1000:.0f} ms, {len(p.body)} bytes, "
                     f"{p.content_type or 'no content type'}{redirect}")


def _https_port(p: Probe) -> _Stop:
    url = urllib.parse.urlsplit(p.url)._replace(scheme="https").geturl()
    return p.fail(
        "http", f"400 Bad Request: {GO_HTTP_ON_HTTPS}",
        f"{p.where} speaks HTTPS, but the request was plain HTTP (\"{GO_HTTP_ON_HTTPS}\")",
        f"use {url} with use_tls = true, tls_ca = \"{SA_CA_FILE}\" and bearer_token_file = "
        f"\"{SA_TOKEN_FILE}\"",
    )


def _status_failure(p: Probe, e: HTTPStatusError) -> _Stop:
    detail = f"{e.status}: {' '.join(e.body.split())[:300]}"
    if e.status == 401:
        fix = e.fix or ""
        if p.token is not None:
            exp = (p.token_claims or {}).get("exp")
            expired = isinstance(exp, int | float) and exp <= p.clock.time()
            fix = (("the token has EXPIRED: create a new one (`kubectl create token <sa> -n <ns>`) or mount "
                    "a projected ServiceAccount token, which the kubelet refreshes. " if expired else "")
                   + "Check that the token belongs to THIS cluster (a token from another cluster or a "
                   "deleted ServiceAccount/Secret is rejected), that the kubelet has webhook token "
                   "authentication on (authentication.webhook.enabled: true in its KubeletConfiguration) "
                   "and can reach the apiserver for TokenReview; " + fix)
        return p.fail("http", detail, e.cause, fix)
    if e.status == 403:
        forbidden = parse_forbidden(e.body)
        if forbidden is None:
            return p.fail("http", detail, e.cause, e.fix or "")
        sub = forbidden.subresources[0] if forbidden.subresources else ""
        target = f"{forbidden.resource}/{sub}" if sub else forbidden.resource
        if forbidden.user == "system:anonymous":
            return p.fail(
                "http", detail,
                f"{p.where} treated the request as anonymous (user system:anonymous) and denied "
                f"{forbidden.verb} {target}",
                f"send credentials: bearer_token_file = \"{SA_TOKEN_FILE}\" (and bind that ServiceAccount "
                "with `kubescrape manifests`); do not grant system:anonymous",
            )
        return p.fail(
            "http", detail,
            f"the kubelet authenticated {forbidden.user} but RBAC does not allow {forbidden.verb} "
            f"on {target}",
            "apply this ClusterRole and ClusterRoleBinding (kubectl apply -f -); the kubelet caches the "
            "denial for up to 30 s (authorization.webhook.cacheUnauthorizedTTL). `kubescrape manifests` "
            "grants everything the agent scrapes (nodes/metrics, nodes/stats, nodes/proxy, nodes/pods)",
            rbac_fix_yaml(forbidden, urllib.parse.urlsplit(p.url).path),
        )
    return p.fail("http", detail, e.cause, e.fix or "")


async def check_body(p: Probe) -> None:
    """The agent's own parse (the series cache, with the target's labeling); HTML and JSON named."""
    try:
        result = process_body(p.cache, FetchResult(p.body, p.content_type, p.url), int(p.clock.time() * 1000))
    except ParseError as e:
        raise _body_failure(p, e) from None
    series = result.samples_scraped
    p.result.stats = Stats(series=series, bytes=len(p.body), seconds=p.elapsed)
    p.passed("body", f"{series} series, {len(p.body)} bytes",
             None if series else "the endpoint answered 200 with no series")


def _body_failure(p: Probe, e: ParseError) -> _Stop:
    text = p.body.decode("utf-8", "replace")
    head = text.lstrip()[:200].lower()
    ctype = p.content_type.lower()
    if "html" in ctype or head.startswith(("<!doctype", "<html", "<head", "<body")):
        title = re.search(r"<title[^>]*>(.*?)</title>", text, re.I | re.S)
        return p.fail(
            "body", f"HTML page ({p.content_type or 'no content type'})"
            + (f", title {title.group(1).strip()!r}" if title else ""),
            f"{p.url} serves an HTML page, not Prometheus metrics",
            "the URL points at a web page (a login page, a proxy, a dashboard): scrape the /metrics "
            "endpoint itself",
        )
    if "json" in ctype or head.startswith(("{", "[")):
        return p.fail(
            "body", f"JSON ({p.content_type or 'no content type'})",
            f"{p.url} serves JSON, not Prometheus text",
            "/stats/summary and /pods are JSON APIs; for metrics scrape /metrics/resource or "
            "/metrics/cadvisor instead",
        )
    shown = e.line if len(e.line) <= 120 else e.line[:120] + "…"
    return p.fail(
        "body", f"line {e.line_no}: {e.message}: {shown!r}",
        f"{p.url} serves invalid Prometheus text: line {e.line_no}: {e.message}: {shown!r}",
        "fix the exporter (see the line above); check that no proxy rewrites the body",
    )


async def check_timing(p: Probe) -> None:
    """Warnings only: a scrape beyond its timeout already failed in the agent's fetch."""
    t = p.target
    warnings = []
    if p.elapsed > 0.5 * t.timeout:
        warnings.append(f"the scrape took {p.elapsed:.2f}s, over half its timeout ({t.timeout:g}s)")
    if t.interval and p.elapsed > 0.5 * t.interval:
        warnings.append(f"the scrape took {p.elapsed:.2f}s, over half its interval ({t.interval:g}s)")
    p.passed("timing", f"{p.elapsed * 1000:.0f} ms (timeout {t.timeout:g}s, interval {t.interval:g}s)",
             "; ".join(warnings) or None)


Check = Callable[[Probe], Awaitable[None]]
CHECKS: tuple[tuple[str, Check], ...] = (
    ("url", check_url),
    ("resolve", check_resolve),
    ("connect", check_connect),
    ("tls", check_tls),
    ("credentials", check_credentials),
    ("http", check_fetch),
    ("body", check_body),
    ("timing", check_timing),
)
"""The checks in order; each records a passed step or raises :class:`_Stop` with the finding."""


# ---- entry points --------------------------------------------------------------------------------------


async def diagnose(target: Target, *, timeout: float, clock: Clock = SYSTEM_CLOCK,
                   client: ScrapeClient | None = None) -> Diagnosis:
    """Check one target step by step with the agent's client; stop at the first failing step.

    ``timeout`` bounds each extra probe (resolve, connect, handshake); the fetch itself has the target's
    own scrape timeout, as in the agent.
    """
    result = Diagnosis(url=target.url)
    own = client is None
    c = client if client is not None else ScrapeClient(clock=clock)
    try:
        probe = Probe(target, c, timeout, clock, result)
        with contextlib.suppress(_Stop):
            for _, check in CHECKS:
                await check(probe)
    finally:
        if own:
            await c.close()
    return result


async def diagnose_all(targets: Sequence[Target], *, timeout: float,
                       clock: Clock = SYSTEM_CLOCK) -> list[Diagnosis]:
    """Diagnose several targets concurrently with one shared client, results in the order given."""
    client = ScrapeClient(clock=clock)
    try:
        return list(await asyncio.gather(
            *(diagnose(t, timeout=timeout, clock=clock, client=client) for t in targets)
        ))
    finally:
        await client.close()


def target_from_url(
    url: str,
    *,
    token_file: str | None = None,
    bearer_token: str | None = None,
    ca_file: str | None = None,
    cert_file: str | None = None,
    key_file: str | None = None,
    server_name: str | None = None,
    insecure_skip_verify: bool = False,
    scrape_timeout: float = 5.0,
    interval: float | None = None,
) -> Target:
    """The :class:`Target` the agent would build for ``url`` with these options (the URL mode of doctor):
    an ``[[instances]]`` entry put through ``build_targets``. For an https URL ``use_tls`` is on, so the
    TLS options apply. Raises ConfigError for a URL the configuration would refuse."""
    instance = InstanceConfig(
        urls=[url], bearer_token_file=token_file, bearer_token_string=bearer_token,
        use_tls=url.startswith("https://"), tls_ca=ca_file, tls_cert=cert_file, tls_key=key_file,
        tls_server_name=server_name, insecure_skip_verify=insecure_skip_verify, timeout=scrape_timeout,
    )
    interval = interval if interval is not None else max(15.0, scrape_timeout)
    (target,) = build_targets(AgentConfig(global_=GlobalConfig(interval=interval, omit_hostname=True),
                                          instances=[instance]))
    return target


async def diagnose_url(url: str, *, timeout: float, clock: Clock = SYSTEM_CLOCK, **options: Any) -> Diagnosis:
    """:func:`diagnose` for a bare URL with :func:`target_from_url` options; a URL the configuration
    refuses fails the ``url`` step. The scrape timeout is ``timeout`` unless ``scrape_timeout`` is given."""
    parsed = _parse_url(url)
    if not isinstance(parsed[1], int):
        detail, cause, fix = (str(x) for x in parsed)
        return Diagnosis(url=url, steps=[Step("url", False, detail)], finding=Finding(cause, fix))
    try:
        target = target_from_url(url, **{"scrape_timeout": timeout, **options})
    except (ConfigError, ValueError) as e:
        return Diagnosis(url=url, steps=[Step("url", False, str(e))],
                         finding=Finding(f"{url!r} cannot be scraped: {e}", "fix the URL"))
    return await diagnose(target, timeout=timeout, clock=clock)


def _targets_from_config(config_dir: Path) -> list[Target]:
    """Targets of a Categraf directory, or of a Prometheus configuration file (``doctor --config``)."""
    from kubescrape.config.categraf import load_categraf
    from kubescrape.config.prometheus import load_prometheus

    config = load_prometheus(config_dir) if config_dir.is_file() else load_categraf(config_dir)
    return build_targets(config)


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
        options: dict[str, Any] = {
            "token_file": str(token_file) if token_file else None, "ca_file": str(ca) if ca else None,
            "cert_file": str(cert) if cert else None, "key_file": str(key) if key else None,
            "server_name": server_name, "insecure_skip_verify": insecure_skip_verify,
        }
        results = [asyncio.run(diagnose_url(url, timeout=timeout, **options))]
    else:
        assert config_dir is not None
        if token_file or ca or cert or key or server_name or insecure_skip_verify:
            return usage("--token-file, --ca, --cert, --key, --server-name and --insecure-skip-verify "
                         "apply to a URL; with --config-dir the settings come from prometheus.toml")
        try:
            targets = _targets_from_config(config_dir)
        except KubescrapeError as e:
            return usage(str(e))
        if not targets:
            return usage(f"{config_dir} defines no scrape targets "
                         "(input.prometheus/prometheus.toml [[instances]])")
        results = asyncio.run(diagnose_all(targets, timeout=timeout))
    if json_output:
        sys.stdout.write(render_json(results) + "\n")
    else:
        from rich.console import Console

        render_text(results, Console(file=sys.stdout, soft_wrap=True, highlight=False))
    return 0 if all(r.ok for r in results) else 1
