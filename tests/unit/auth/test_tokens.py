"""Token signing and verification: round trips, the key file, and forgeries refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import stat
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gateway.auth.scopes import Scope
from gateway.auth.tokens import (
    GENERATED_KEY,
    InvalidToken,
    SigningKey,
    TokenService,
    load_signing_key,
)

PUSH = Scope("repository", "team-a/app", frozenset({"pull", "push"}))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _claims(service: TokenService, **changes: object) -> dict[str, object]:
    token = service.issue_access("alice", [PUSH]).token
    claims: dict[str, object] = jwt.decode(token, options={"verify_signature": False})
    claims.update(changes)
    return claims


def _unsigned(header: dict[str, object], claims: dict[str, object]) -> str:
    return (_b64(json.dumps(header).encode()) + "." + _b64(json.dumps(claims).encode()))


@pytest.fixture
def service(tmp_path: Path) -> TokenService:
    return TokenService(load_signing_key(None, tmp_path), "ecr-gateway", "ecr-gateway")


def test_round_trip_carries_subject_and_access(service: TokenService) -> None:
    issued = service.issue_access("alice", [PUSH])
    claims = service.verify_access(issued.token)
    assert claims.subject == "alice"
    assert claims.allows(Scope("repository", "team-a/app", frozenset({"push"})))
    assert not claims.allows(Scope("repository", "team-a/app", frozenset({"delete"})))
    assert not claims.allows(Scope("repository", "team-b/app", frozenset({"pull"})))
    assert issued.expires_in == 300
    assert issued.issued_at_rfc3339().endswith("Z")


def test_generated_key_is_private_and_reused(tmp_path: Path) -> None:
    first = load_signing_key(None, tmp_path)
    path = tmp_path / GENERATED_KEY
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert first.algorithm == "ES256"
    second = load_signing_key(None, tmp_path)
    assert second.kid == first.kid  # the same key after a restart: old tokens stay valid


def test_configured_rsa_key_signs_rs256(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / "rsa.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)
    service = TokenService(load_signing_key(str(path), tmp_path), "i", "s")
    token = service.issue_access("alice", [PUSH]).token
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    assert service.verify_access(token).subject == "alice"


def test_weak_or_unsupported_keys_are_refused() -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    p384 = ec.generate_private_key(ec.SECP384R1())
    for key in (small, p384):
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        with pytest.raises(ValueError):
            SigningKey.from_pem(pem)
    with pytest.raises(ValueError):
        SigningKey.from_pem(b"not a key")


def test_token_signed_by_another_key_is_refused(service: TokenService, tmp_path: Path) -> None:
    other = TokenService(load_signing_key(None, tmp_path / "other"), "ecr-gateway",
                         "ecr-gateway")
    with pytest.raises(InvalidToken):
        service.verify_access(other.issue_access("alice", [PUSH]).token)


def test_alg_none_is_refused(service: TokenService) -> None:
    forged = _unsigned({"alg": "none", "typ": "JWT"}, _claims(service)) + "."
    with pytest.raises(InvalidToken, match="algorithm"):
        service.verify_access(forged)


def test_hs256_signed_with_the_public_key_is_refused(service: TokenService) -> None:
    """Algorithm confusion: HMAC keyed with the (public) verification key."""
    public_pem = service.key.public_pem()
    signing_input = _unsigned({"alg": "HS256", "typ": "JWT", "kid": service.key.kid},
                              _claims(service, access=[{"type": "repository", "name": "x",
                                                        "actions": ["push"]}]))
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    with pytest.raises(InvalidToken):
        service.verify_access(signing_input + "." + _b64(signature))


def test_tampered_claims_are_refused(service: TokenService) -> None:
    header, _, signature = service.issue_access("bob", [PUSH]).token.split(".")
    payload = _b64(json.dumps(_claims(service, sub="admin")).encode())
    with pytest.raises(InvalidToken):
        service.verify_access(f"{header}.{payload}.{signature}")


def test_expired_token_is_refused(tmp_path: Path) -> None:
    clock = [1_000_000.0]
    service = TokenService(load_signing_key(None, tmp_path), "i", "s", ttl=60,
                           clock=lambda: clock[0])
    token = service.issue_access("alice", [PUSH]).token
    with pytest.raises(InvalidToken, match="expired"):
        service.verify_access(token)  # issued "long ago" by the test clock: PyJWT's own check
    live = TokenService(service.key, "i", "s", ttl=60)
    fresh = live.issue_access("alice", [PUSH]).token
    live.clock = lambda: 10**10
    with pytest.raises(InvalidToken, match="expired"):
        live.verify_access(fresh)


def test_wrong_audience_or_issuer_is_refused(service: TokenService) -> None:
    other_service = TokenService(service.key, "ecr-gateway", "another-registry")
    other_issuer = TokenService(service.key, "someone-else", "ecr-gateway")
    for forged in (other_service, other_issuer):
        with pytest.raises(InvalidToken):
            service.verify_access(forged.issue_access("alice", [PUSH]).token)


def test_refresh_and_access_tokens_are_not_interchangeable(service: TokenService) -> None:
    refresh = service.issue_refresh("alice", "fp1")
    with pytest.raises(InvalidToken, match="access"):
        service.verify_access(refresh)
    access = service.issue_access("alice", [PUSH]).token
    with pytest.raises(InvalidToken, match="refresh"):
        service.verify_refresh(access)
    claims = service.verify_refresh(refresh)
    assert (claims.subject, claims.fingerprint) == ("alice", "fp1")


def test_missing_access_list_is_refused(service: TokenService) -> None:
    claims = _claims(service)
    del claims["access"]
    token = jwt.encode(claims, service.key.private, algorithm="ES256")
    with pytest.raises(InvalidToken, match="access"):
        service.verify_access(token)
