"""ServiceAccount tokens shaped like the ones Kubernetes projects into pods.

A token is a JWS (ES256) whose claims follow the bound ServiceAccount token format
(``iss``/``aud``/``exp``/``iat``/``nbf``, ``sub=system:serviceaccount:<ns>:<name>`` and the
``kubernetes.io`` claim with namespace and ServiceAccount name/uid); the header's ``kid`` is the
base64url SHA-256 of the signing key's DER public key, as the apiserver computes it. The emulator
verifies tokens itself, standing in for the kubelet's TokenReview webhook: a bad signature, a token
that is expired or not yet valid, or another issuer's token is simply not authenticated.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from kubescrape.clock import SYSTEM_CLOCK, Clock
from kubescrape.emulator.pki import write_private
from kubescrape.errors import TLSConfigError

ISSUER = "https://kubernetes.default.svc.cluster.local"
SA_PREFIX = "system:serviceaccount:"

__all__ = ["ISSUER", "ServiceAccountRef", "TokenIssuer", "service_account_user"]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def service_account_user(namespace: str, name: str) -> str:
    """The user name Kubernetes gives a ServiceAccount: ``system:serviceaccount:<ns>:<name>``."""
    return f"{SA_PREFIX}{namespace}:{name}"


@dataclass(frozen=True)
class ServiceAccountRef:
    """A ServiceAccount: namespace, name and a stable uid."""

    namespace: str
    name: str
    uid: str = ""

    @property
    def user(self) -> str:
        return service_account_user(self.namespace, self.name)

    @property
    def groups(self) -> tuple[str, ...]:
        """The groups a ServiceAccount's TokenReview answers with."""
        return ("system:serviceaccounts", f"system:serviceaccounts:{self.namespace}", "system:authenticated")


