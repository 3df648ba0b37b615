from __future__ import annotations

import asyncio
import gzip
import socket
import ssl
import time
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509

from kubescrape.emulator import run_command
from kubescrape.emulator.fleet import Emulator, node_address
from kubescrape.emulator.pki import CertificateAuthority, CertPair, client_ssl_context
from kubescrape.emulator.server import GO_PLAIN_HTTP_RESPONSE, NodeSpec
from kubescrape.testing import FakeClock

TEXT = "text/plain; charset=utf-8"


class StaticPayloads:
    """Small fixed payloads: these tests are about the request chain, not the payload contents."""

    def __init__(self, spec: NodeSpec, pods: int) -> None:
        self.name = spec.name
        self.calls = 0

    def _m(self, what: str) -> bytes:
        self.calls += 1
        return (f"# TYPE {what}_total counter\n{what}_total{{node=\"{self.name}\"}} 1\n" * 60).encode()

    def metrics(self) -> bytes:
        return self._m("kubelet")

    def cadvisor(self) -> bytes:
        return self._m("container")

    def resource(self) -> bytes:
        return self._m("resource")

    def probes(self) -> bytes:
        return self._m("prober")

    def kube_proxy_metrics(self) -> bytes:
        return self._m("kubeproxy")

    def stats_summary(self) -> bytes:
        return b'{"node": {"nodeName": "%s"}, "pods": []}' % self.name.encode()

    def pods_json(self) -> bytes:
        return b'{"kind": "PodList", "apiVersion": "v1", "items": []}'

    def configz(self) -> bytes:
        return b'{"kubeletconfig": {}}'


def _emulator(tmp_path: Path, **kw: object) -> Emulator:
    args: dict[str, object] = {"port": 0, "healthz_port": 0, "proxy_port": 0,
                               "payload_factory": StaticPayloads, "pods": 3}
    args.update(kw)
    return Emulator(tmp_path / "state", **args)  # type: ignore[arg-type]


@pytest.fixture
async def emu(tmp_path: Path) -> AsyncIterator[Emulator]:
    async with _emulator(tmp_path) as e:
        yield e


def _ctx(emu: Emulator, *, admin: bool = False) -> ssl.SSLContext:
    pair = None
    if admin:
        crt, key = emu.admin_cert_paths()
        pair = CertPair(crt.read_bytes(), key.read_bytes())
    return client_ssl_context(emu.ca_path.read_bytes(), pair)


async def _get(emu: Emulator, path: str, *, token: str | None = None, admin: bool = False,
               method: str = "GET", node: int = 0,
               headers: dict[str, str] | None = None) -> tuple[int, bytes, str, aiohttp.ClientResponse]:
    hdrs = dict(headers or {})
    if token is not None:
        hdrs["Authorization"] = f"Bearer {token}"
    hdrs.setdefault("Accept-Encoding", "identity")
    async with aiohttp.ClientSession(auto_decompress=False) as s, s.request(
        method, emu.nodes[node].url + path, ssl=_ctx(emu, admin=admin), headers=hdrs,
        timeout=aiohttp.ClientTimeout(total=10),
    ) as r:
        return r.status, await r.read(), r.headers.get("Content-Type", ""), r


def _token(emu: Emulator, ns: str = "flashcat", name: str = "categraf-daemonset") -> str:
    return emu.token_path(ns, name).read_text().strip()


async def test_admin_client_certificate_is_allowed(emu: Emulator) -> None:
    status, body, ctype, _ = await _get(emu, "/metrics", admin=True)
    assert status == 200
    assert b"kubelet_total" in body
    assert ctype == "text/plain; version=0.0.4; charset=utf-8"
    # the admin (system:masters) may do what the scraper may not
    status, _, _, _ = await _get(emu, "/logs/", admin=True)
    assert status == 404  # allowed, then no such handler


async def test_bound_service_account_token_is_allowed(emu: Emulator) -> None:
    token = _token(emu)
    for path in ("/metrics", "/metrics/cadvisor", "/metrics/resource", "/metrics/probes"):
        status, body, _, _ = await _get(emu, path, token=token)
        assert status == 200, path
        assert body.startswith(b"# TYPE")
    status, body, ctype, _ = await _get(emu, "/stats/summary", token=token)
    assert (status, ctype) == (200, "application/json")
    assert b'"nodeName": "node-1"' in body
    for path, ctype_expected in (("/pods", "application/json"), ("/configz", "application/json"),
                                 ("/spec/", "application/json"), ("/healthz", TEXT)):
        status, body, ctype, _ = await _get(emu, path, token=token)
        assert (status, ctype) == (200, ctype_expected), path
    assert (await _get(emu, "/healthz", token=token))[1] == b"ok"


async def test_unbound_service_account_gets_the_exact_403(emu: Emulator) -> None:
    status, body, ctype, _ = await _get(emu, "/metrics", token=_token(emu, "default", "unbound"))
    assert status == 403
    assert body == (b"Forbidden (user=system:serviceaccount:default:unbound, verb=get, resource=nodes, "
                    b"subresource=metrics)")
    assert ctype == TEXT


