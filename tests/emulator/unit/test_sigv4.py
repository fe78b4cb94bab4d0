"""The emulator's SigV4 verifier against requests signed by botocore, and tampered copies."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from multidict import CIMultiDict

from ecr_emulator import credentials as creds
from ecr_emulator.errors import AwsError
from ecr_emulator.sigv4 import Verifier

KEY, SECRET = "AKIDUNITSIGV4", "unit-secret-value"
TEMP_KEY, TEMP_SECRET, TOKEN = "ASIAUNITTEMP", "temp-secret", "session-token-value"
FILE = f"""
[default]
aws_access_key_id = {KEY}
aws_secret_access_key = {SECRET}

[temporary]
aws_access_key_id = {TEMP_KEY}
aws_secret_access_key = {TEMP_SECRET}
aws_session_token = {TOKEN}
expiration = 2099-01-01T00:00:00Z

[old]
aws_access_key_id = AKIDEXPIRED
aws_secret_access_key = expired-secret
expiration = 2001-01-01T00:00:00Z
"""
BODY = b'{"repositoryName":"team/app","layerPartBlob":"AAAA"}'


@dataclass
class Received:
    method: str
    raw_path: str
    headers: CIMultiDict[str]


def signed(body: bytes = BODY, *, key: str = KEY, secret: str = SECRET,
           token: str | None = None, service: str = "ecr", region: str = "us-east-1",
           path: str = "/", extra: dict[str, str] | None = None) -> Received:
    request = AWSRequest(method="POST", url=f"http://127.0.0.1:4566{path}", data=body,
                         headers={"Content-Type": "application/x-amz-json-1.1",
                                  "X-Amz-Target": "AmazonEC2ContainerRegistry_V20150921."
                                                  "UploadLayerPart", **(extra or {})})
    SigV4Auth(Credentials(key, secret, token), service, region).add_auth(request)
    headers = CIMultiDict(request.headers.items())
    headers["Host"] = "127.0.0.1:4566"
    return Received("POST", path, headers)


def verify(received: Received, body: bytes = BODY, now: float | None = None,
           service: str = "ecr", region: str | None = "us-east-1") -> None:
    store = creds.CredentialStore(creds.parse(FILE))
    verifier = Verifier(store, clock=(lambda: now) if now is not None else time.time)
    pending = verifier.begin(received, service=service, region=region)
    for start in range(0, len(body), 7):  # in pieces, as a streamed body arrives
        pending.update(body[start:start + 7])
    pending.finish()


def code(received: Received, body: bytes = BODY, **kwargs: object) -> str:
    with pytest.raises(AwsError) as info:
        verify(received, body, **kwargs)  # type: ignore[arg-type]
    return info.value.name


def test_botocore_signed_requests_pass() -> None:
    verify(signed())
    verify(signed(key=TEMP_KEY, secret=TEMP_SECRET, token=TOKEN))
    verify(signed(path="/_emulator/requests?action=PutImage&b=x%20y"))
    verify(signed(b""), b"")


def test_a_body_hashed_ahead_in_x_amz_content_sha256_passes_when_it_is_the_body() -> None:
    digest = hashlib.sha256(BODY).hexdigest()
    verify(signed(extra={"X-Amz-Content-SHA256": digest}))


def test_tampering_is_refused() -> None:
    assert code(signed(), BODY.replace(b"AAAA", b"BBBB")) == "InvalidSignatureException"
    assert code(signed(secret="wrong")) == "InvalidSignatureException"
    received = signed()
    received.headers["X-Amz-Target"] = "AmazonEC2ContainerRegistry_V20150921.PutImage"
    assert code(received) == "InvalidSignatureException"
    moved = signed()
    moved.raw_path = "/other"
    assert code(moved) == "InvalidSignatureException"


def test_a_content_sha256_header_that_is_not_the_body_fails() -> None:
    other = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(AwsError) as info:
        verify(signed(extra={"X-Amz-Content-SHA256": other}))
    assert info.value.name == "InvalidSignatureException"
    assert "X-Amz-Content-SHA256" in info.value.message
    # A JSON API never takes an unsigned payload.
    assert code(signed(extra={"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"})) == \
        "InvalidSignatureException"


def test_keys_tokens_and_expiry() -> None:
    assert code(signed(key="AKIDNOBODY")) == "UnrecognizedClientException"
    assert code(signed(key=TEMP_KEY, secret=TEMP_SECRET)) == "UnrecognizedClientException"
    assert code(signed(key=TEMP_KEY, secret=TEMP_SECRET, token="forged")) == \
        "UnrecognizedClientException"
    assert code(signed(token="not-expected")) == "UnrecognizedClientException"
    assert code(signed(key="AKIDEXPIRED", secret="expired-secret")) == "ExpiredTokenException"


def test_clock_skew_and_scope() -> None:
    with pytest.raises(AwsError) as info:
        verify(signed(), now=time.time() + 20 * 60)
    assert info.value.name == "InvalidSignatureException" and info.value.status == 400
    assert info.value.message.startswith("Signature expired:")
    assert code(signed(), now=time.time() - 20 * 60) == "InvalidSignatureException"
    verify(signed(), now=time.time() + 4 * 60)
    # ECR's window is 15 minutes either way (its refusals say "- 15 min."), not SigV4's 5.
    verify(signed(), now=time.time() + 10 * 60)
    verify(signed(), now=time.time() - 10 * 60)
    assert code(signed(), now=time.time() + 16 * 60) == "InvalidSignatureException"
    assert code(signed(region="eu-west-1")) == "InvalidSignatureException"
    verify(signed(region="eu-west-1"), region=None)  # any region, when it is one
    assert code(signed(region="mars"), region=None) == "InvalidSignatureException"
    assert code(signed(), service="ecr-public") == "InvalidSignatureException"


def test_malformed_or_missing_authorization() -> None:
    received = signed()
    del received.headers["Authorization"]
    with pytest.raises(AwsError) as info:
        verify(received)
    assert (info.value.name, info.value.status) == ("MissingAuthenticationTokenException", 403)
    for broken in ("AWS4-HMAC-SHA256 Credential=AKIDUNITSIGV4/20240101/us-east-1/ecr/"
                   "aws4_request, SignedHeaders=host", "Bearer abc",
                   "AWS4-HMAC-SHA256 Credential=x, SignedHeaders=host, Signature=" + "0" * 64):
        received = signed()
        received.headers["Authorization"] = broken
        assert code(received) == "IncompleteSignatureException", broken


def test_credentials_file_errors_and_reload(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="aws_secret_access_key"):
        creds.parse("[p]\naws_access_key_id = A\n")
    with pytest.raises(ValueError, match="ISO 8601"):
        creds.parse("[p]\naws_access_key_id = A\naws_secret_access_key = s\nexpiration = soon\n")
    with pytest.raises(ValueError, match="twelve digits"):
        creds.parse("[p]\naws_access_key_id = A\naws_secret_access_key = s\n"
                    "aws_account_id = 1234\n")
    (other,) = creds.parse("[p]\naws_access_key_id = A\naws_secret_access_key = s\n"
                           "aws_account_id = 210987654321\n").values()
    assert other.account_id == "210987654321"
    path = tmp_path / "credentials"
    path.write_text("[a]\naws_access_key_id = AKIDA\naws_secret_access_key = s\n")
    store = creds.CredentialStore.from_file(path)
    assert store.lookup("AKIDB") is None
    path.write_text(path.read_text() + "[b]\naws_access_key_id = AKIDB\n"
                    "aws_secret_access_key = second-secret\n")
    found = store.lookup("AKIDB")
    assert found is not None and found.secret_access_key == "second-secret"
    assert "second-secret" not in repr(found)


def test_a_key_taken_out_of_the_file_is_refused_a_moment_later(tmp_path: Path) -> None:
    """As IAM refuses a deleted key: no unknown key needs to show up first."""
    path = tmp_path / "credentials"
    both = ("[a]\naws_access_key_id = AKIDA\naws_secret_access_key = s\n"
            "[b]\naws_access_key_id = AKIDB\naws_secret_access_key = t\n")
    path.write_text(both)
    now = [100.0]
    store = creds.CredentialStore(creds.parse(both), path, clock=lambda: now[0])
    path.write_text("[a]\naws_access_key_id = AKIDA\naws_secret_access_key = s\n")
    assert store.lookup("AKIDB") is not None  # the file is looked at once a second
    now[0] += creds.RECHECK_SECONDS
    assert store.lookup("AKIDB") is None
    assert store.lookup("AKIDA") is not None


def test_a_signed_header_missing_from_the_request_is_a_signature_error() -> None:
    """Not a crash (a 500 a client retries): the signature cannot cover what is not sent."""
    for name in ("Content-Type", "X-Amz-Target"):
        received = signed()
        del received.headers[name]
        assert code(received) == "InvalidSignatureException", name


class _HostAndDateOnly(SigV4Auth):
    def headers_to_sign(self, request: AWSRequest) -> Any:
        headers = super().headers_to_sign(request)
        for name in set(headers.keys()) - {"host", "x-amz-date"}:
            del headers[name]
        return headers


def test_the_action_and_the_date_must_be_signed() -> None:
    """A signature that leaves X-Amz-Target out could be replayed as any other action."""
    request = AWSRequest(method="POST", url="http://127.0.0.1:4566/", data=BODY,
                         headers={"Content-Type": "application/x-amz-json-1.1",
                                  "X-Amz-Target": "AmazonEC2ContainerRegistry_V20150921."
                                                  "DescribeRepositories"})
    _HostAndDateOnly(Credentials(KEY, SECRET), "ecr", "us-east-1").add_auth(request)
    assert "x-amz-target" not in request.headers["Authorization"]
    received = Received("POST", "/", CIMultiDict(request.headers.items()))
    received.headers["Host"] = "127.0.0.1:4566"
    assert code(received) == "InvalidSignatureException"


def test_a_date_not_in_basic_format_is_incomplete() -> None:
    received = signed()
    stamp = received.headers["X-Amz-Date"]
    received.headers["X-Amz-Date"] = stamp[:9] + "124Z"  # hour and minute, unpadded
    assert code(received) == "IncompleteSignatureException"


def test_a_query_parameter_added_after_signing_breaks_the_signature() -> None:
    for query in ("?X-Amz-Signature=" + "d" * 64, "?extra=1"):
        received = signed()
        received.raw_path = "/" + query
        assert code(received) == "InvalidSignatureException", query
