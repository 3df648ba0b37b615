"""doctor: each failure of the seed documents, produced by a small loopback server, diagnosed with its fix."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import yaml
from aiohttp import web
from typer.testing import CliRunner

from kubescrape.cli import app
from kubescrape.doctor import (
    SA_CA_FILE,
    Diagnosis,
    Forbidden,
    diagnose_url,
    parse_forbidden,
    rbac_fix_yaml,
    render_json,
    token_claims,
)
from kubescrape.emulator.pki import CertificateAuthority, CertPair, server_ssl_context

METRICS = (
    "# HELP up_total A counter.\n# TYPE up_total counter\nup_total 1\n"
    'http_requests_total{code="200"} 10\nhttp_requests_total{code="500"} 2\n'
)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def serve(handler: Handler, tls: ssl.SSLContext | None = None) -> AsyncIterator[int]:
    """An aiohttp server on 127.0.0.1 (ephemeral port) answering every GET with ``handler``."""
    application = web.Application()
    application.router.add_get("/{tail:.*}", handler)
    runner = web.AppRunner(application)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
    await site.start()
    server = site._server
    assert isinstance(server, asyncio.base_events.Server)
    port = int(server.sockets[0].getsockname()[1])
    try:
        yield port
    finally:
        await runner.cleanup()


def text(body: str, status: int = 200, content_type: str = "text/plain") -> Handler:
    async def handle(_: web.Request) -> web.Response:
        return web.Response(status=status, body=body.encode(), content_type=content_type)

    return handle


def jwt(claims: dict[str, object]) -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    return ".".join([b64(b'{"alg":"ES256"}'), b64(json.dumps(claims).encode()), b64(b"signature")])


def sa_claims(exp: float, ns: str = "flashcat", name: str = "categraf-daemonset") -> dict[str, object]:
    return {
        "sub": f"system:serviceaccount:{ns}:{name}", "exp": int(exp),
        "kubernetes.io": {"namespace": ns, "serviceaccount": {"name": name, "uid": "u"}},
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def failed_step(d: Diagnosis) -> str:
    assert not d.ok and d.finding is not None
    (bad,) = [s for s in d.steps if not s.ok]
    assert d.steps[-1] is bad
    return bad.name


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.create("test-cluster-ca")


@pytest.fixture
def ca_file(ca: CertificateAuthority, tmp_path: Path) -> Path:
    path = tmp_path / "ca.crt"
    path.write_bytes(ca.cert_pem)
    return path


def tls_context(pair: CertPair) -> ssl.SSLContext:
    return server_ssl_context(pair)


# --- pure parts -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "expected"), [
    ("Forbidden (user=system:kube-controller-manager, verb=get, resource=nodes, subresource=metrics)",
     Forbidden("system:kube-controller-manager", "get", "nodes", ("metrics",))),
    ("Forbidden (user=system:serviceaccount:flashcat:x, verb=get, resource=nodes, "
     "subresource(s)=[pods proxy])\n",
     Forbidden("system:serviceaccount:flashcat:x", "get", "nodes", ("pods", "proxy"))),
    ("Forbidden (user=alice, verb=create, resource=nodes, subresource(s)=[proxy])\n",
     Forbidden("alice", "create", "nodes", ("proxy",))),
    ("Unauthorized", None),
])
def test_parse_forbidden_both_kubelet_formats(body: str, expected: Forbidden | None) -> None:
    assert parse_forbidden(body) == expected


def test_rbac_yaml_for_a_service_account_is_shaped_like_the_seed() -> None:
    docs = list(yaml.safe_load_all(rbac_fix_yaml(
        Forbidden("system:serviceaccount:flashcat:categraf-daemonset", "get", "nodes", ("metrics",))
    )))
    role, binding = docs
    assert role["kind"] == "ClusterRole"
    assert role["rules"] == [{"apiGroups": [""], "resources": ["nodes/metrics"], "verbs": ["get"]}]
    assert binding["kind"] == "ClusterRoleBinding"
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role["metadata"]["name"]
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "categraf-daemonset", "namespace": "flashcat"}
    ]


def test_rbac_yaml_for_a_user_and_fine_grained_subresources_grants_the_specific_one() -> None:
    role, binding = yaml.safe_load_all(rbac_fix_yaml(
        Forbidden("system:kube-controller-manager", "get", "nodes", ("pods", "proxy"))
    ))
    assert role["rules"][0]["resources"] == ["nodes/pods"]
    assert binding["subjects"] == [
        {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "system:kube-controller-manager"}
    ]
    assert ":" not in binding["metadata"]["name"]


def test_token_claims_decodes_without_verifying() -> None:
    claims = token_claims(jwt({"sub": "system:serviceaccount:a:b", "exp": 5}))
    assert claims == {"sub": "system:serviceaccount:a:b", "exp": 5}
    assert token_claims("not-a-jwt") is None
    assert token_claims("a.!!!.c") is None


# --- connect / protocol -----------------------------------------------------------------------------------


async def test_nothing_listening_is_connection_refused_with_hostnetwork_hint() -> None:
    port = free_port()
    d = await diagnose_url(f"https://127.0.0.1:{port}/metrics", timeout=2)
    assert failed_step(d) == "connect"
    assert d.finding is not None
    assert "connection refused" in d.finding.cause
    assert "hostNetwork: true" in d.finding.fix and "10250" in d.finding.fix


async def test_unresolvable_name() -> None:
    d = await diagnose_url("https://no-such-node.invalid:10250/metrics", timeout=2)
    assert failed_step(d) == "resolve"


async def test_bad_url_scheme_and_an_unset_host_variable() -> None:
    d = await diagnose_url("ftp://127.0.0.1/metrics", timeout=1)
    assert failed_step(d) == "url"
    d = await diagnose_url("https://:10250/metrics", timeout=1)
    assert failed_step(d) == "url"
    assert d.finding is not None and "HOSTIP" in d.finding.fix


async def test_http_to_a_go_https_port_suggests_https() -> None:
    # What Go's net/http answers to plain HTTP on a TLS port.
    async with serve(text("Client sent an HTTP request to an HTTPS server.\n", status=400)) as port:
        d = await diagnose_url(f"http://127.0.0.1:{port}/metrics", timeout=2)
    assert failed_step(d) == "http"
    assert d.finding is not None
    assert "speaks HTTPS" in d.finding.cause
    assert f"https://127.0.0.1:{port}/metrics" in d.finding.fix and "use_tls = true" in d.finding.fix


async def test_http_to_a_tls_port_without_the_go_answer_is_detected_by_a_handshake(
    ca: CertificateAuthority,
) -> None:
    pair = ca.issue_server("node", ips=["127.0.0.1"])
    async with serve(text(METRICS), tls_context(pair)) as port:
        d = await diagnose_url(f"http://127.0.0.1:{port}/metrics", timeout=2)
    assert failed_step(d) == "http"
    assert d.finding is not None and "speaks HTTPS" in d.finding.cause


async def test_tls_to_a_plain_http_port_suggests_http() -> None:
    async with serve(text(METRICS)) as port:
        d = await diagnose_url(f"https://127.0.0.1:{port}/metrics", timeout=2)
    assert failed_step(d) == "tls"
    assert d.finding is not None
    assert "plain HTTP" in d.finding.cause
    assert f"http://127.0.0.1:{port}" in d.finding.fix and "use_tls" in d.finding.fix


# --- certificates -----------------------------------------------------------------------------------------


async def test_unknown_authority_prints_issuer_and_how_to_pass_the_ca(ca: CertificateAuthority) -> None:
    other = CertificateAuthority.create("node-a-ca@1700000000")
    pair = other.issue_server("node-a", ips=["127.0.0.1"])
    async with serve(text(METRICS), tls_context(pair)) as port:
        d = await diagnose_url(f"https://127.0.0.1:{port}/metrics", timeout=2)
    assert failed_step(d) == "tls"
    assert d.finding is not None
    assert "node-a-ca@1700000000" in d.finding.cause
    assert "CN=node-a" in d.steps[-1].detail
    assert f'tls_ca = "{SA_CA_FILE}"' in d.finding.fix
    assert "insecure_skip_verify = true" in d.finding.fix


async def test_unknown_authority_with_a_configured_ca_names_that_file(
    ca: CertificateAuthority, ca_file: Path
) -> None:
    pair = CertificateAuthority.create("other").issue_server("node-a", ips=["127.0.0.1"])
    async with serve(text(METRICS), tls_context(pair)) as port:
        d = await diagnose_url(
            f"https://127.0.0.1:{port}/metrics", ca_file=str(ca_file), timeout=2
        )
    assert d.finding is not None and str(ca_file) in d.finding.cause


async def test_insecure_skip_verify_passes_with_a_warning() -> None:
    pair = CertificateAuthority.create("other").issue_server("node-a", ips=["127.0.0.1"])
    async with serve(text(METRICS), tls_context(pair)) as port:
        d = await diagnose_url(
            f"https://127.0.0.1:{port}/metrics", insecure_skip_verify=True, timeout=2
        )
    assert d.ok, d.finding
    (tls,) = [s for s in d.steps if s.name == "tls"]
    assert tls.warning is not None and "not verified" in tls.warning


async def test_name_mismatch_prints_sans_and_tls_server_name(ca: CertificateAuthority, ca_file: Path) -> None:
    pair = ca.issue_server("node-a", dns_names=["node-a.cluster.local"], ips=["10.9.8.7"])
    async with serve(text(METRICS), tls_context(pair)) as port:
        url = f"https://127.0.0.1:{port}/metrics"
        d = await diagnose_url(url, ca_file=str(ca_file), timeout=2)
        assert failed_step(d) == "tls"
        assert d.finding is not None
        assert "DNS:node-a.cluster.local" in d.finding.cause and "IP:10.9.8.7" in d.finding.cause
        assert 'tls_server_name = "node-a.cluster.local"' in d.finding.fix
        # Following the advice works.
        fixed = await diagnose_url(
            url, ca_file=str(ca_file), server_name="node-a.cluster.local", timeout=2
        )
    assert fixed.ok, fixed.finding


async def test_expired_certificate_prints_dates(ca: CertificateAuthority, ca_file: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    pair = ca.issue_server("node-a", ips=["127.0.0.1"], not_before=now - dt.timedelta(days=30),
                           not_after=now - dt.timedelta(days=2))
    async with serve(text(METRICS), tls_context(pair)) as port:
        d = await diagnose_url(
            f"https://127.0.0.1:{port}/metrics", ca_file=str(ca_file), timeout=2
        )
    assert failed_step(d) == "tls"
    assert d.finding is not None
    assert "expired on " + (now - dt.timedelta(days=2)).strftime("%Y-%m-%d") in d.finding.cause
    assert "renew" in d.finding.fix


async def test_not_yet_valid_certificate_points_at_the_clock(ca: CertificateAuthority, ca_file: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    pair = ca.issue_server("node-a", ips=["127.0.0.1"], not_before=now + dt.timedelta(days=1),
                           not_after=now + dt.timedelta(days=30))
    async with serve(text(METRICS), tls_context(pair)) as port:
        d = await diagnose_url(
            f"https://127.0.0.1:{port}/metrics", ca_file=str(ca_file), timeout=2
        )
    assert d.finding is not None and "not valid before" in d.finding.cause and "NTP" in d.finding.fix


async def test_missing_ca_file(tmp_path: Path) -> None:
    async with serve(text(METRICS)) as port:
        d = await diagnose_url(
            f"https://127.0.0.1:{port}/metrics", ca_file=str(tmp_path / "nope.crt"), timeout=2
        )
    assert failed_step(d) == "tls config"
    assert d.finding is not None and "nope.crt" in d.finding.cause


# --- tokens and HTTP status -------------------------------------------------------------------------------


async def test_token_file_missing_empty_expired_and_expiring(tmp_path: Path) -> None:
    async with serve(text(METRICS)) as port:
        url = f"http://127.0.0.1:{port}/metrics"
        missing = await diagnose_url(url, token_file=str(tmp_path / "token"), timeout=2)
        assert failed_step(missing) == "token"
        assert missing.finding is not None
        assert "does not exist" in missing.finding.cause and "serviceAccountName" in missing.finding.fix

        empty = tmp_path / "empty"
        empty.write_text("\n")
        d = await diagnose_url(url, token_file=str(empty), timeout=2)
        assert d.finding is not None and "is empty" in d.finding.cause

        # An expired token is the server's to refuse: doctor warns, and agrees with the agent's verdict.
        expired = tmp_path / "expired"
        expired.write_text(jwt(sa_claims(time.time() - 3600)))
        d = await diagnose_url(url, token_file=str(expired), timeout=2)
        assert d.ok
        (token_step,) = [s for s in d.steps if s.name == "token"]
        assert token_step.warning is not None and "expired" in token_step.warning
        assert "flashcat/categraf-daemonset" in token_step.warning

        soon = tmp_path / "soon"
        soon.write_text(jwt(sa_claims(time.time() + 120)))
        d = await diagnose_url(url, token_file=str(soon), timeout=2)
        assert d.ok
        (token,) = [s for s in d.steps if s.name == "token"]
        assert "ServiceAccount flashcat/categraf-daemonset" in token.detail
        assert token.warning is not None and "expires in" in token.warning


def bearer_required(token: str) -> Handler:
    async def handle(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {token}":
            return web.Response(status=401, text="Unauthorized")
        return web.Response(text=METRICS)

    return handle


async def test_401_without_credentials_and_with_a_rejected_token(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(jwt(sa_claims(time.time() + 86400)))
    async with serve(bearer_required("the-right-one")) as port:
        url = f"http://127.0.0.1:{port}/metrics"
        anonymous = await diagnose_url(url, timeout=2)
        rejected = await diagnose_url(url, token_file=str(token_file), timeout=2)
    assert failed_step(anonymous) == "http" and anonymous.finding is not None
    assert "none was sent" in anonymous.finding.cause
    assert "bearer_token_file" in anonymous.finding.fix
    assert failed_step(rejected) == "http" and rejected.finding is not None
    assert f"the bearer token in bearer_token_file ({token_file}) was rejected" in rejected.finding.cause
    assert "authentication.webhook.enabled" in rejected.finding.fix and "THIS cluster" in rejected.finding.fix


@pytest.mark.parametrize("body", [
    "Forbidden (user=system:serviceaccount:flashcat:categraf-daemonset, verb=get, resource=nodes, "
    "subresource=metrics)",
    "Forbidden (user=system:serviceaccount:flashcat:categraf-daemonset, verb=get, resource=nodes, "
    "subresource(s)=[metrics])\n",
])
async def test_403_prints_the_rbac_that_grants_it(body: str) -> None:
    async with serve(text(body, status=403)) as port:
        d = await diagnose_url(f"http://127.0.0.1:{port}/metrics", bearer_token="opaque", timeout=2)
    assert failed_step(d) == "http" and d.finding is not None and d.finding.yaml is not None
    assert "system:serviceaccount:flashcat:categraf-daemonset" in d.finding.cause
    assert "nodes/metrics" in d.finding.cause
    role, binding = yaml.safe_load_all(d.finding.yaml)
    assert role["rules"][0] == {"apiGroups": [""], "resources": ["nodes/metrics"], "verbs": ["get"]}
    assert binding["subjects"][0]["name"] == "categraf-daemonset"


async def test_403_for_anonymous_asks_for_credentials_not_rbac() -> None:
    body = "Forbidden (user=system:anonymous, verb=get, resource=nodes, subresource=metrics)"
    async with serve(text(body, status=403)) as port:
        d = await diagnose_url(f"http://127.0.0.1:{port}/metrics", timeout=2)
    assert d.finding is not None and d.finding.yaml is None
    assert "anonymous" in d.finding.cause and "bearer_token_file" in d.finding.fix


async def test_other_statuses() -> None:
    async with serve(text("404 page not found", status=404)) as port:
        d = await diagnose_url(f"http://127.0.0.1:{port}/metricz", timeout=2)
    assert d.finding is not None and "404" in d.finding.cause and "/metrics/cadvisor" in d.finding.fix
    async with serve(text("boom", status=500)) as port:
        d = await diagnose_url(f"http://127.0.0.1:{port}/metrics", timeout=2)
    assert d.finding is not None and "500" in d.finding.cause


# --- body and timing --------------------------------------------------------------------------------------


async def test_html_body() -> None:
    page = "<!DOCTYPE html><html><head><title>Sign in</title></head><body>login</body></html>"
    async with serve(text(page, content_type="text/html")) as port:
        d = await diagnose_url(f"http://127.0.0.1:{port}/metrics", timeout=2)
    assert failed_step(d) == "body" and d.finding is not None
    assert "HTML" in d.finding.cause and "'Sign in'" in d.steps[-1].detail


async def test_json_body_names_the_kubelet_json_apis() -> None:
    async with serve(text('{"node": {}}', content_type="application/json")) as port:
        d = await diagnose_url(f"http://127.0.0.1:{port}/stats/summary", timeout=2)
    assert failed_step(d) == "body" and d.finding is not None
    assert "JSON" in d.finding.cause and "/stats/summary" in d.finding.fix


async def test_parse_error_reports_the_first_bad_line_number() -> None:
    body = "# TYPE a counter\na 1\nb{x=\"1\" 2\nc 3\n"
    async with serve(text(body)) as port:
        d = await diagnose_url(f"http://127.0.0.1:{port}/metrics", timeout=2)
    assert failed_step(d) == "body" and d.finding is not None
    assert "line 3" in d.finding.cause and 'b{x="1" 2' in d.finding.cause


async def test_working_target_counts_series_and_bytes() -> None:
    async with serve(text(METRICS)) as port:
        d = await diagnose_url(f"http://127.0.0.1:{port}/metrics", timeout=3, interval=15)
    assert d.ok and d.finding is None
    assert d.stats is not None and d.stats.series == 3 and d.stats.bytes == len(METRICS)
    assert [s.name for s in d.steps] == ["url", "resolve", "connect", "credentials", "http", "body", "timing"]
    assert not d.warnings


async def test_slow_scrape_warns_near_the_timeout_and_fails_beyond_it() -> None:
    async def slow(_: web.Request) -> web.Response:
        await asyncio.sleep(0.3)
        return web.Response(text=METRICS)

    async with serve(slow) as port:
        url = f"http://127.0.0.1:{port}/metrics"
        near = await diagnose_url(url, scrape_timeout=0.5, interval=0.5, timeout=2)
        beyond = await diagnose_url(url, scrape_timeout=0.2, timeout=2)
    assert near.ok
    (warning,) = near.warnings
    assert "over half its timeout" in warning and "over half its interval" in warning
    # Beyond its timeout the agent's own fetch gives up, so doctor does too.
    assert failed_step(beyond) == "http"
    assert beyond.finding is not None and "did not answer within 0.2s" in beyond.finding.cause


# --- rendering and the command line -----------------------------------------------------------------------


async def test_json_rendering_shape() -> None:
    async with serve(text("nope", status=403)) as port:
        d = await diagnose_url(f"http://127.0.0.1:{port}/metrics", timeout=2)
    (item,) = json.loads(render_json([d]))
    assert set(item) == {"url", "ok", "steps", "diagnosis", "stats", "warnings"}
    assert item["ok"] is False and item["stats"] is None
    assert all(set(s) >= {"name", "ok", "detail"} for s in item["steps"])
    assert set(item["diagnosis"]) == {"cause", "fix"}


def test_cli_text_and_json_for_a_refused_port() -> None:
    port = free_port()
    url = f"https://127.0.0.1:{port}/metrics"
    runner = CliRunner()
    result = runner.invoke(app, ["doctor", url, "--timeout", "2"])
    assert result.exit_code == 1
    assert "✗ connect" in result.stdout and "✓ resolve" in result.stdout
    assert "Cause:" in result.stdout and "connection refused" in result.stdout
    assert "Fix:" in result.stdout and "hostNetwork" in result.stdout
    result = runner.invoke(app, ["doctor", url, "--json", "--timeout", "2"])
    assert result.exit_code == 1
    (item,) = json.loads(result.stdout)
    assert item["steps"][-1] == {
        "name": "connect", "ok": False, "detail": f"127.0.0.1:{port}: connection refused"
    }


def test_cli_bad_arguments_exit_2(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["doctor"]).exit_code == 2
    assert runner.invoke(app, ["doctor", "http://x/", "--config-dir", str(tmp_path)]).exit_code == 2
    assert runner.invoke(app, ["doctor", "--config-dir", str(tmp_path), "--ca", "x"]).exit_code == 2
    assert runner.invoke(app, ["doctor", "--config-dir", str(tmp_path / "missing")]).exit_code == 2


def test_cli_config_dir_checks_every_instance(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "input.prometheus").mkdir()
    (tmp_path / "config.toml").write_text('[global]\ninterval = 15\n')
    (tmp_path / "input.prometheus" / "prometheus.toml").write_text(
        f'[[instances]]\nurls = ["http://127.0.0.1:{port}/metrics", "https://127.0.0.1:{port}/metrics"]\n'
    )
    result = CliRunner().invoke(app, ["doctor", "--config-dir", str(tmp_path), "--json", "--timeout", "2"])
    assert result.exit_code == 1, result.output
    items = json.loads(result.stdout)
    assert sorted(i["url"] for i in items) == [f"http://127.0.0.1:{port}/metrics", f"https://127.0.0.1:{port}/metrics"]
    assert all(i["steps"][-1]["name"] == "connect" for i in items)
