"""The emulator with credentials refuses what AWS refuses, with AWS's error codes, and keeps
its control endpoints to its own keys."""

from __future__ import annotations

import asyncio
import datetime
import http.client
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from tests.support.emulator import EmulatorProcess, aws_client, ecr_client, new_access_key

ONCE: dict[str, Any] = {"retries": {"total_max_attempts": 1}}


async def refused(client: Any, call: str = "describe_repositories", **params: Any) -> str:
    """The botocore error code a call fails with."""
    with pytest.raises(ClientError) as info:
        await getattr(client, call)(**params)
    code: str = info.value.response["Error"]["Code"]
    return code


async def test_wrong_secret_and_unknown_key(shared_emulator: EmulatorProcess) -> None:
    url = shared_emulator.url
    async with ecr_client(url, access_key_id=shared_emulator.access_key_id,
                          secret_access_key="not-the-secret", **ONCE) as ecr:
        assert await refused(ecr) == "InvalidSignatureException"
    async with ecr_client(url, access_key_id="AKIDNOBODYKNOWS", secret_access_key="x",
                          **ONCE) as ecr:
        with pytest.raises(ecr.exceptions.ClientError) as info:
            await ecr.describe_repositories()
        error = info.value.response
        assert error["Error"]["Code"] == "UnrecognizedClientException"
        assert error["ResponseMetadata"]["HTTPStatusCode"] == 400
    # The same for ECR Public, on the same route.
    async with aws_client("ecr-public", url, access_key_id=shared_emulator.access_key_id,
                          secret_access_key="not-the-secret", **ONCE) as public:
        assert await refused(public, "describe_registries") == "InvalidSignatureException"
    async with ecr_client(url, **ONCE) as ecr:  # the right ones pass
        await ecr.describe_repositories()


async def test_a_tampered_body_is_refused_and_nothing_is_stored(
        shared_emulator: EmulatorProcess, repo: str) -> None:
    async with ecr_client(shared_emulator.url, **ONCE) as ecr:
        def tamper(request: Any, **_: Any) -> None:
            request.body = request.body.replace(repo.encode(), repo[:-1].encode() + b"x")

        ecr.meta.events.register("before-send.ecr.CreateRepository", tamper)
        assert await refused(ecr, "create_repository", repositoryName=repo) == \
            "InvalidSignatureException"
        ecr.meta.events.unregister("before-send.ecr.CreateRepository", tamper)
        tampered = repo[:-1] + "x"
        assert await refused(ecr, "describe_repositories", repositoryNames=[tampered]) == \
            "RepositoryNotFoundException"


async def test_a_part_whose_content_sha256_is_not_its_body_is_refused(
        shared_emulator: EmulatorProcess, repo: str) -> None:
    """The header botocore trusts for the payload hash must be the body's hash."""
    async with ecr_client(shared_emulator.url, **ONCE) as ecr:
        await ecr.create_repository(repositoryName=repo)
        upload = (await ecr.initiate_layer_upload(repositoryName=repo))["uploadId"]

        def lie(request: Any, **_: Any) -> None:
            request.headers["X-Amz-Content-SHA256"] = "0" * 64

        def unsigned(request: Any, **_: Any) -> None:
            request.headers["X-Amz-Content-SHA256"] = "UNSIGNED-PAYLOAD"

        for hook in (lie, unsigned):
            ecr.meta.events.register("before-sign.ecr.UploadLayerPart", hook)
            assert await refused(ecr, "upload_layer_part", repositoryName=repo,
                                 uploadId=upload, partFirstByte=0, partLastByte=3,
                                 layerPartBlob=b"abcd") == "InvalidSignatureException"
            ecr.meta.events.unregister("before-sign.ecr.UploadLayerPart", hook)
        answer = await ecr.upload_layer_part(repositoryName=repo, uploadId=upload,
                                             partFirstByte=0, partLastByte=3,
                                             layerPartBlob=b"abcd")
        assert answer["lastByteReceived"] == 3  # nothing of the refused parts was kept


