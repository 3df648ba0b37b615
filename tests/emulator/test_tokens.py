from __future__ import annotations

import asyncio
import base64
import json
import stat
from pathlib import Path

from kubescrape.emulator.tokens import ServiceAccountRef, TokenIssuer, TokenStore
from kubescrape.testing import FakeClock


def test_issue_verify_roundtrip_and_claims() -> None:
    clock = FakeClock()
    issuer = TokenIssuer.generate(clock=clock)
    token = issuer.issue("flashcat", "categraf-daemonset", 3600)
    user, groups = issuer.verify(token) or ("", ())
    assert user == "system:serviceaccount:flashcat:categraf-daemonset"
    assert groups == ("system:serviceaccounts", "system:serviceaccounts:flashcat", "system:authenticated")
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header == {"alg": "ES256", "kid": issuer.kid}
    claims = TokenIssuer.claims(token)
    assert claims["sub"] == user
    assert claims["exp"] - claims["iat"] == 3600
    assert claims["nbf"] == claims["iat"] == int(clock.time())
    assert claims["kubernetes.io"]["namespace"] == "flashcat"
    assert claims["kubernetes.io"]["serviceaccount"]["name"] == "categraf-daemonset"
    assert claims["aud"] == [claims["iss"]]


def test_expired_and_not_yet_valid_tokens_are_rejected() -> None:
    clock = FakeClock()
    issuer = TokenIssuer.generate(clock=clock)
    token = issuer.issue("default", "sa", 60)
    assert issuer.verify(token) is not None
    clock.advance(61)
    assert issuer.verify(token) is None  # cached signature, but exp is checked every time
    future = issuer.issue("default", "sa", 60)
    clock.advance(-120)
    assert issuer.verify(future) is None


def test_tampered_and_foreign_tokens_are_rejected() -> None:
    issuer = TokenIssuer.generate()
    other = TokenIssuer.generate()
    token = issuer.issue("default", "sa", 60)
    head, _payload, sig = token.split(".")
    claims = TokenIssuer.claims(token)
    claims["sub"] = "system:serviceaccount:kube-system:admin"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    assert issuer.verify(f"{head}.{forged}.{sig}") is None
    assert issuer.verify(other.issue("default", "sa", 60)) is None
    for junk in ("", "abc", "a.b.c", "123456", token + "x"):
        assert issuer.verify(junk) is None


def test_signing_key_persists(tmp_path: Path) -> None:
    a = TokenIssuer.load_or_create(tmp_path / "sa.key")
    assert stat.S_IMODE((tmp_path / "sa.key").stat().st_mode) == 0o600
    b = TokenIssuer.load_or_create(tmp_path / "sa.key")
    assert a.kid == b.kid
    assert b.verify(a.issue("default", "x", 60)) is not None


def test_store_writes_reuses_and_rotates(tmp_path: Path) -> None:
    clock = FakeClock()
    issuer = TokenIssuer.generate(clock=clock)
    accounts = [ServiceAccountRef("flashcat", "categraf-daemonset"), ServiceAccountRef("default", "unbound")]
    store = TokenStore(tmp_path / "tokens", issuer, accounts, ttl=100)
    store.ensure()
    path = store.path("flashcat", "categraf-daemonset")
    first = path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert (tmp_path / "tokens" / "default" / "unbound").exists()
    # a second start-up reuses valid tokens
    TokenStore(tmp_path / "tokens", issuer, accounts, ttl=100).ensure()
    assert path.read_text() == first
    assert store.next_refresh() == clock.time() + 80
    clock.advance(50)
    assert store.rotate_due() == 0
    clock.advance(31)
    assert store.rotate_due() == 2
    second = path.read_text()
    assert second != first
    assert issuer.verify(second) is not None
    clock.advance(40)  # the first token has expired by now, the rotated one has not
    assert issuer.verify(first) is None
    assert issuer.verify(second) is not None


async def test_rotate_forever_rewrites_before_expiry(tmp_path: Path) -> None:
    clock = FakeClock()
    issuer = TokenIssuer.generate(clock=clock)
    store = TokenStore(tmp_path, issuer, [ServiceAccountRef("default", "a")], ttl=10)
    store.ensure()
    seen = set()
    task = asyncio.create_task(store.rotate_forever())
    for _ in range(200):
        await asyncio.sleep(0)
        seen.add(store.path("default", "a").read_text())
        if store.rotations >= 3:
            break
    task.cancel()
    assert store.rotations >= 3
    assert len(seen) >= 3
    # every token it ever wrote was still valid when it was replaced: rotation at 80 % of the TTL
    assert all(c <= 8.0 + 1e-6 for c in clock.slept if c > 0.05)
