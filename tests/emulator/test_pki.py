from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kubescrape.emulator.pki import CertificateAuthority, CertPair, client_ssl_context, server_ssl_context
from kubescrape.errors import TLSConfigError


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.create()


def test_ca_is_a_ca(ca: CertificateAuthority) -> None:
    cert = x509.load_pem_x509_certificate(ca.cert_pem)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "kubernetes-ca"
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert cert.issuer == cert.subject


def test_server_cert_has_sans_and_server_usage(ca: CertificateAuthority) -> None:
    pair = ca.issue_server("node-1", ips=["127.0.1.1"], dns_names=["node-1"])
    cert = pair.certificate
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.1.1")]
    assert san.get_values_for_type(x509.DNSName) == ["node-1"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert cert.issuer == ca.cert.subject


def test_client_cert_maps_cn_and_o(ca: CertificateAuthority) -> None:
    cert = ca.issue_client("admin", organizations=["system:masters", "ops"]).certificate
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "admin"
    orgs = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    assert orgs == ["system:masters", "ops"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_validity_window_is_honoured(ca: CertificateAuthority) -> None:
    past = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    pair = ca.issue_server("old", ips=["127.0.0.1"], not_before=past, not_after=past + dt.timedelta(days=1))
    assert pair.certificate.not_valid_after_utc == past + dt.timedelta(days=1)


def test_save_load_roundtrip_and_key_mode(ca: CertificateAuthority, tmp_path: Path) -> None:
    ca.save(tmp_path / "ca.crt", tmp_path / "ca.key")
    assert stat.S_IMODE((tmp_path / "ca.key").stat().st_mode) == 0o600
    again = CertificateAuthority.load(tmp_path / "ca.crt", tmp_path / "ca.key")
    assert again.cert_pem == ca.cert_pem
    # a certificate issued by the reloaded CA verifies against the original CA certificate
    leaf = again.issue_client("x").certificate
    leaf.verify_directly_issued_by(ca.cert)


def test_load_missing_raises_with_fix(tmp_path: Path) -> None:
    with pytest.raises(TLSConfigError, match="fix:"):
        CertificateAuthority.load(tmp_path / "nope.crt", tmp_path / "nope.key")


def test_certpair_write(ca: CertificateAuthority, tmp_path: Path) -> None:
    pair = ca.issue_client("u")
    pair.write(tmp_path / "a" / "u.crt", tmp_path / "a" / "u.key")
    assert CertPair((tmp_path / "a" / "u.crt").read_bytes(), (tmp_path / "a" / "u.key").read_bytes()) == pair


async def _tls_roundtrip(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> bytes | None:
    """Handshake over loopback; returns the DER of the client certificate the server saw (or None)."""
    seen: list[bytes | None] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sslobj = writer.get_extra_info("ssl_object")
        seen.append(sslobj.getpeercert(binary_form=True))
        writer.write(b"hi")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=client_ctx, server_hostname="127.0.0.1"), 5
        )
        assert await asyncio.wait_for(reader.read(), 5) == b"hi"
        writer.close()
    finally:
        server.close()
        await server.wait_closed()
    return seen[0]


async def test_tls_handshake_with_optional_client_cert(ca: CertificateAuthority) -> None:
    server = server_ssl_context(ca.issue_server("node-1", ips=["127.0.0.1"]), client_ca_pem=ca.cert_pem)
    assert server.verify_mode == ssl.CERT_OPTIONAL
    # without a client certificate the handshake still succeeds
    assert await _tls_roundtrip(server, client_ssl_context(ca.cert_pem)) is None
    admin = ca.issue_client("admin", organizations=["system:masters"])
    der = await _tls_roundtrip(server, client_ssl_context(ca.cert_pem, admin))
    assert der == admin.certificate.public_bytes(serialization.Encoding.DER)


async def test_client_rejects_server_from_other_ca(ca: CertificateAuthority) -> None:
    other = CertificateAuthority.create("other")
    server = server_ssl_context(other.issue_server("node-1", ips=["127.0.0.1"]))
    with pytest.raises(ssl.SSLCertVerificationError):
        await _tls_roundtrip(server, client_ssl_context(ca.cert_pem))