async def test_a_signature_twenty_minutes_old_is_expired(
        shared_emulator: EmulatorProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    then = datetime.datetime.now(datetime.UTC).replace(tzinfo=None) - datetime.timedelta(
        minutes=20)
    monkeypatch.setattr("botocore.auth.get_current_datetime",
                        lambda remove_tzinfo=True: then)
    async with ecr_client(shared_emulator.url, **ONCE) as ecr:
        with pytest.raises(ClientError) as info:
            await ecr.describe_repositories()
    error = info.value.response["Error"]
    assert error["Code"] == "InvalidSignatureException"
    assert error["Message"].startswith("Signature expired:")


async def test_session_tokens_and_expiry(shared_emulator: EmulatorProcess) -> None:
    url = shared_emulator.url
    temporary, token = new_access_key("ASIA"), "token-" + new_access_key()
    secret = shared_emulator.add_key(temporary, session_token=token,
                                     expiration="2099-01-01T00:00:00Z")
    async with ecr_client(url, access_key_id=temporary, secret_access_key=secret,
                          session_token=token, **ONCE) as ecr:
        await ecr.describe_repositories()
    for wrong in (None, "forged-token"):
        async with ecr_client(url, access_key_id=temporary, secret_access_key=secret,
                              session_token=wrong, **ONCE) as ecr:
            assert await refused(ecr) == "UnrecognizedClientException"
    old = new_access_key("ASIA")
    old_secret = shared_emulator.add_key(old, session_token=token,
                                         expiration="2020-01-01T00:00:00Z")
    async with ecr_client(url, access_key_id=old, secret_access_key=old_secret,
                          session_token=token, **ONCE) as ecr:
        assert await refused(ecr) == "ExpiredTokenException"


async def test_a_deleted_key_stops_working_without_another_key_being_used(
        emulator: EmulatorProcess) -> None:
    """IAM refuses a deleted key within seconds; the emulator read its file again only when
    an unknown key showed up, so a key taken out of the file (a leaked one, say) kept
    working for as long as no new key was used."""
    key = new_access_key("AKIDDELETED")
    secret = emulator.add_key(key)
    async with ecr_client(emulator.url, access_key_id=key, secret_access_key=secret,
                          **ONCE) as ecr:
        await ecr.describe_repositories()
        emulator.remove_key(key)
        deadline = time.monotonic() + 15  # the emulator looks at its file every second
        while True:
            try:
                await ecr.describe_repositories()
            except ClientError as exc:
                assert exc.response["Error"]["Code"] == "UnrecognizedClientException"
                break
            assert time.monotonic() < deadline, "a deleted key still works 15 s later"
            await asyncio.sleep(0.25)
    async with ecr_client(emulator.url, **ONCE) as ecr:  # the others still do
        await ecr.describe_repositories()


async def test_missing_and_malformed_authorization(shared_emulator: EmulatorProcess) -> None:
    import aiohttp

    headers = {"X-Amz-Target": "AmazonEC2ContainerRegistry_V20150921.DescribeRepositories",
               "Content-Type": "application/x-amz-json-1.1"}
    async with aiohttp.ClientSession() as session:
        async with session.post(shared_emulator.url, data=b"{}", headers=headers) as r:
            assert r.status == 403
            assert (await r.json(content_type=None))["__type"] == \
                "MissingAuthenticationTokenException"
        broken = {**headers, "Authorization": "AWS4-HMAC-SHA256 Credential=AKIDX/20240101/"
                                              "us-east-1/ecr/aws4_request"}
        async with session.post(shared_emulator.url, data=b"{}", headers=broken) as r:
            assert r.status == 400
            assert (await r.json(content_type=None))["__type"] == \
                "IncompleteSignatureException"


def test_control_endpoints_need_a_signature_of_a_known_key(
        shared_emulator: EmulatorProcess) -> None:
    url = f"{shared_emulator.url}/_emulator/requests"
    for headers in ({}, {"Authorization": "AWS4-HMAC-SHA256 Credential=AKIDX/20240101/"
                                          "us-east-1/emulator/aws4_request, SignedHeaders=host,"
                                          " Signature=" + "0" * 64}):
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10)
        assert info.value.code == 403
    assert isinstance(shared_emulator.requests(), list)  # signed: allowed
    with urllib.request.urlopen(f"{shared_emulator.url}/_emulator/health", timeout=10) as r:
        assert r.status == 200  # health stays open


