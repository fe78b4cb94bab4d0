"""Signed bearer tokens (JWT) and the key that signs them.

The key is an EC P-256 (ES256) or RSA (RS256, at least 2048 bits) private key in PEM: the
file ``auth.token.signing_key_file`` names, or one generated on first start into
``<data_dir>/auth/token-signing-key.pem`` with mode 0600. Replicas behind one load balancer
must share the key file.

Access tokens carry the claims of the docker token spec (``iss``, ``sub``, ``aud``, ``exp``,
``nbf``, ``iat``, ``jti``, ``access``); ``use`` tells them apart from refresh tokens, which
carry no access. Both carry a fingerprint of an htpasswd user's password entry (``fpr``): a
changed password or a removed user ends them. Verification accepts exactly the key's own
algorithm, so ``none`` and HS256-signed-with-the-public-key forgeries fail; the issuer,
audience and expiry are required and checked.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import logging
import os
import secrets
import stat
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ecr_model.private_files import NotPrivate, open_read, private_dir
from gateway.auth.scopes import Scope
from gateway.config.secret_files import warn_if_readable_by_others

log = logging.getLogger(__name__)

GENERATED_KEY = Path("auth") / "token-signing-key.pem"
LEEWAY_SECONDS = 2


class InvalidToken(Exception):
    """Not a token this gateway issued, or no longer valid; the message says why."""


@dataclass(frozen=True)
class SigningKey:
    private: Any  # ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    algorithm: str
    kid: str

    @property
    def public(self) -> Any:
        return self.private.public_key()

    def public_pem(self) -> bytes:
        data: bytes = self.public.public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
        return data

    @classmethod
    def from_pem(cls, data: bytes, source: str = "key") -> SigningKey:
        try:
            private = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{source} is not an unencrypted PEM private key: {exc}") from None
        if isinstance(private, ec.EllipticCurvePrivateKey):
            if not isinstance(private.curve, ec.SECP256R1):
                raise ValueError(f"{source}: EC keys must be P-256 (ES256)")
            algorithm = "ES256"
        elif isinstance(private, rsa.RSAPrivateKey):
            if private.key_size < 2048:
                raise ValueError(f"{source}: RSA keys must have at least 2048 bits")
            algorithm = "RS256"
        else:
            raise ValueError(f"{source}: only EC P-256 and RSA keys can sign tokens")
        der = private.public_key().public_bytes(serialization.Encoding.DER,
                                                serialization.PublicFormat.SubjectPublicKeyInfo)
        kid = base64.urlsafe_b64encode(hashlib.sha256(der).digest()[:24]).decode().rstrip("=")
        return cls(private, algorithm, kid)


def load_signing_key(configured: str | None, data_dir: Path) -> SigningKey:
    """The configured key file, or the generated one (created with 0600 if missing)."""
    if configured:
        path = Path(configured)
        warn_if_readable_by_others(path, "token-signing key")
        return SigningKey.from_pem(path.read_bytes(), str(path))
    path = data_dir / GENERATED_KEY
    # Whoever could put a key there would sign tokens this gateway honours: the folder must
    # be this user's (NotPrivate if it is a link or another user's), as must the file.
    private_dir(path.parent)
    if not path.exists():
        pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption())
        temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temp, path)  # never replaces a key another process made meanwhile
        except FileExistsError:
            pass
        finally:
            temp.unlink()
        log.info("generated a token-signing key in %s", path)
    warn_if_readable_by_others(path, "token-signing key")
    return SigningKey.from_pem(_read_own_file(path), str(path))


def _read_own_file(path: Path) -> bytes:
    """The bytes of ``path``, a plain file of this user's (checked on the open file, so a
    swap after the check does not count), made 0600 if it was open to others (a volume's
    group rights)."""
    try:
        fd = open_read(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotPrivate(f"{path} is a symbolic link") from None
        raise
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
            raise NotPrivate(f"{path} is not a plain file of this user's")
        if stat.S_IMODE(info.st_mode) & 0o077:
            os.fchmod(handle.fileno(), 0o600)
        return handle.read()


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires_in: int
    issued_at: float

    def issued_at_rfc3339(self) -> str:
        return datetime.fromtimestamp(self.issued_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class AccessClaims:
    subject: str | None  # None: issued to an anonymous caller
    access: frozenset[tuple[str, str, str]]  # (type, name, action)
    identity: str | None = None  # auth.mode aws: the caller's in-memory AWS identity
    expires_at: float = 0.0
    fingerprint: str | None = None  # htpasswd: the user's password entry when issued

    def allows(self, scope: Scope) -> bool:
        return all((scope.type, scope.name, action) in self.access for action in scope.actions)


@dataclass(frozen=True)
class RefreshClaims:
    subject: str
    fingerprint: str


@dataclass
class TokenService:
    key: SigningKey
    issuer: str
    service: str
    ttl: int = 300
    refresh_ttl: int = 14 * 86400
    clock: Any = field(default=time.time)

    def issue_access(self, subject: str | None, scopes: list[Scope],
                     identity: str | None = None,
                     fingerprint: str | None = None) -> IssuedToken:
        now = int(self.clock())
        claims: dict[str, Any] = {
            **self._base(now, self.ttl), "sub": subject or "", "use": "access",
            "access": [scope.to_claim() for scope in scopes],
        }
        if identity is not None:
            claims["idn"] = identity
        if fingerprint is not None:
            claims["fpr"] = fingerprint
        return IssuedToken(self._sign(claims), self.ttl, now)

    def issue_refresh(self, subject: str, fingerprint: str) -> str:
        now = int(self.clock())
        claims = {**self._base(now, self.refresh_ttl), "sub": subject, "use": "refresh",
                  "fpr": fingerprint}
        return self._sign(claims)

    def verify_access(self, token: str) -> AccessClaims:
        claims = self._decode(token, "access")
        access: set[tuple[str, str, str]] = set()
        entries = claims.get("access")
        if not isinstance(entries, list):
            raise InvalidToken("the token has no access list")
        for entry in entries:
            if not isinstance(entry, dict):
                raise InvalidToken("malformed access entry")
            kind, name, actions = entry.get("type"), entry.get("name"), entry.get("actions")
            if not isinstance(kind, str) or not isinstance(name, str) or \
                    not isinstance(actions, list):
                raise InvalidToken("malformed access entry")
            access.update((kind, name, str(action)) for action in actions)
        identity, fingerprint = claims.get("idn"), claims.get("fpr")
        return AccessClaims(claims["sub"] or None, frozenset(access),
                            identity if isinstance(identity, str) else None,
                            float(claims["exp"]),
                            fingerprint if isinstance(fingerprint, str) else None)

    def verify_refresh(self, token: str) -> RefreshClaims:
        claims = self._decode(token, "refresh")
        fingerprint = claims.get("fpr")
        if not claims["sub"] or not isinstance(fingerprint, str):
            raise InvalidToken("malformed refresh token")
        return RefreshClaims(claims["sub"], fingerprint)

    def _base(self, now: int, ttl: int) -> dict[str, Any]:
        return {"iss": self.issuer, "aud": self.service, "iat": now, "nbf": now,
                "exp": now + ttl, "jti": secrets.token_urlsafe(16)}

    def _sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self.key.private, algorithm=self.key.algorithm,
                          headers={"kid": self.key.kid, "typ": "JWT"})

    def _decode(self, token: str, use: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
            if header.get("alg") != self.key.algorithm:
                raise InvalidToken(f"algorithm {header.get('alg')!r} is not accepted")
            claims: dict[str, Any] = jwt.decode(
                token, self.key.public, algorithms=[self.key.algorithm],
                audience=self.service, issuer=self.issuer, leeway=LEEWAY_SECONDS,
                options={"require": ["iss", "sub", "aud", "exp", "nbf", "iat", "jti"]})
        except jwt.ExpiredSignatureError:
            raise InvalidToken("the token has expired") from None
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"the token is not valid: {exc}") from None
        if claims.get("use") != use or not isinstance(claims.get("sub"), str):
            raise InvalidToken(f"the token is not a {use} token")
        if claims["exp"] < self.clock() - LEEWAY_SECONDS:  # the injected clock decides too
            raise InvalidToken("the token has expired")
        return claims
