from __future__ import annotations

import base64
import json
import logging
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

import pytest

from kubescrape.auth import BearerToken, jwt_expiry, read_credential_file, service_account_of, token_claims
from kubescrape.client import client_ssl_context
from kubescrape.emulator.pki import CertificateAuthority
from kubescrape.errors import TLSConfigError, TokenError
from kubescrape.selfmon import SelfMetrics
from kubescrape.testing import FakeClock


def make_jwt(claims: dict[str, object]) -> str:
    def part(obj: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256'})}.{part(claims)}.c2lnbmF0dXJl"


def reloads(metrics: SelfMetrics, path: Path) -> float:
    value = metrics.registry.get_sample_value("kubescrape_token_reloads_total", {"file": str(path)})
    return value or 0.0


def test_reads_token_and_strips_newline(tmp_path: Path) -> None:
    f = tmp_path / "token"
    f.write_text("abc.def.ghi\n")
    assert BearerToken(f).get() == "abc.def.ghi"


def test_rereads_after_atomic_replace_and_counts(tmp_path: Path) -> None:
    f = tmp_path / "token"
    f.write_text("old")
    metrics = SelfMetrics()
    token = BearerToken(f, metrics=metrics)
    assert token.get() == "old"
    assert token.get() == "old"
    assert reloads(metrics, f) == 0
    tmp = tmp_path / ".new"
    tmp.write_text("new")  # same size as before: only the inode tells them apart
    os.replace(tmp, f)
    assert token.get() == "new"
    assert token.reloads == 1
    assert reloads(metrics, f) == 1


def test_rereads_after_symlink_swap_like_projected_volume(tmp_path: Path) -> None:
    # The kubelet's AtomicWriter: token -> ..data/token, ..data -> ..<timestamp>; rotation swaps ..data.
    v1 = tmp_path / "..2024_01_01"
    v1.mkdir()
    (v1 / "token").write_text("first")
    (tmp_path / "..data").symlink_to(v1.name)
    (tmp_path / "token").symlink_to("..data/token")
    token = BearerToken(tmp_path / "token")
    assert token.get() == "first"

    v2 = tmp_path / "..2024_01_02"
    v2.mkdir()
    (v2 / "token").write_text("secnd")
    (tmp_path / "..data_tmp").symlink_to(v2.name)
    os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
    assert token.get() == "secnd"


def test_in_place_rewrite_with_other_size_is_seen(tmp_path: Path) -> None:
    f = tmp_path / "token"
    f.write_text("short")
    token = BearerToken(f)
    assert token.get() == "short"
    f.write_text("a-longer-token")
    assert token.get() == "a-longer-token"


def test_force_reload_reads_even_when_stat_is_unchanged(tmp_path: Path) -> None:
    f = tmp_path / "token"
    f.write_text("aaaa")
    st = f.stat()
    token = BearerToken(f)
    assert token.get() == "aaaa"
    f.write_text("bbbb")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # same inode, size and mtime: invisible to stat
    assert token.get() == "aaaa"
    assert token.force_reload() == "bbbb"
    assert token.reloads == 1


def test_empty_file_mid_write_keeps_previous_token(tmp_path: Path) -> None:
    f = tmp_path / "token"
    f.write_text("good")
    token = BearerToken(f)
    assert token.get() == "good"
    f.write_text("")
    assert token.get() == "good"
    f.write_text("fresh-token")
    assert token.get() == "fresh-token"


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (None, "does not exist"),
        ("", "is empty"),
        ("Bearer abc", "more than one word"),
        (b"\xff\xfe", "not text"),
    ],
)
def test_bad_token_files_raise_with_fix(tmp_path: Path, content: str | bytes | None, match: str) -> None:
    f = tmp_path / "token"
    if isinstance(content, bytes):
        f.write_bytes(content)
    elif content is not None:
        f.write_text(content)
    with pytest.raises(TokenError, match=match) as info:
        BearerToken(f).get()
    assert info.value.fix
    assert info.value.reason == "token"


