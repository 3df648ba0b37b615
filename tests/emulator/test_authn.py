from __future__ import annotations

from typing import Any

from kubescrape.emulator.authn import Authenticator, UserInfo, bearer_token, user_from_peercert
from kubescrape.emulator.tokens import TokenIssuer
from kubescrape.testing import FakeClock

ADMIN_PEERCERT: dict[str, Any] = {
    "subject": ((("organizationName", "system:masters"),), (("commonName", "admin"),)),
}


def _authn(anonymous: bool = False) -> tuple[Authenticator, TokenIssuer, FakeClock]:
    clock = FakeClock()
    issuer = TokenIssuer.generate(clock=clock)
    return Authenticator(issuer, anonymous=anonymous), issuer, clock


def test_x509_user_and_groups() -> None:
    authn, _, _ = _authn()
    assert authn.authenticate(ADMIN_PEERCERT, None) == UserInfo(
        "admin", ("system:masters", "system:authenticated"), "x509")
    assert user_from_peercert({"subject": ((("organizationName", "o"),),)}) is None
    assert user_from_peercert({}) is None


def test_x509_wins_over_a_bad_token() -> None:
    authn, _, _ = _authn()
    info = authn.authenticate(ADMIN_PEERCERT, "Bearer 123456")
    assert info is not None and info.method == "x509"


def test_bearer_token_user() -> None:
    authn, issuer, _ = _authn()
    info = authn.authenticate(None, "Bearer " + issuer.issue("flashcat", "categraf-daemonset", 60))
    assert info == UserInfo("system:serviceaccount:flashcat:categraf-daemonset",
                            ("system:serviceaccounts", "system:serviceaccounts:flashcat",
                             "system:authenticated"), "token")
    # the scheme is case-insensitive, as in the apiserver's bearer token authenticator
    assert authn.authenticate(None, "bearer " + issuer.issue("a", "b", 60)) is not None


def test_no_credentials_bad_or_expired_token_is_401() -> None:
    authn, issuer, clock = _authn()
    token = issuer.issue("default", "x", 10)
    assert authn.authenticate(None, None) is None
    assert authn.authenticate(None, "Bearer 123456") is None
    assert authn.authenticate(None, "Bearer ") is None
    assert authn.authenticate(None, "Basic YTpi") is None
    clock.advance(11)
    assert authn.authenticate(None, "Bearer " + token) is None


def test_anonymous_mode() -> None:
    authn, _, _ = _authn(anonymous=True)
    assert authn.authenticate(None, None) == UserInfo("system:anonymous", ("system:unauthenticated",),
                                                      "anonymous")
    # a token that fails review is still a 401, not anonymous (union.NewFailOnError)
    assert authn.authenticate(None, "Bearer 123456") is None


def test_bearer_token_header_parsing() -> None:
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("Bearer abc extra") == "abc"
    assert bearer_token("Bearer") is None
    assert bearer_token(None) is None
    assert bearer_token("Token abc") is None