async def test_verbs_follow_the_method(emu: Emulator) -> None:
    token = _token(emu)
    for method, verb in (("POST", "create"), ("PUT", "update"), ("PATCH", "patch"), ("DELETE", "delete")):
        status, body, _, _ = await _get(emu, "/metrics", token=token, method=method)
        assert status == 403
        assert f"verb={verb}, resource=nodes, subresource=metrics)".encode() in body
    status, body, _, _ = await _get(emu, "/exec/ns/pod/c", token=token, method="POST")
    assert body.endswith(b"verb=create, resource=nodes, subresource=proxy)")


async def test_no_credentials_bad_and_expired_tokens_get_the_exact_401(tmp_path: Path) -> None:
    clock = FakeClock(autojump=False)
    async with _emulator(tmp_path, clock=clock, token_ttl=100) as emu:
        for token in (None, "123456", ""):
            status, body, ctype, resp = await _get(emu, "/metrics", token=token)
            assert (status, body, ctype) == (401, b"Unauthorized", TEXT), token
            assert resp.headers["Content-Length"] == "12"
        old = _token(emu)
        assert (await _get(emu, "/metrics", token=old))[0] == 200
        clock.advance(101)
        await asyncio.sleep(0.05)  # let the rotation task rewrite the files
        assert (await _get(emu, "/metrics", token=old))[:2] == (401, b"Unauthorized")
        new = _token(emu)
        assert new != old
        assert (await _get(emu, "/metrics", token=new))[0] == 200


async def test_token_rotation_while_running(tmp_path: Path) -> None:
    clock = FakeClock(autojump=False)
    async with _emulator(tmp_path, clock=clock, token_ttl=100) as emu:
        first = _token(emu)
        clock.advance(79)
        await asyncio.sleep(0.02)
        assert _token(emu) == first
        clock.advance(2)  # past 80 % of the lifetime
        for _ in range(50):
            await asyncio.sleep(0.01)
            if _token(emu) != first:
                break
        second = _token(emu)
        assert second != first
        # the old token is still valid until it expires: scrapers re-read at their own pace
        assert (await _get(emu, "/metrics", token=first))[0] == 200
        assert (await _get(emu, "/metrics", token=second))[0] == 200


def _raw(port: int, data: bytes, host: str = "127.0.0.1") -> bytes:
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(data)
        chunks = []
        while True:
            try:
                chunk = s.recv(4096)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


async def test_plain_http_on_the_tls_port_gets_go_400(emu: Emulator) -> None:
    port = emu.nodes[0].port
    reply = await asyncio.to_thread(_raw, port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert reply == b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"
    assert reply == GO_PLAIN_HTTP_RESPONSE
    # Go answers only what looks like HTTP; other bytes are just dropped
    assert await asyncio.to_thread(_raw, port, b"DELETE /x HTTP/1.1\r\n\r\n") == b""
    assert await asyncio.to_thread(_raw, port, b"\x00\x01\x02\x03\x04junk") == b""
    # a header split over two packets is still recognised
    def split() -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"HE")
            time.sleep(0.05)
            s.sendall(b"AD / HTTP/1.1\r\n\r\n")
            return s.recv(4096)
    assert await asyncio.to_thread(split) == GO_PLAIN_HTTP_RESPONSE
    assert emu.stats.plain_http_rejected == 2
    # and TLS still works afterwards
    assert (await _get(emu, "/metrics", admin=True))[0] == 200


async def test_untrusted_client_certificate_fails_the_handshake(emu: Emulator) -> None:
    rogue = CertificateAuthority.create("rogue").issue_client("admin", organizations=["system:masters"])
    ctx = client_ssl_context(emu.ca_path.read_bytes(), rogue)
    async with aiohttp.ClientSession() as s:
        with pytest.raises(aiohttp.ClientError):
            async with s.get(emu.nodes[0].url + "/metrics", ssl=ctx) as r:
                await r.read()


async def test_not_found_paths(emu: Emulator) -> None:
    # unknown root: Go's mux answers before any filter
    status, body, _, _ = await _get(emu, "/nothing-here")
    assert (status, body) == (404, b"404 page not found\n")
    # under a kubelet root: authn and authz first, then go-restful's 404
    assert (await _get(emu, "/stats/"))[0] == 401
    status, body, _, _ = await _get(emu, "/stats/", token=_token(emu))
    assert (status, body) == (404, b"404: Page Not Found")


async def test_gzip_and_render_cache(emu: Emulator) -> None:
    token = _token(emu)
    status, body, _, resp = await _get(emu, "/metrics/cadvisor", token=token,
                                       headers={"Accept-Encoding": "gzip"})
    assert status == 200
    assert resp.headers["Content-Encoding"] == "gzip"
    plain = gzip.decompress(body)
    renders = emu.stats.renders
    status, again, _, _ = await _get(emu, "/metrics/cadvisor", token=token)
    assert again == plain
    assert emu.stats.renders == renders  # served from the 1 s cache


