"""``auth.mode: aws``: each caller logs in with their own AWS keys, the gateway makes their
ECR calls with those keys, and the upstream's IAM rules (here the emulator's per-key rules)
decide. One GetAuthorizationToken per identity however many requests arrive at once; the
token is renewed past its refresh point; secrets never reach a log."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from gateway.config.models import CacheConfig
from tests.integration.auth.helpers import (
    basic,
    bearer,
    fetch_token,
    granted,
    parse_challenge,
    request,
)
from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess
from tests.support.oci import OCI_MANIFEST, OciClient, digest_of

RUN = uuid.uuid4().hex[:8]
TAG_TTL = CacheConfig().tag_ttl_seconds  # the gateway below keeps the default
KEYS = {name: (f"AKID{name.upper()}{RUN.upper()}", f"secret-{name}-{uuid.uuid4().hex}")
        for name in ("team_a", "team_b", "revoked", "noread", "burst", "renew")}
PULLS = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability",
         "ecr:ListImages", "ecr:DescribeImages"]
POLICIES = {
    KEYS["team_a"][0]: [
        {"Effect": "Allow", "Action": "ecr:*", "Resource": "team-a/*"},
        {"Effect": "Allow", "Action": ["ecr:GetAuthorizationToken",
                                       "ecr:DescribeRepositories"], "Resource": "*"}],
    KEYS["team_b"][0]: [
        {"Effect": "Allow", "Action": PULLS, "Resource": "team-a/*"},
        {"Effect": "Allow", "Action": "ecr:GetAuthorizationToken"}],
    KEYS["revoked"][0]: [
        {"Effect": "Allow", "Action": "*"},
        {"Effect": "Deny", "Action": "ecr:GetAuthorizationToken"}],
    KEYS["noread"][0]: [{"Effect": "Allow", "Action": "ecr:GetAuthorizationToken"}],
}


def put_policies(emulator: EmulatorProcess, document: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = emulator.control("PUT", "policies", document)
    return result


def register_keys(emulator: EmulatorProcess) -> None:
    """The test identities are keys of the emulator (which verifies every signature)."""
    for name, (key, secret) in KEYS.items():
        token = f"session-token-{RUN}" if name == "burst" else None
        emulator.add_key(key, secret, session_token=token)


def calls(emulator: EmulatorProcess, key: str, action: str | None = None
          ) -> list[dict[str, Any]]:
    return [e for e in emulator.requests(action) if e.get("access_key_id") == key]


@pytest.fixture(scope="module")
def awsgw(upstream: EmulatorProcess,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    register_keys(upstream)
    put_policies(upstream, POLICIES)
    config = {"auth": {"mode": "aws"}, "log_level": "debug"}
    with GatewayProcess(tmp_path_factory.mktemp("gw"), config,
                        upstream_url=upstream.url) as gateway:
        yield gateway


@pytest.fixture
async def team_a(awsgw: GatewayProcess) -> AsyncIterator[OciClient]:
    async with aiohttp.ClientSession(headers=basic(*KEYS["team_a"])) as session:
        yield OciClient(session, awsgw.url)


def repo(prefix: str = "team-a") -> str:
    return f"{prefix}/{uuid.uuid4().hex[:10]}"


async def test_each_identity_gets_what_its_iam_rules_allow(
        awsgw: GatewayProcess, upstream: EmulatorProcess, team_a: OciClient,
        session: aiohttp.ClientSession) -> None:
    name = repo()
    layer = os.urandom(1500)
    await team_a.push_image(name, "v1", [layer])
    team_a_key, team_b_key = KEYS["team_a"][0], KEYS["team_b"][0]
    writes = [e for e in calls(upstream, team_a_key) if e["repository"] == name]
    assert {e["action"] for e in writes} >= {"CreateRepository", "InitiateLayerUpload",
                                             "PutImage"}
    assert "AccessDeniedException" not in {e["outcome"] for e in writes}
    assert [e["outcome"] for e in writes if e["action"] == "PutImage"] == ["ok"]

    b = basic(*KEYS["team_b"])
    pulled = await request(session, "GET", f"{awsgw.url}/v2/{name}/manifests/v1",
                           {**b, "Accept": OCI_MANIFEST})
    assert pulled.status == 200
    assert calls(upstream, team_b_key, "BatchGetImage")[-1]["repository"] == name
    push = await request(session, "POST", f"{awsgw.url}/v2/{name}/blobs/uploads/", b)
    assert push.status == 403 and push.code == "DENIED", push.body
    assert "AccessDeniedException" in push.body.decode()
    denied = calls(upstream, team_b_key, "InitiateLayerUpload")
    assert denied and denied[-1]["outcome"] == "AccessDeniedException"
    # team-b's key reaches nothing outside team-a/ (its rules), team-a's nothing outside
    # its own prefix.
    other = repo("team-b")
    answer = await request(session, "POST", f"{awsgw.url}/v2/{other}/blobs/uploads/",
                           basic(*KEYS["team_a"]))
    assert answer.status == 403


async def test_cached_answers_are_not_shared_between_identities(
        awsgw: GatewayProcess, upstream: EmulatorProcess, team_a: OciClient,
        session: aiohttp.ClientSession) -> None:
    """What one identity may read (and the gateway has cached) is not served to an
    identity whose IAM rules forbid reading it."""
    name = repo()
    layer = os.urandom(900)
    await team_a.push_image(name, "v1", [layer])
    own = await request(team_a.session, "GET", f"{awsgw.url}/v2/{name}/manifests/v1",
                        {"Accept": OCI_MANIFEST})
    assert own.status == 200
    noread = basic(*KEYS["noread"])
    for path in (f"/v2/{name}/manifests/v1", f"/v2/{name}/blobs/{digest_of(layer)}"):
        answer = await request(session, "GET", awsgw.url + path,
                               {**noread, "Accept": OCI_MANIFEST})
        assert answer.status == 403, (path, answer.status, answer.body)
    assert calls(upstream, KEYS["noread"][0], "BatchGetImage")[-1]["outcome"] == \
        "AccessDeniedException"


async def test_token_flow_signs_calls_with_the_callers_keys(
        awsgw: GatewayProcess, upstream: EmulatorProcess,
        session: aiohttp.ClientSession) -> None:
    name = repo()
    answer = await fetch_token(session, awsgw.url, [f"repository:{name}:pull,push"],
                               KEYS["team_a"], offline_token="true", client_id="docker")
    assert answer.status == 200, answer.body
    assert "refresh_token" not in answer.json()  # it would have to carry the secret
    token = answer.json()["token"]
    assert granted(token) == {f"repository:{name}": {"pull", "push"}}
    assert KEYS["team_a"][1] not in token  # only a handle of the identity travels
    async with aiohttp.ClientSession(headers=bearer(token)) as as_token:
        await OciClient(as_token, awsgw.url).push_image(name, "v1", [os.urandom(300)])
    puts = [e for e in calls(upstream, KEYS["team_a"][0], "PutImage") if e["repository"] == name]
    assert puts and puts[-1]["outcome"] == "ok"
    # Another identity's token does not stretch to team-a's rights.
    other = await fetch_token(session, awsgw.url, [f"repository:{name}:push"], KEYS["team_b"])
    async with session.post(f"{awsgw.url}/v2/{name}/blobs/uploads/",
                            headers=bearer(other.json()["token"])) as r:
        assert r.status == 403


async def test_refused_keys_cannot_log_in(awsgw: GatewayProcess,
                                          session: aiohttp.ClientSession) -> None:
    revoked = KEYS["revoked"]
    answer = await fetch_token(session, awsgw.url, [], revoked)
    assert answer.status == 401 and answer.code == "UNAUTHORIZED"
    direct = await request(session, "GET", f"{awsgw.url}/v2/", basic(*revoked))
    assert direct.status == 401
    empty = await request(session, "GET", f"{awsgw.url}/v2/", basic(revoked[0], ""))
    assert empty.status == 401
    anonymous = await request(session, "GET", f"{awsgw.url}/v2/{repo()}/tags/list")
    assert anonymous.status == 401


async def test_keys_the_upstream_refuses_are_401_and_count_as_failures(
        awsgw: GatewayProcess, upstream: EmulatorProcess,
        session: aiohttp.ClientSession) -> None:
    """A wrong secret, an unknown key, a forged or expired session token: the upstream
    refuses GetAuthorizationToken (InvalidSignatureException, UnrecognizedClientException,
    ExpiredTokenException) and the gateway answers 401 with its challenge, never 5xx."""
    team_a_key = KEYS["team_a"][0]
    temporary, token = f"ASIATEMP{RUN.upper()}", f"token-{uuid.uuid4().hex}"
    temporary_secret = upstream.add_key(temporary, session_token=token)
    expired, expired_secret = f"ASIAOLD{RUN.upper()}", "old-secret"
    upstream.add_key(expired, expired_secret, session_token=token,
                     expiration="2020-01-01T00:00:00Z")
    attempts = {
        "wrong secret": (team_a_key, "not-the-secret", "InvalidSignatureException"),
        "unknown key": (f"AKIDNOBODY{RUN.upper()}", "whatever", "UnrecognizedClientException"),
        "forged token": (temporary, f"{temporary_secret}:forged",
                         "UnrecognizedClientException"),
        "expired token": (expired, f"{expired_secret}:{token}", "ExpiredTokenException"),
    }
    for what, (key, password, code) in attempts.items():
        direct = await request(session, "GET", f"{awsgw.url}/v2/", basic(key, password))
        assert "WWW-Authenticate" in direct.headers, what
        for answer in (direct, await fetch_token(session, awsgw.url, [], (key, password))):
            assert answer.status == 401, (what, answer.status, answer.body)
            assert answer.code == "UNAUTHORIZED", what
        outcomes = {e["outcome"] for e in upstream.requests("GetAuthorizationToken")
                    if e["access_key_id"] in (key, None)}
        assert code in outcomes, (what, outcomes)
    good = await request(session, "GET", f"{awsgw.url}/v2/",
                         basic(temporary, f"{temporary_secret}:{token}"))
    assert good.status == 200, good.body


async def test_a_session_token_expiring_after_the_login_ends_the_identity_at_once(
        awsgw: GatewayProcess, upstream: EmulatorProcess,
        session: aiohttp.ClientSession) -> None:
    """The login's registry token is good for 12 hours, a session token often for less. Once
    ECR answers ExpiredTokenException to a call of the caller's, the identity is forgotten:
    that request and every later one (Basic, or a bearer token issued before) are 401 with a
    challenge, so the client logs in again, never a 502 to retry while the gateway still
    takes the keys for good ones."""
    key, token = f"ASIASHORT{RUN.upper()}", f"token-{uuid.uuid4().hex}"
    expires = time.time() + 5
    instant = datetime.fromtimestamp(expires, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    secret = upstream.add_key(key, session_token=token, expiration=instant)
    credentials = (key, f"{secret}:{token}")
    name = repo("short")
    access = await fetch_token(session, awsgw.url, [f"repository:{name}:pull,push"],
                               credentials)
    assert access.status == 200, access.body
    async with aiohttp.ClientSession(headers=basic(*credentials)) as as_key:
        await OciClient(as_key, awsgw.url).push_image(name, "v1", [os.urandom(400)])
    # The session token is over, and the tag the push wrote is no longer answered from the
    # gateway's cache (cache.tag_ttl_seconds: a slow push ends close to the expiry).
    over = max(expires + 1.5, time.time() + TAG_TTL + 0.5)
    await asyncio.sleep(over - time.time())

    pulled = await request(session, "GET", f"{awsgw.url}/v2/{name}/manifests/v1",
                           {**basic(*credentials), "Accept": OCI_MANIFEST})
    assert pulled.status == 401, (pulled.status, pulled.body)
    assert parse_challenge(pulled.headers["WWW-Authenticate"])["error"] == "invalid_token"
    refused = upstream.requests("BatchGetImage")[-1]  # refused before it names the key
    assert refused["outcome"] == "ExpiredTokenException"
    later = len(upstream.requests())
    for headers in (bearer(access.json()["token"]), {}):
        tags = await request(session, "GET", f"{awsgw.url}/v2/{name}/tags/list",
                             headers or basic(*credentials))
        assert tags.status == 401, (tags.status, tags.body)
    ping = await request(session, "GET", f"{awsgw.url}/v2/", basic(*credentials))
    assert ping.status == 401
    # Nothing was asked as the identity any more: only logins were tried again.
    assert {e["action"] for e in upstream.requests()[later:]} <= {"GetAuthorizationToken"}


async def test_the_eleventh_failed_login_is_429(awsgw: GatewayProcess,
                                                session: aiohttp.ClientSession) -> None:
    """auth.rate_limit.max_failures_per_user is 10 by default."""
    key = f"AKIDGUESSED{RUN.upper()}"
    statuses = []
    for attempt in range(11):
        answer = await request(session, "GET", f"{awsgw.url}/v2/", basic(key, f"try-{attempt}"))
        statuses.append(answer.status)
    assert statuses == [401] * 10 + [429]
    assert int(answer.headers["Retry-After"]) >= 1


async def test_500_concurrent_first_requests_make_one_token_call(
        awsgw: GatewayProcess, upstream: EmulatorProcess) -> None:
    key, secret = KEYS["burst"]
    headers = basic(key, f"{secret}:session-token-{RUN}")  # temporary credentials form
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        answers = await asyncio.gather(*(request(session, "GET", f"{awsgw.url}/v2/", headers)
                                         for _ in range(500)))
    assert [a.status for a in answers] == [200] * 500
    assert len(calls(upstream, key, "GetAuthorizationToken")) == 1


async def test_token_past_its_refresh_point_is_renewed_before_use(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """With 3-second registry tokens the refresh point is at half life: a request after it
    first renews the identity's token (a second GetAuthorizationToken, logged before the
    request's own ECR call), and a bearer token issued earlier keeps working."""
    with EmulatorProcess(tmp_path_factory.mktemp("short"),
                         env={"ECR_EMULATOR_AUTH_TOKEN_LIFETIME": "3"}) as emulator, \
            GatewayProcess(tmp_path_factory.mktemp("gw"), {"auth": {"mode": "aws"}},
                           upstream_url=emulator.url) as gateway:
        register_keys(emulator)
        key, secret = KEYS["renew"]
        async with aiohttp.ClientSession() as session:
            token = (await fetch_token(session, gateway.url, ["repository:team-a/x:pull"],
                                       (key, secret))).json()["token"]
            assert len(calls(emulator, key, "GetAuthorizationToken")) == 1
            await asyncio.sleep(1.7)
            answer = await request(session, "GET", f"{gateway.url}/v2/team-a/x/tags/list",
                                   bearer(token))
            assert answer.status == 404  # no such repository: the call itself was made
        renewals = calls(emulator, key, "GetAuthorizationToken")
        listing = calls(emulator, key, "ListImages")
        assert len(renewals) == 2
        assert listing and renewals[1]["ts"] <= listing[0]["ts"]