@pytest.fixture
def closed_emulator(tmp_path: Path) -> Iterator[EmulatorProcess]:
    with EmulatorProcess(tmp_path / "ecr", admin=False) as emu:
        yield emu


def test_control_endpoints_are_off_without_admin(closed_emulator: EmulatorProcess) -> None:
    for path in ("requests", "faults", "policies"):
        with pytest.raises(urllib.error.HTTPError) as info:
            closed_emulator.control("GET", path)
        assert info.value.code == 404
        assert "--admin" in info.value.read().decode()


def test_without_credentials_the_emulator_says_it_is_open(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "emulator", "--listen", "127.0.0.1:0",
         "--data-dir", str(tmp_path / "ecr")], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        assert "listening on" in process.stdout.readline()
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    assert "no --credentials: every access key and secret is accepted" in stderr


def test_a_malformed_credentials_file_stops_the_start(tmp_path: Path) -> None:
    bad = tmp_path / "credentials"
    bad.write_text("[p]\naws_access_key_id = AKIDONLY\n")
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "emulator", "--listen", "127.0.0.1:0",
         "--data-dir", str(tmp_path / "ecr"), "--credentials", str(bad)],
        capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "aws_secret_access_key" in result.stderr


# Requests signed by botocore's own signer and sent byte for byte over HTTP (http.client
# neither normalizes the path nor merges headers), then edited the way a client or a
# forger would: each shape AWS accepts passes, each one it refuses gets its code.
ACTION = [("X-Amz-Target", "AmazonEC2ContainerRegistry_V20150921.DescribeRepositories"),
          ("Content-Type", "application/x-amz-json-1.1")]
MISMATCH = "The request signature we calculated does not match the signature you provided."
Sent = tuple[list[tuple[str, str]], str]  # the headers and the path


def sign(emulator: EmulatorProcess, *, path: str = "/", headers: list[tuple[str, str]] = ACTION,
         signer: type[SigV4Auth] = SigV4Auth, key: str | None = None,
         service: str = "ecr", date_header: bool = False) -> list[tuple[str, str]]:
    request = AWSRequest(method="POST", url=emulator.url + path, data=b"{}")
    for name, value in headers:
        request.headers[name] = value  # one more line, as HTTPHeaders adds a repeated name
    if date_header:
        request.headers["Date"] = "set by the signer"  # botocore then signs with Date
    secret = emulator.secret_access_key if key is None else "a-secret-of-nobody"
    signer(Credentials(key or emulator.access_key_id, secret), service,
           emulator.region).add_auth(request)
    return list(request.headers.items())


def post(emulator: EmulatorProcess, headers: list[tuple[str, str]],
         path: str = "/") -> tuple[int, dict[str, Any]]:
    host, port = emulator.url.removeprefix("http://").rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.putrequest("POST", path, skip_host=True, skip_accept_encoding=True)
        connection.putheader("Host", f"{host}:{port}")
        for name, value in headers:
            connection.putheader(name, value)
        connection.putheader("Content-Length", "2")
        connection.endheaders(b"{}")
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def replaced(headers: list[tuple[str, str]], name: str,
             edit: Callable[[str], str]) -> list[tuple[str, str]]:
    return [(k, edit(v) if k.lower() == name.lower() else v) for k, v in headers]


class _Unsorted(SigV4Auth):
    """Lists and canonicalizes the signed headers in reverse order."""

    def signed_headers(self, headers_to_sign: Any) -> str:
        return ";".join(sorted(set(headers_to_sign), reverse=True))

    def canonical_headers(self, headers_to_sign: Any) -> str:
        lines = []
        for name in sorted(set(headers_to_sign), reverse=True):
            values = (self._header_value(v) for v in headers_to_sign.get_all(name))
            lines.append(f"{name}:{','.join(values)}")
        return "\n".join(lines)


class _UppercaseHost(SigV4Auth):
    """Signs ``Host`` under that spelling, in SignedHeaders and the canonical headers."""

    def signed_headers(self, headers_to_sign: Any) -> str:
        return super().signed_headers(headers_to_sign).replace("host", "Host")

    def canonical_headers(self, headers_to_sign: Any) -> str:
        return super().canonical_headers(headers_to_sign).replace("\nhost:", "\nHost:")


