"""The attacker is a user of the shared endpoint with a team of their own (alice: everything
in team-a/) who wants another team's image (carol's, in team-b/). Their rule's pattern,
``team-a/**``, matches any text after ``team-a/``: no spelling of a name that leads
elsewhere (dot segments, escapes, doubled or trailing slashes, capitals) reaches ECR.

And digests are names, not keys: having learned the digests of carol's image (from a
build log, an SBOM, a deployment manifest), alice gets nothing of it in her own
repositories, whatever request names them there, through either blob mode (``proxy``: the
gateway reads the layer itself; ``redirect``: it sends the client to ECR's download URL).
Each refusal is one that ECR or the gateway makes for the repository named, never because
the bytes are not held somewhere."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from yarl import URL

from tests.integration.auth.helpers import Answer, basic, request, write_htpasswd
from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess
from tests.support.oci import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, OciClient, digest_of

RULES = [
    {"repository": "team-a/**", "users": ["alice"], "actions": ["pull", "push", "delete"]},
    {"repository": "team-b/**", "users": ["carol"], "actions": ["pull", "push", "delete"]},
]


@pytest.fixture(scope="module", params=["proxy", "redirect"])
def gateway(request: pytest.FixtureRequest, upstream: EmulatorProcess,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    users = write_htpasswd(tmp_path_factory.mktemp("users") / "htpasswd",
                           {"alice": "alice-pw", "carol": "carol-pw"})
    config = {"auth": {"mode": "htpasswd", "htpasswd_file": str(users), "rules": RULES},
              "blobs": {"mode": request.param}}
    with GatewayProcess(tmp_path_factory.mktemp("gw"), config,
                        upstream_url=upstream.url) as started:
        yield started


@pytest.fixture
async def alice(gateway: GatewayProcess) -> AsyncIterator[OciClient]:
    async with aiohttp.ClientSession(headers=basic("alice", "alice-pw")) as session:
        yield OciClient(session, gateway.url)


@pytest.fixture
async def carol(gateway: GatewayProcess) -> AsyncIterator[OciClient]:
    async with aiohttp.ClientSession(headers=basic("carol", "carol-pw")) as session:
        yield OciClient(session, gateway.url)


def _manifest(config: bytes, config_digest: str, layer_digest: str, size: int) -> bytes:
    return json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER, "digest": layer_digest, "size": size}]}).encode()


async def test_a_learned_digest_opens_nothing_in_ones_own_repository(
        alice: OciClient, carol: OciClient) -> None:
    secret = os.urandom(4096)
    victims = f"team-b/{uuid.uuid4().hex[:10]}"
    image, _ = await carol.push_image(victims, "v1", [secret])
    layer = digest_of(secret)
    own = f"team-a/{uuid.uuid4().hex[:10]}"
    config = b'{"architecture":"amd64","os":"linux"}'
    await alice.push_image(own, "mine", [os.urandom(512)], config)
    config_digest = digest_of(config)
    base = alice.base
    tried: dict[str, Answer] = {}

    async def attempt(what: str, method: str, path: str, data: bytes | None = None,
                      headers: dict[str, str] | None = None) -> Answer:
        tried[what] = answer = await request(alice.session, method, base + path, headers, data)
        return answer

    await attempt("HEAD the layer", "HEAD", f"/v2/{own}/blobs/{layer}")
    await attempt("GET the layer", "GET", f"/v2/{own}/blobs/{layer}")
    await attempt("GET the manifest", "GET", f"/v2/{own}/manifests/{image}",
                  headers={"Accept": OCI_MANIFEST})
    await attempt("a manifest naming the layer", "PUT", f"/v2/{own}/manifests/stolen",
                  _manifest(config, config_digest, layer, len(secret)),
                  {"Content-Type": OCI_MANIFEST})
    await attempt("a monolithic upload of other bytes", "POST",
                  f"/v2/{own}/blobs/uploads/?digest={layer}", os.urandom(len(secret)))
    await attempt("a monolithic upload of nothing", "POST",
                  f"/v2/{own}/blobs/uploads/?digest={layer}", b"")
    location = await alice.start(own)
    patched = await alice.patch(location, os.urandom(len(secret)))
    assert patched.status == 202
    closed = await alice.put(patched.headers["Location"], layer)
    tried["a chunked upload of other bytes"] = Answer(closed.status, dict(closed.headers),
                                                      closed.body)
    await attempt("a mount without a source", "POST",
                  f"/v2/{own}/blobs/uploads/?mount={layer}")
    await attempt("the referrers", "GET", f"/v2/{own}/referrers/{image}")
    await attempt("HEAD the layer afterwards", "HEAD", f"/v2/{own}/blobs/{layer}")
    await attempt("GET the layer afterwards", "GET", f"/v2/{own}/blobs/{layer}")

    statuses = {what: answer.status for what, answer in tried.items()}
    assert statuses == {
        "HEAD the layer": 404, "GET the layer": 404, "GET the manifest": 404,
        "a manifest naming the layer": 400, "a monolithic upload of other bytes": 400,
        "a monolithic upload of nothing": 400, "a chunked upload of other bytes": 400,
        "a mount without a source": 202, "the referrers": 200,
        "HEAD the layer afterwards": 404, "GET the layer afterwards": 404}, statuses
    assert tried["a manifest naming the layer"].code == "MANIFEST_BLOB_UNKNOWN"
    for what in ("a monolithic upload of other bytes", "a monolithic upload of nothing",
                 "a chunked upload of other bytes"):
        assert tried[what].code == "DIGEST_INVALID", (what, tried[what].body)
    assert tried["the referrers"].json()["manifests"] == []
    for answer in tried.values():  # no download URL, nor a byte of the layer, in any answer
        assert "Location" not in answer.headers or "/blobs/uploads/" in answer.headers[
            "Location"], answer.headers
        assert secret not in answer.body
    # The owner's image is as it was.
    assert await carol.get_blob(victims, layer) == secret


SPELLINGS = [
    "team-a/../team-b/{x}", "team-a/%2e%2e/team-b/{x}", "team-a/%2E%2E/team-b/{x}",
    "team-a/..%2fteam-b/{x}", "team-a%2f..%2fteam-b/{x}", "team-a/./../team-b/{x}",
    "team-a/x/../../team-b/{x}", "team-a//../team-b/{x}", "team-a/%252e%252e/team-b/{x}",
    "team-a/..%5cteam-b/{x}", "team-a/..\\team-b/{x}", "team-a/%00/../team-b/{x}",
    "team-a/Team-B/{x}", "team-a/../Team-B/{x}", "team-a/../team-b/{x}/",
    "team-a/../team-b/{x}%0a", "team-a/%0a/../team-b/{x}",
]


async def test_no_spelling_of_a_name_reaches_another_teams_repository(
        alice: OciClient, carol: OciClient, upstream: EmulatorProcess) -> None:
    secret = os.urandom(1024)
    victims = uuid.uuid4().hex[:10]
    image, _ = await carol.push_image(f"team-b/{victims}", "v1", [secret])
    layer = digest_of(secret)
    upstream.clear_requests()
    answers = {}
    for spelling in SPELLINGS:
        name = spelling.format(x=victims)
        for path in (f"/v2/{name}/manifests/v1", f"/v2/{name}/manifests/{image}",
                     f"/v2/{name}/blobs/{layer}", f"/v2/{name}/tags/list",
                     f"/v2/{name}/referrers/{image}"):
            async with alice.session.get(URL(alice.base + path, encoded=True),
                                         allow_redirects=False) as response:
                answers[path] = (response.status, await response.read())
    reached = {path: status for path, (status, body) in answers.items()
               if status != 400 or b"NAME_INVALID" not in body}
    assert reached == {}, reached
    assert not any(secret in body for _, body in answers.values())
    assert [entry["action"] for entry in upstream.requests()] == []  # ECR was never asked
