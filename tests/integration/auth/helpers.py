"""Helpers for the authentication tests: users, a test CA, tokens, raw registry requests."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import bcrypt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess

SERVICE = "ecr-gateway"


def write_htpasswd(path: Path, users: dict[str, str], rounds: int = 4) -> Path:
    """An htpasswd file as ``htpasswd -B`` writes it ($2y$ bcrypt), at a test-friendly cost."""
    lines = []
    for name, password in users.items():
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=rounds)).decode()
        lines.append(f"{name}:$2y${hashed[4:]}")
    path.write_text("\n".join(lines) + "\n")
    return path


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- a test certificate authority ------------------------------------------------------------

def _pem_key(key: Any) -> bytes:
    data: bytes = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    return data


@dataclass
class TestCA:
    __test__ = False  # not a test class
    key: Any
    cert: x509.Certificate
    cert_path: Path

    @classmethod
    def create(cls, folder: Path, name: str = "ecr-gateway test CA") -> TestCA:
        folder.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=2))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(
                    digital_signature=True, key_cert_sign=True, crl_sign=True,
                    content_commitment=False, key_encipherment=False, data_encipherment=False,
                    key_agreement=False, encipher_only=False, decipher_only=False),
                    critical=True)
                .sign(key, hashes.SHA256()))
        path = folder / "ca.crt"
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cls(key, cert, path)

    def issue(self, cert_path: Path, key_path: Path, common_name: str = "127.0.0.1") -> None:
        """A server certificate for 127.0.0.1 and localhost, written to the two paths."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
                .issuer_name(self.cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName([
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.DNSName("localhost")]), critical=False)
                .add_extension(x509.ExtendedKeyUsage([x509.OID_SERVER_AUTH]), critical=False)
                .sign(self.key, hashes.SHA256()))
        key_path.write_bytes(_pem_key(key))
        key_path.chmod(0o600)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


# -- talking to a gateway --------------------------------------------------------------------

def auth_gateway(data_dir: Path, upstream: EmulatorProcess, auth: dict[str, Any],
                 **config: Any) -> GatewayProcess:
    return GatewayProcess(data_dir, {"auth": auth, **config}, upstream_url=upstream.url)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def code(self) -> str:
        return str(self.json()["errors"][0]["code"])


async def request(session: aiohttp.ClientSession, method: str, url: str,
                  headers: dict[str, str] | None = None, data: bytes | None = None,
                  **kwargs: Any) -> Answer:
    async with session.request(method, url, headers=headers or {}, data=data,
                               allow_redirects=False, **kwargs) as r:
        return Answer(r.status, dict(r.headers), await r.read())


async def fetch_token(session: aiohttp.ClientSession, base: str, scopes: list[str],
                      credentials: tuple[str, str] | None = None, **params: str) -> Answer:
    query = [("service", SERVICE), *(("scope", s) for s in scopes), *params.items()]
    headers = basic(*credentials) if credentials else {}
    return await request(session, "GET", f"{base}/token?{urllib.parse.urlencode(query)}",
                         headers)


async def token_for(session: aiohttp.ClientSession, base: str, scopes: list[str],
                    credentials: tuple[str, str] | None = None) -> str:
    answer = await fetch_token(session, base, scopes, credentials)
    assert answer.status == 200, (answer.status, answer.body[:300])
    return str(answer.json()["token"])


def granted(token: str) -> dict[str, set[str]]:
    """The access a token grants, read from its (unverified) claims: "type:name" → actions."""
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return {f"{a['type']}:{a['name']}": set(a["actions"]) for a in claims["access"]}


def parse_challenge(header: str) -> dict[str, str]:
    scheme, _, rest = header.partition(" ")
    assert scheme == "Bearer", header
    params = {}
    for part in _split_params(rest):
        key, _, value = part.partition("=")
        params[key.strip()] = value.strip().strip('"')
    return params


def _split_params(text: str) -> list[str]:
    parts, current, quoted = [], "", False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            parts.append(current)
            current = ""
        else:
            current += char
    if current:
        parts.append(current)
    return parts
