"""A blob mount through token auth, as a challenge-following client does it: the 401 names
every scope the mount needs, one token covers them, and a caller who may not read the
source gets an ordinary upload (202) that tells it nothing about that repository."""

from __future__ import annotations

import os
import urllib.parse
import uuid

import aiohttp

from tests.integration.auth.helpers import (
    Answer,
    basic,
    bearer,
    parse_challenge,
    request,
)
from tests.support.gateway import GatewayProcess
from tests.support.oci import OciClient, digest_of


class ChallengeFollower:
    """request → 401 → token for every challenged scope (Basic credentials) → retry."""

    def __init__(self, session: aiohttp.ClientSession, user: str, password: str) -> None:
        self.session = session
        self.credentials = basic(user, password)
        self.challenges: list[dict[str, str]] = []

    async def send(self, method: str, url: str) -> Answer:
        answer = await request(self.session, method, url)
        if answer.status != 401:
            return answer
        challenge = parse_challenge(answer.headers["WWW-Authenticate"])
        self.challenges.append(challenge)
        query = [("service", challenge["service"]),
                 *(("scope", scope) for scope in challenge.get("scope", "").split())]
        token = await request(self.session, "GET",
                              f"{challenge['realm']}?{urllib.parse.urlencode(query)}",
                              self.credentials)
        assert token.status == 200, token.body
        return await request(self.session, method, url, bearer(token.json()["token"]))


async def _source_with_blob(gateway: GatewayProcess) -> tuple[str, str]:
    source = f"team-a/{uuid.uuid4().hex[:10]}"
    layer = os.urandom(1500)
    async with aiohttp.ClientSession(headers=basic("alice", "alice-pw")) as session:
        await OciClient(session, gateway.url).push_image(source, "v1", [layer])
    return source, digest_of(layer)


async def test_mount_with_token_auth(authgw: GatewayProcess,
                                     session: aiohttp.ClientSession) -> None:
    source, digest = await _source_with_blob(authgw)
    target = f"team-a/{uuid.uuid4().hex[:10]}"
    client = ChallengeFollower(session, "alice", "alice-pw")
    answer = await client.send(
        "POST", f"{authgw.url}/v2/{target}/blobs/uploads/?mount={digest}&from={source}")
    assert answer.status == 201, answer.body
    assert answer.headers["Docker-Content-Digest"] == digest
    (challenge,) = client.challenges
    assert set(challenge["scope"].split()) == {f"repository:{target}:pull,push",
                                               f"repository:{source}:pull"}
    check = await client.send("HEAD", f"{authgw.url}/v2/{target}/blobs/{digest}")
    assert check.status == 200


async def test_mount_without_pull_on_the_source_is_an_ordinary_upload(
        authgw: GatewayProcess, session: aiohttp.ClientSession) -> None:
    source, digest = await _source_with_blob(authgw)
    target = f"team-b/{uuid.uuid4().hex[:10]}"
    client = ChallengeFollower(session, "carol", "carol-pw")
    mount = f"{authgw.url}/v2/{target}/blobs/uploads/?mount={digest}&from={source}"
    answer = await client.send("POST", mount)
    assert answer.status == 202, answer.body
    assert answer.headers["Location"]
    # The same as for a source that does not exist at all.
    missing = await client.send(
        "POST", f"{authgw.url}/v2/{target}/blobs/uploads/?mount={digest}"
                f"&from=team-a/{uuid.uuid4().hex[:10]}")
    assert missing.status == 202
    check = await client.send("HEAD", f"{authgw.url}/v2/{target}/blobs/{digest}")
    assert check.status == 404
    # Basic credentials get the same answer.
    direct = await request(session, "POST", mount, basic("carol", "carol-pw"))
    assert direct.status == 202