def test_unreadable_token_file(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads files regardless of mode")
    f = tmp_path / "token"
    f.write_text("x")
    f.chmod(0)
    with pytest.raises(TokenError, match="cannot be read"):
        BearerToken(f).get()


def test_jwt_expiry_reads_exp_without_verifying() -> None:
    assert jwt_expiry(make_jwt({"exp": 1234, "sub": "x"})) == 1234.0
    assert jwt_expiry(make_jwt({"sub": "x"})) is None
    assert jwt_expiry("not-a-jwt") is None
    assert jwt_expiry("a.!!!.c") is None


def test_expired_token_warns_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock(start=2_000_000_000.0)
    f = tmp_path / "token"
    f.write_text(make_jwt({"exp": 1_900_000_000}))
    token = BearerToken(f, clock=clock)
    with caplog.at_level(logging.WARNING, logger="kubescrape.auth"):
        token.get()
        token.force_reload()
    warnings = [r for r in caplog.records if "expired" in r.getMessage()]
    assert len(warnings) == 1
    assert token.expires_at == 1_900_000_000.0


def test_valid_token_does_not_warn(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    f = tmp_path / "token"
    f.write_text(make_jwt({"exp": 2_100_000_000}))
    with caplog.at_level(logging.WARNING, logger="kubescrape.auth"):
        BearerToken(f, clock=FakeClock(start=2_000_000_000.0)).get()
    assert not caplog.records


@dataclass(frozen=True)
class TLS:
    use_tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None
    insecure_skip_verify: bool = False


@dataclass(frozen=True)
class TLSV(TLS):
    min_version: str | None = None


def test_no_tls_options_gives_none() -> None:
    assert client_ssl_context(TLS()) is None


def test_tls_options_without_use_tls_do_not_apply_as_in_categraf() -> None:
    assert client_ssl_context(TLS(insecure_skip_verify=True, ca_file="/nonexistent")) is None


def test_min_version() -> None:
    ctx = client_ssl_context(TLSV(use_tls=True, min_version="1.3"))
    assert ctx is not None and ctx.minimum_version == ssl.TLSVersion.TLSv1_3


def test_use_tls_verifies_by_default() -> None:
    ctx = client_ssl_context(TLS(use_tls=True))
    assert ctx is not None
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.check_hostname


def test_insecure_skip_verify_turns_verification_off() -> None:
    ctx = client_ssl_context(TLS(use_tls=True, insecure_skip_verify=True))
    assert ctx is not None
    assert ctx.verify_mode == ssl.CERT_NONE
    assert not ctx.check_hostname


def test_ca_and_client_cert_load(tmp_path: Path) -> None:
    ca = CertificateAuthority.create()
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem)
    ca.issue_client("kubescrape", organizations=["monitoring"]).write(tmp_path / "c.crt", tmp_path / "c.key")
    ctx = client_ssl_context(TLS(use_tls=True, ca_file=str(tmp_path / "ca.crt"),
                                 cert_file=str(tmp_path / "c.crt"), key_file=str(tmp_path / "c.key")))
    assert ctx is not None
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert "kubernetes-ca" in str(ctx.get_ca_certs())


@pytest.mark.parametrize(
    ("setup", "match"),
    [
        ("missing_ca", "tls_ca file .* does not exist"),
        ("garbage_ca", "holds no PEM certificate"),
        ("broken_ca", "does not parse"),
        ("cert_without_key", "tls_key is not set"),
        ("missing_key", "tls_key file .* does not exist"),
        ("wrong_key", "do not load"),
    ],
)
def test_tls_file_errors_translate_to_tls_config_error(tmp_path: Path, setup: str, match: str) -> None:
    ca = CertificateAuthority.create()
    pair = ca.issue_client("a")
    other = ca.issue_client("b")
    pair.write(tmp_path / "c.crt", tmp_path / "c.key")
    (tmp_path / "other.key").write_bytes(other.key_pem)
    (tmp_path / "garbage").write_text("hello")
    (tmp_path / "broken").write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    c = str(tmp_path / "c.crt")
    options = {
        "missing_ca": TLS(use_tls=True, ca_file=str(tmp_path / "nope.crt")),
        "garbage_ca": TLS(use_tls=True, ca_file=str(tmp_path / "garbage")),
        "broken_ca": TLS(use_tls=True, ca_file=str(tmp_path / "broken")),
        "cert_without_key": TLS(use_tls=True, cert_file=c),
        "missing_key": TLS(use_tls=True, cert_file=c, key_file=str(tmp_path / "x.key")),
        "wrong_key": TLS(use_tls=True, cert_file=c, key_file=str(tmp_path / "other.key")),
    }[setup]
    with pytest.raises(TLSConfigError, match=match) as info:
        client_ssl_context(options)
    assert info.value.fix


def test_service_account_of_bound_legacy_and_subject_claims() -> None:
    bound: dict[str, object] = {
        "kubernetes.io": {"namespace": "flashcat", "serviceaccount": {"name": "categraf"}},
    }
    legacy = {"kubernetes.io/serviceaccount/namespace": "kube-system",
              "kubernetes.io/serviceaccount/service-account.name": "old"}
    assert service_account_of(bound) == "flashcat/categraf"
    assert service_account_of(legacy) == "kube-system/old"
    assert service_account_of({"sub": "system:serviceaccount:a:b"}) == "a/b"
    assert service_account_of({"sub": "alice"}) is None
    assert token_claims(make_jwt(bound)) == bound


@pytest.mark.parametrize(("kind", "match"), [("dir", "a directory"), ("big", "more than the 16")])
def test_credential_files_must_be_small_regular_files(tmp_path: Path, kind: str, match: str) -> None:
    path = tmp_path / "f"
    if kind == "dir":
        path.mkdir()
    else:
        path.write_bytes(b"x" * 17)
    with pytest.raises(TokenError, match=match) as info:
        read_credential_file(path, what="bearer token file", error=TokenError, fix="x", limit=16)
    assert info.value.fix