class TokenIssuer:
    """Signs and verifies ServiceAccount tokens with one EC P-256 key.

    Verification results are cached per token string (the signature check is the only costly part);
    the time checks (``exp``/``nbf``) run on every call against the injected clock.
    """

    def __init__(self, key: ec.EllipticCurvePrivateKey, *, clock: Clock = SYSTEM_CLOCK,
                 issuer: str = ISSUER, leeway: float = 0.0) -> None:
        self._key = key
        self._public = key.public_key()
        self.clock = clock
        self.issuer = issuer
        self.leeway = leeway
        der = self._public.public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
        self.kid = _b64(hashlib.sha256(der).digest())
        self._header = _b64(json.dumps({"alg": "ES256", "kid": self.kid}, separators=(",", ":")).encode())
        # token -> (claims) for tokens whose signature and issuer were verified once
        self._verified: dict[str, dict[str, Any]] = {}

    @classmethod
    def generate(cls, *, clock: Clock = SYSTEM_CLOCK) -> TokenIssuer:
        """A new issuer with a fresh key."""
        return cls(ec.generate_private_key(ec.SECP256R1()), clock=clock)

    @classmethod
    def load_or_create(cls, key_path: str | os.PathLike[str], *, clock: Clock = SYSTEM_CLOCK) -> TokenIssuer:
        """Load the signing key from ``key_path``, creating it (mode 0600) if it does not exist."""
        path = Path(key_path)
        if path.exists():
            try:
                key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            except (OSError, ValueError) as e:
                raise TLSConfigError(f"cannot load the token signing key {path}: {e}",
                                     "delete it (and the token files) to generate a new key") from e
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise TLSConfigError(f"the token signing key {path} is not an EC key",
                                     "delete it (and the token files) to generate a new key")
            return cls(key, clock=clock)
        issuer = cls.generate(clock=clock)
        write_private(path, issuer._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        return issuer

    def issue(self, namespace: str, name: str, ttl: float, *, uid: str = "") -> str:
        """A token for ServiceAccount ``namespace/name`` valid for ``ttl`` seconds from now."""
        now = int(self.clock.time())
        sa_uid = uid or str(uuid.uuid5(uuid.NAMESPACE_URL, f"serviceaccount:{namespace}/{name}"))
        claims = {
            "aud": [self.issuer],
            "exp": now + max(1, int(ttl)),
            "iat": now,
            "iss": self.issuer,
            "jti": str(uuid.uuid4()),
            "kubernetes.io": {
                "namespace": namespace,
                "serviceaccount": {"name": name, "uid": sa_uid},
            },
            "nbf": now,
            "sub": service_account_user(namespace, name),
        }
        payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
        signing_input = f"{self._header}.{payload}".encode("ascii")
        der = self._key.sign(signing_input, ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return f"{self._header}.{payload}.{_b64(sig)}"

    def _check_signature(self, token: str) -> dict[str, Any] | None:
        parts = token.split(".")
        if len(parts) != 3:
            return None
        try:
            header = json.loads(_unb64(parts[0]))
            claims = json.loads(_unb64(parts[1]))
            sig = _unb64(parts[2])
        except (ValueError, UnicodeDecodeError):
            return None
        if not isinstance(header, dict) or header.get("alg") != "ES256" or len(sig) != 64:
            return None
        if not isinstance(claims, dict):
            return None
        der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
        try:
            self._public.verify(der, f"{parts[0]}.{parts[1]}".encode("ascii"), ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            return None
        if claims.get("iss") != self.issuer:
            return None
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub.startswith(SA_PREFIX) or sub.count(":") != 3:
            return None
        return claims

    def verify(self, token: str) -> tuple[str, tuple[str, ...]] | None:
        """``(user, groups)`` for a valid token, or ``None`` (bad signature, expired, not yet valid)."""
        claims = self._verified.get(token)
        if claims is None:
            claims = self._check_signature(token)
            if claims is None:
                return None
            if len(self._verified) > 10_000:
                self._verified.clear()
            self._verified[token] = claims
        now = self.clock.time()
        exp = claims.get("exp")
        nbf = claims.get("nbf")
        if isinstance(exp, int | float) and now > exp + self.leeway:
            return None
        if isinstance(nbf, int | float) and now + self.leeway < nbf:
            return None
        _, _, namespace, name = claims["sub"].split(":")
        ref = ServiceAccountRef(namespace, name)
        return ref.user, ref.groups

    @staticmethod
    def claims(token: str) -> dict[str, Any]:
        """The unverified claims of ``token`` (for display and tests)."""
        parsed: dict[str, Any] = json.loads(_unb64(token.split(".")[1]))
        return parsed


DEFAULT_TTL = 365 * 24 * 3600.0
# Kubelet refreshes projected tokens once 80 % of their lifetime has passed; do the same.
REFRESH_FRACTION = 0.8


class TokenStore:
    """One token file per ServiceAccount under ``root/<namespace>/<name>``, rotated before expiry.

    Files are rewritten atomically (temp file + rename) so a scraper that re-reads its
    ``bearer_token_file`` never sees a partial token.
    """

    def __init__(self, root: str | os.PathLike[str], issuer: TokenIssuer,
                 accounts: list[ServiceAccountRef], *, ttl: float = 0.0) -> None:
        self.root = Path(root)
        self.issuer = issuer
        self.accounts = list(dict.fromkeys(accounts))
        self.ttl = ttl if ttl > 0 else DEFAULT_TTL
        self._expires: dict[ServiceAccountRef, float] = {}
        self.rotations = 0

    def path(self, namespace: str, name: str) -> Path:
        """Where the token of ServiceAccount ``namespace/name`` is written."""
        return self.root / namespace / name

    def _write(self, sa: ServiceAccountRef) -> None:
        token = self.issuer.issue(sa.namespace, sa.name, self.ttl, uid=sa.uid)
        write_private(self.path(sa.namespace, sa.name), token.encode("ascii"), 0o600)
        self._expires[sa] = self.issuer.claims(token)["exp"]

    def _still_good(self, sa: ServiceAccountRef) -> bool:
        """True when the existing file holds a token of ours that need not be refreshed yet."""
        try:
            token = self.path(sa.namespace, sa.name).read_text().strip()
        except OSError:
            return False
        if self.issuer.verify(token) is None:
            return False
        claims = self.issuer.claims(token)
        lifetime = float(claims["exp"]) - float(claims["iat"])
        if lifetime > self.ttl + 1:
            return False  # issued with a longer TTL than now configured
        refresh_at = float(claims["iat"]) + REFRESH_FRACTION * lifetime
        if self.issuer.clock.time() >= refresh_at:
            return False
        self._expires[sa] = float(claims["exp"])
        return True

    def ensure(self) -> None:
        """Write every token file that is missing, invalid, or due for refresh; keep the others."""
        for sa in self.accounts:
            if not self._still_good(sa):
                self._write(sa)

    def next_refresh(self) -> float:
        """Wall-clock time at which the earliest token is due for refresh."""
        due = [exp - (1 - REFRESH_FRACTION) * self.ttl for exp in self._expires.values()]
        return min(due) if due else self.issuer.clock.time() + self.ttl

    def rotate_due(self) -> int:
        """Re-issue the tokens due for refresh; returns how many were rewritten."""
        now = self.issuer.clock.time()
        n = 0
        for sa in self.accounts:
            exp = self._expires.get(sa)
            if exp is None or now >= exp - (1 - REFRESH_FRACTION) * self.ttl:
                self._write(sa)
                n += 1
        self.rotations += n
        return n

    async def rotate_forever(self) -> None:
        """Keep rotating tokens before they expire (run as a task; cancel to stop)."""
        clock = self.issuer.clock
        while True:
            await clock.sleep(max(0.05, self.next_refresh() - clock.time()))
            self.rotate_due()
