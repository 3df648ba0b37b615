"""A tiny PKI for the emulated cluster: a CA, kubelet serving certificates and client certificates.

The shapes follow what kubeadm/TLS bootstrapping produce: the CA is self-signed with ``CA:TRUE``;
serving certificates carry the node's IP and name as subjectAltNames (Go clients such as Prometheus
refuse a certificate without SANs); client certificates carry the user in CN and the groups in O,
which is how the kubelet's x509 authenticator maps a certificate to a user (``CN=admin,
O=system:masters``). EC P-256 keys keep generation of hundreds of node certificates fast.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import ssl
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kubescrape.errors import TLSConfigError

# Backdate certificates a little so that a client whose clock is slightly behind still accepts them.
_BACKDATE = dt.timedelta(minutes=5)
_CA_LIFETIME = dt.timedelta(days=3650)
_LEAF_LIFETIME = dt.timedelta(days=365)

__all__ = [
    "CertPair",
    "CertificateAuthority",
    "client_ssl_context",
    "server_ssl_context",
    "write_private",
]


def write_private(path: str | os.PathLike[str], data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` atomically (temp file + rename) with ``mode`` permissions.

    Atomic so that a reader (a scraper re-reading a token or key file) never sees a half-written file.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class CertPair(NamedTuple):
    """A PEM certificate and its PEM (PKCS#8, unencrypted) private key."""

    cert_pem: bytes
    key_pem: bytes

    def write(self, cert_path: str | os.PathLike[str], key_path: str | os.PathLike[str]) -> None:
        """Write the certificate (mode 0644) and the key (mode 0600), creating parent directories."""
        write_private(cert_path, self.cert_pem, 0o644)
        write_private(key_path, self.key_pem, 0o600)

    @property
    def certificate(self) -> x509.Certificate:
        """The parsed certificate."""
        return x509.load_pem_x509_certificate(self.cert_pem)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class CertificateAuthority:
    """A CA that signs kubelet serving certificates and client certificates."""

    def __init__(self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        self.cert = cert
        self.key = key

    @classmethod
    def create(cls, common_name: str = "kubernetes-ca") -> CertificateAuthority:
        """Create a new self-signed CA valid for ten years."""
        key = _new_key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = _now()
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + _CA_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                    encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    @classmethod
    def load(
        cls, cert_path: str | os.PathLike[str], key_path: str | os.PathLike[str]
    ) -> CertificateAuthority:
        """Load a CA saved by :meth:`save`."""
        try:
            cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
            key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
        except (OSError, ValueError) as e:
            raise TLSConfigError(
                f"cannot load the CA from {cert_path} / {key_path}: {e}",
                "delete the state directory to generate a fresh CA, or restore both files",
            ) from e
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise TLSConfigError(
                f"the CA key {key_path} is not an EC key",
                "delete the state directory to generate a fresh EC P-256 CA",
            )
        return cls(cert, key)

    def save(self, cert_path: str | os.PathLike[str], key_path: str | os.PathLike[str]) -> None:
        """Write the CA certificate (0644) and key (0600)."""
        CertPair(self.cert_pem, _key_pem(self.key)).write(cert_path, key_path)

    @property
    def cert_pem(self) -> bytes:
        """The CA certificate in PEM: what clients put in ``tls_ca`` / ``ca_file``."""
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def _issue(
        self,
        subject: x509.Name,
        *,
        usage: x509.ObjectIdentifier,
        sans: list[x509.GeneralName],
        not_before: dt.datetime | None,
        not_after: dt.datetime | None,
    ) -> CertPair:
        key = _new_key()
        now = _now()
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or now - _BACKDATE)
            .not_valid_after(not_after or now + _LEAF_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                    encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return CertPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))

    def issue_server(
        self,
        common_name: str,
        *,
        ips: Iterable[str] = (),
        dns_names: Iterable[str] = (),
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
    ) -> CertPair:
        """A serving certificate (``serverAuth``) for ``ips`` and ``dns_names``.

        ``not_before``/``not_after`` let tests make not-yet-valid or expired certificates.
        """
        sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        return self._issue(
            subject, usage=ExtendedKeyUsageOID.SERVER_AUTH, sans=sans, not_before=not_before,
            not_after=not_after,
        )

    def issue_client(
        self,
        common_name: str,
        *,
        organizations: Iterable[str] = (),
        not_after: dt.datetime | None = None,
    ) -> CertPair:
        """A client certificate (``clientAuth``): user ``common_name``, groups ``organizations``."""
        attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
        return self._issue(
            x509.Name(attrs), usage=ExtendedKeyUsageOID.CLIENT_AUTH, sans=[], not_before=None,
            not_after=not_after,
        )


def _load_chain(ctx: ssl.SSLContext, pair: CertPair) -> None:
    # The ssl module only loads a certificate chain from files; keep the key on disk for an instant only.
    with tempfile.TemporaryDirectory(prefix="kubescrape-tls-") as tmp:
        cert_path = Path(tmp) / "tls.crt"
        key_path = Path(tmp) / "tls.key"
        pair.write(cert_path, key_path)
        try:
            ctx.load_cert_chain(cert_path, key_path)
        except ssl.SSLError as e:
            raise TLSConfigError(
                f"certificate and key do not load: {e}",
                "check that the key belongs to the certificate and both are PEM",
            ) from e


def server_ssl_context(pair: CertPair, client_ca_pem: bytes | None = None) -> ssl.SSLContext:
    """A TLS server context serving ``pair``.

    With ``client_ca_pem`` the server asks for a client certificate and verifies it against that CA, but
    does not require one (``CERT_OPTIONAL``), like the kubelet with ``x509.clientCAFile``: a request
    without a certificate may still authenticate with a bearer token.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_chain(ctx, pair)
    if client_ca_pem is not None:
        ctx.load_verify_locations(cadata=client_ca_pem.decode("ascii"))
        ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


def client_ssl_context(ca_pem: bytes | None = None, client_pair: CertPair | None = None) -> ssl.SSLContext:
    """A TLS client context trusting ``ca_pem`` (or the system store), presenting ``client_pair``."""
    ctx = ssl.create_default_context(cadata=ca_pem.decode("ascii") if ca_pem is not None else None)
    if client_pair is not None:
        _load_chain(ctx, client_pair)
    return ctx


def no_certificate_context() -> ssl.SSLContext:
    """A server context that aborts every handshake with the alert ``internal_error``.

    That is what a kubelet with ``serverTLSBootstrap: true`` answers until its serving CSR is approved:
    its ``tls.Config.GetCertificate`` has no certificate and Go's handshake fails with that alert. An
    aborted asyncio handshake sends no alert at all, so the callback returns it explicitly (OpenSSL calls
    the servername callback with or without SNI).
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2

    def refuse(_obj: ssl.SSLObject, _name: str | None, _ctx: ssl.SSLContext) -> int:
        return ssl.ALERT_DESCRIPTION_INTERNAL_ERROR

    ctx.sni_callback = refuse
    return ctx


def certificate_request_pem(pair: CertPair, common_name: str, organizations: Iterable[str],
                            ips: Iterable[str], dns_names: Iterable[str]) -> bytes:
    """A PKCS#10 request for ``pair``'s key, as the kubelet's certificate manager writes it."""
    key = serialization.load_pem_private_key(pair.key_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    request = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attrs))
               .add_extension(x509.SubjectAlternativeName(sans), critical=False)
               .sign(key, hashes.SHA256()))
    return request.public_bytes(serialization.Encoding.PEM)