async def test_healthz_and_kube_proxy_listeners(emu: Emulator) -> None:
    spec = emu.nodes[0]
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://{spec.address}:{spec.healthz_port}/healthz") as r:
            assert (r.status, await r.read()) == (200, b"ok")
        async with s.get(f"http://{spec.address}:{spec.proxy_port}/metrics") as r:
            assert r.status == 200
            assert b"kubeproxy_total" in await r.read()


async def test_fine_grained_403_on_newer_versions(tmp_path: Path) -> None:
    async with _emulator(tmp_path, kubelet_version="1.33.2") as emu:
        status, body, _, _ = await _get(emu, "/pods", token=_token(emu, "default", "unbound"))
        assert status == 403
        assert body == (b"Forbidden (user=system:serviceaccount:default:unbound, verb=get, resource=nodes, "
                        b"subresource(s)=[pods proxy])\n")
        # the seed's role (nodes/proxy) still reaches /pods through the proxy fallback
        assert (await _get(emu, "/pods", token=_token(emu)))[0] == 200


async def test_anonymous_mode(tmp_path: Path) -> None:
    async with _emulator(tmp_path, anonymous=True) as emu:
        status, body, _, _ = await _get(emu, "/metrics")
        assert (status, body) == (403, b"Forbidden (user=system:anonymous, verb=get, resource=nodes, "
                                       b"subresource=metrics)")
        assert (await _get(emu, "/metrics", token="bad"))[0] == 401


async def test_extra_rbac_file_grants(tmp_path: Path) -> None:
    rbac = tmp_path / "extra.yaml"
    rbac.write_text("""
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: let-unbound-read-metrics}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: categraf-daemonset}
subjects: [{kind: ServiceAccount, name: reader, namespace: monitoring}]
""")
    async with _emulator(tmp_path, rbac_files=[rbac]) as emu:
        assert emu.token_path("monitoring", "reader").exists()
        assert (await _get(emu, "/metrics", token=_token(emu, "monitoring", "reader")))[0] == 200


async def test_state_dir_is_reused(tmp_path: Path) -> None:
    async with _emulator(tmp_path) as emu:
        ca = emu.ca_path.read_bytes()
        token = _token(emu)
        node_crt = (emu.state_dir / "pki" / "nodes" / "node-1.crt").read_bytes()
        admin = emu.admin_cert_paths()[0].read_bytes()
    async with _emulator(tmp_path) as emu2:
        assert emu2.ca_path.read_bytes() == ca
        assert _token(emu2) == token
        assert (emu2.state_dir / "pki" / "nodes" / "node-1.crt").read_bytes() == node_crt
        assert emu2.admin_cert_paths()[0].read_bytes() == admin
        assert (await _get(emu2, "/metrics", token=token))[0] == 200


async def test_fleet_nodes_have_their_own_address_and_certificate(tmp_path: Path) -> None:
    async with _emulator(tmp_path, nodes=3) as emu:
        assert [n.address for n in emu.nodes] == ["127.0.1.1", "127.0.1.2", "127.0.1.3"]
        token = _token(emu)
        for i, spec in enumerate(emu.nodes):
            crt = x509.load_pem_x509_certificate(
                (emu.state_dir / "pki" / "nodes" / f"{spec.name}.crt").read_bytes())
            san = crt.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == [spec.address]
            status, body, _, _ = await _get(emu, "/stats/summary", token=token, node=i)
            assert status == 200
            assert f'"nodeName": "{spec.name}"'.encode() in body
            # 403 names the node-independent attributes only
            status, _, _, _ = await _get(emu, "/metrics", token=_token(emu, "default", "unbound"), node=i)
            assert status == 403
    assert node_address(255) == "127.0.2.1"


def test_print_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = run_command(state_dir=tmp_path / "s", nodes=2, pods=5, churn=0.0, address="127.0.0.1", port=10250,
                     healthz_port=10248, proxy_port=10249, rbac_files=[], kubelet_version="1.29.0",
                     token_ttl=0.0, anonymous=False, print_config=True, duration=0.0)
    assert rc == 0
    out = capsys.readouterr().out
    token = (tmp_path / "s" / "tokens" / "flashcat" / "categraf-daemonset").resolve()
    assert f'bearer_token_file = "{token}"' in out
    assert f'tls_ca = "{(tmp_path / "s" / "ca.crt").resolve()}"' in out
    assert '"https://127.0.1.1:10250/metrics", "https://127.0.1.2:10250/metrics"' in out
    assert '"https://127.0.1.2:10250/metrics/cadvisor"' in out
    assert '"http://127.0.1.1:10249/metrics"' in out
    assert out.count("use_tls = true") == 2
    assert len(tomllib.loads(out)["instances"]) == 3


def test_run_command_reports_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = run_command(state_dir=tmp_path / "s", nodes=1, pods=5, churn=0.0, address="127.0.0.1", port=0,
                     healthz_port=0, proxy_port=0, rbac_files=[tmp_path / "missing.yaml"],
                     kubelet_version="1.29.0", token_ttl=0.0, anonymous=False, print_config=True,
                     duration=0.0)
    assert rc == 2
    assert "fix:" in capsys.readouterr().err