def _blank_separated(emulator: EmulatorProcess) -> Sent:
    return replaced(sign(emulator), "Authorization", lambda v: v.replace(", ", "  ")), "/"


def _date_header(emulator: EmulatorProcess) -> Sent:
    headers = sign(emulator, date_header=True)
    assert "X-Amz-Date" not in dict(headers) and dict(headers)["Date"].endswith(" -0000")
    return headers, "/"


def _repeated_authorization(emulator: EmulatorProcess) -> Sent:
    headers = sign(emulator)
    return headers + [h for h in headers if h[0] == "Authorization"], "/"


def _query_signed_too(emulator: EmulatorProcess) -> Sent:
    path = "/?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Expires=300"
    return sign(emulator, path=path), path


def _credential_of_four(emulator: EmulatorProcess) -> Sent:
    return replaced(sign(emulator), "Authorization",
                    lambda v: v.replace("/aws4_request", "")), "/"


def _only_a_credential(emulator: EmulatorProcess) -> Sent:
    return replaced(sign(emulator), "Authorization", lambda v: v.partition(",")[0]), "/"


def _unknown_key_out_of_date(emulator: EmulatorProcess) -> Sent:
    headers = sign(emulator, key="AKIDNOBODYATALL")
    stamp = dict(headers)["X-Amz-Date"]
    return replaced(headers, "X-Amz-Date", lambda _: f"{int(stamp[:4]) - 1}{stamp[4:]}"), "/"


CASES: dict[str, tuple[Callable[[EmulatorProcess], Sent], int, str | None, str]] = {
    # name: (request, status, __type (None: answered), message start)
    "Date header in HTTP form, as botocore signs it": (_date_header, 200, None, ""),
    "components separated by blanks only": (_blank_separated, 200, None, ""),
    "signed in the query too": (
        _query_signed_too, 400, "InvalidSignatureException",
        "Found both 'X-Amz-Algorithm' as a query-string param and 'Authorization' as HTTP "
        "header."),
    "Authorization header twice": (
        _repeated_authorization, 400, "IncompleteSignatureException",
        "'AWS4-HMAC-SHA256' not a valid key=value pair (missing equal-sign)"),
    "SignedHeaders not sorted": (
        lambda emu: (sign(emu, signer=_Unsorted), "/"), 400, "InvalidSignatureException",
        MISMATCH),
    "SignedHeaders with Host capitalized": (
        lambda emu: (sign(emu, signer=_UppercaseHost), "/"), 400,
        "InvalidSignatureException", MISMATCH),
    "credential scope of four elements": (
        _credential_of_four, 400, "IncompleteSignatureException",
        "Credential must have exactly 5 slash-delimited elements"),
    "every missing component named": (
        _only_a_credential, 400, "IncompleteSignatureException",
        "Authorization header requires 'Signature' parameter. Authorization header requires "
        "'SignedHeaders' parameter."),
    "unknown key, out of date: the date first": (
        _unknown_key_out_of_date, 400, "InvalidSignatureException", "Signature expired:"),
    "unknown key, scope of another service: the scope first": (
        lambda emu: (sign(emu, key="AKIDNOBODYATALL", service="ecs"), "/"), 400,
        "InvalidSignatureException", "Credential should be scoped to correct service"),
    "scope of no region and another service: both said": (
        lambda emu: (replaced(sign(emu, service="ecs"), "Authorization",
                              lambda v: v.replace("/us-east-1/", "/nowhere/")), "/"), 400,
        "InvalidSignatureException",
        "Credential should be scoped to a valid region, not 'nowhere'. Credential should be "
        "scoped to correct service: 'ecr'. "),
}


@pytest.mark.parametrize("case", list(CASES))
def test_request_shapes_as_aws_takes_them(shared_emulator: EmulatorProcess, case: str) -> None:
    build, status, code, message = CASES[case]
    headers, path = build(shared_emulator)
    answered, body = post(shared_emulator, headers, path)
    assert (answered, body.get("__type")) == (status, code), body
    assert body.get("message", "").startswith(message), body