def test_emulator_policy_endpoint_validates(upstream: EmulatorProcess) -> None:
    import urllib.error

    with pytest.raises(urllib.error.HTTPError) as caught:
        upstream.control("PUT", "policies", {"K": [{"Effect": "Perhaps", "Action": "*"}]})
    assert caught.value.code == 400
    assert "Effect" in caught.value.read().decode()
    # the old rules remain
    assert KEYS["team_a"][0] in upstream.control("GET", "policies")["policies"]


async def test_secrets_never_reach_the_log(awsgw: GatewayProcess,
                                          session: aiohttp.ClientSession) -> None:
    """The gateway logs at debug level here; after logins that succeed, fail and use a
    session token (and the other tests of this module), no secret appears in its log."""
    await fetch_token(session, awsgw.url, [], KEYS["team_a"])
    await fetch_token(session, awsgw.url, [], KEYS["revoked"])
    await request(session, "GET", f"{awsgw.url}/v2/",
                  basic(KEYS["burst"][0], f"{KEYS['burst'][1]}:session-token-{RUN}"))
    await asyncio.sleep(0.3)  # the last log lines arrive through a pipe
    text = "\n".join(awsgw.log_lines)
    assert "authentication: aws" in text  # the log is being read at all
    assert KEYS["revoked"][0] in text  # access key ids may appear (a refusal says whose)
    for _, secret in KEYS.values():
        assert secret not in text
    assert f"session-token-{RUN}" not in text
