"""Authentication as the kubelet does it with ``anonymous: false``, ``webhook: true`` and
``x509.clientCAFile``.

The kubelet builds a union of authenticators wrapped in a group adder: a client certificate verified
against the client CA gives user = CN and groups = O; otherwise a bearer token is reviewed (the
TokenReview webhook; here :class:`TokenIssuer` stands in for the apiserver). Every authenticated user
also gets ``system:authenticated``. With anonymous auth enabled, a request with *no* credentials
becomes ``system:anonymous`` / ``system:unauthenticated``, but a request with a bad token still
fails: the anonymous authenticator is only reached when the others found nothing to check
(``union.NewFailOnError``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from kubescrape.emulator.tokens import TokenIssuer

UNAUTHORIZED_BODY = b"Unauthorized"
# go-restful's WriteErrorString sets no Content-Type; Go's net/http sniffs the body and sends this.
TEXT_PLAIN = "text/plain; charset=utf-8"
AUTHENTICATED = "system:authenticated"
ANONYMOUS_USER = "system:anonymous"
UNAUTHENTICATED = "system:unauthenticated"

__all__ = [
    "ANONYMOUS_USER",
    "AUTHENTICATED",
    "TEXT_PLAIN",
    "UNAUTHENTICATED",
    "UNAUTHORIZED_BODY",
    "Authenticator",
    "UserInfo",
    "user_from_peercert",
]


class UserInfo(NamedTuple):
    """Who made the request, and how we know."""

    name: str
    groups: tuple[str, ...]
    method: str  # "x509", "token" or "anonymous"


def user_from_peercert(peercert: Mapping[str, Any] | None) -> tuple[str, tuple[str, ...]] | None:
    """``(CN, O…)`` from a verified peer certificate as :meth:`ssl.SSLSocket.getpeercert` returns it."""
    if not peercert:
        return None
    cn = ""
    orgs: list[str] = []
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                cn = value
            elif key == "organizationName":
                orgs.append(value)
    if not cn:
        return None
    return cn, tuple(orgs)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (``""`` for an empty one)."""
    if not authorization:
        return None
    parts = authorization.split(" ", 2)
    if len(parts) < 2 or parts[0].lower() != "bearer":
        return None
    return parts[1].strip()


class Authenticator:
    """x509 → bearer token → (optionally) anonymous."""

    def __init__(self, tokens: TokenIssuer, *, anonymous: bool = False) -> None:
        self.tokens = tokens
        self.anonymous = anonymous

    def authenticate(self, peercert: Mapping[str, Any] | None, authorization: str | None) -> UserInfo | None:
        """The user of a request, or ``None`` (answer 401)."""
        cert_user = user_from_peercert(peercert)
        if cert_user is not None:
            name, groups = cert_user
            return UserInfo(name, _with_authenticated(groups), "x509")
        token = bearer_token(authorization)
        if token is not None:
            if not token:
                return None
            verified = self.tokens.verify(token)
            if verified is None:
                return None
            name, groups = verified
            return UserInfo(name, _with_authenticated(groups), "token")
        if self.anonymous:
            return UserInfo(ANONYMOUS_USER, (UNAUTHENTICATED,), "anonymous")
        return None


def _with_authenticated(groups: tuple[str, ...]) -> tuple[str, ...]:
    return groups if AUTHENTICATED in groups else (*groups, AUTHENTICATED)
