"""The access rules on real pushes and pulls: teams stay in their repositories, pull-only
users cannot write, anonymous pulls only where a rule allows them, the catalog shows only
what the caller may pull, and a blob mount cannot copy out of a repository one cannot read."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.integration.auth.helpers import basic, request, token_for
from tests.support.gateway import GatewayProcess
from tests.support.oci import OCI_MANIFEST, OciClient, digest_of


def client_as(session: aiohttp.ClientSession, gateway: GatewayProcess) -> OciClient:
    return OciClient(session, gateway.url)


@pytest.fixture
async def alice(authgw: GatewayProcess) -> AsyncIterator[OciClient]:
    async with aiohttp.ClientSession(headers=basic("alice", "alice-pw")) as session:
        yield OciClient(session, authgw.url)


def unique(prefix: str) -> str:
    return f"{prefix}/{uuid.uuid4().hex[:10]}"


async def test_team_member_pushes_and_pulls(alice: OciClient) -> None:
    name = unique("team-a")
    layer = os.urandom(2048)
    digest, _ = await alice.push_image(name, "v1", [layer])
    assert await alice.get_blob(name, digest_of(layer)) == layer
    answer = await request(alice.session, "GET", f"{alice.base}/v2/{name}/manifests/v1",
                           {"Accept": OCI_MANIFEST})
    assert answer.status == 200 and answer.headers["Docker-Content-Digest"] == digest


async def test_pull_only_user_cannot_write(alice: OciClient, authgw: GatewayProcess,
                                           session: aiohttp.ClientSession) -> None:
    name = unique("team-a")
    digest, _ = await alice.push_image(name, "v1", [os.urandom(512)])
    viewer = basic("viewer", "viewer-pw")
    tags = await request(session, "GET", f"{authgw.url}/v2/{name}/tags/list", viewer)
    assert tags.status == 200 and tags.json()["tags"] == ["v1"]
    for method, path in (("POST", f"/v2/{name}/blobs/uploads/"),
                         ("PUT", f"/v2/{name}/manifests/v2"),
                         ("DELETE", f"/v2/{name}/manifests/{digest}")):
        answer = await request(session, method, authgw.url + path, viewer, data=b"{}")
        assert answer.status == 403 and answer.code == "DENIED", (method, answer.body)
    still = await request(session, "GET", f"{authgw.url}/v2/{name}/tags/list", viewer)
    assert still.json()["tags"] == ["v1"]


async def test_teams_cannot_reach_each_other(alice: OciClient, authgw: GatewayProcess,
                                             session: aiohttp.ClientSession) -> None:
    name = unique("team-a")
    layer = os.urandom(512)
    await alice.push_image(name, "v1", [layer])
    carol = basic("carol", "carol-pw")
    for path in (f"/v2/{name}/tags/list", f"/v2/{name}/manifests/v1",
                 f"/v2/{name}/blobs/{digest_of(layer)}"):
        answer = await request(session, "GET", authgw.url + path, carol)
        assert answer.status == 403 and answer.code == "DENIED", path
    own = unique("team-b")
    answer = await request(session, "POST", f"{authgw.url}/v2/{own}/blobs/uploads/", carol)
    assert answer.status == 202  # her own team's repositories work
    elsewhere = await request(session, "GET", f"{authgw.url}/v2/{unique('team-b')}/tags/list",
                              basic("alice", "alice-pw"))
    assert elsewhere.status == 403


async def test_mount_cannot_copy_out_of_an_unreadable_repository(
        alice: OciClient, authgw: GatewayProcess, session: aiohttp.ClientSession) -> None:
    source = unique("team-a")
    layer = os.urandom(1024)
    await alice.push_image(source, "v1", [layer])
    target = unique("team-b")
    carol = basic("carol", "carol-pw")
    answer = await request(
        session, "POST",
        f"{authgw.url}/v2/{target}/blobs/uploads/?mount={digest_of(layer)}&from={source}",
        carol)
    # An ordinary upload instead: a refusal would confirm the source exists.
    assert answer.status == 202 and answer.headers["Location"]
    check = await request(session, "HEAD", f"{authgw.url}/v2/{target}/blobs/{digest_of(layer)}",
                          carol)
    assert check.status == 404
    # Between two repositories alice may read, the mount is done.
    own = unique("team-a")
    mounted = await request(
        alice.session, "POST",
        f"{authgw.url}/v2/{own}/blobs/uploads/?mount={digest_of(layer)}&from={source}")
    assert mounted.status == 201


async def test_anonymous_pull_only_where_allowed(alice: OciClient, authgw: GatewayProcess,
                                                 session: aiohttp.ClientSession) -> None:
    public = unique("public")
    layer = os.urandom(700)
    await alice.push_image(public, "v1", [layer])
    private = unique("team-a")
    await alice.push_image(private, "v1", [layer])
    manifest = await request(session, "GET", f"{authgw.url}/v2/{public}/manifests/v1",
                             {"Accept": OCI_MANIFEST})
    assert manifest.status == 200
    async with session.get(f"{authgw.url}/v2/{public}/blobs/{digest_of(layer)}") as r:
        assert r.status == 200 and await r.read() == layer
    for method, path in (("GET", f"/v2/{private}/manifests/v1"),
                         ("POST", f"/v2/{public}/blobs/uploads/"),
                         ("DELETE", f"/v2/{public}/manifests/v1"),
                         ("GET", "/v2/_catalog")):
        answer = await request(session, method, authgw.url + path)
        assert answer.status == 401, (method, path)


async def test_catalog_shows_only_what_the_caller_may_pull(
        alice: OciClient, authgw: GatewayProcess, session: aiohttp.ClientSession) -> None:
    mine = unique("team-a")
    await alice.push_image(mine, "v1", [os.urandom(100)])
    async with aiohttp.ClientSession(headers=basic("carol", "carol-pw")) as carol_session:
        theirs = unique("team-b")
        await OciClient(carol_session, authgw.url).push_image(theirs, "v1", [os.urandom(100)])
    listed = await request(session, "GET", f"{authgw.url}/v2/_catalog",
                           basic("alice", "alice-pw"))
    assert listed.status == 200
    names = listed.json()["repositories"]
    assert mine in names and theirs not in names
    assert all(n.startswith(("team-a/", "public/")) for n in names), names
    everything = await request(session, "GET", f"{authgw.url}/v2/_catalog",
                               basic("admin", "admin-pw"))
    assert {mine, theirs} <= set(everything.json()["repositories"])
    # Paging applies to the filtered list.
    page = await request(session, "GET", f"{authgw.url}/v2/_catalog?n=1",
                         basic("alice", "alice-pw"))
    assert len(page.json()["repositories"]) == 1
    denied = await request(session, "GET", f"{authgw.url}/v2/_catalog",
                           basic("carol", "carol-pw"))
    assert denied.status == 403  # carol's rules grant no catalog


async def test_delete_needs_the_delete_action(alice: OciClient, authgw: GatewayProcess,
                                              session: aiohttp.ClientSession) -> None:
    """public/* grants pull and push but not delete, even to a user who may push there."""
    name = unique("public")
    digest, _ = await alice.push_image(name, "v1", [os.urandom(100)])
    answer = await request(session, "DELETE", f"{authgw.url}/v2/{name}/manifests/{digest}",
                           basic("bob", "bob-pw"))
    assert answer.status == 403
    own = unique("team-a")
    digest, _ = await alice.push_image(own, "v1", [os.urandom(100)])
    deleted = await request(alice.session, "DELETE",
                            f"{authgw.url}/v2/{own}/manifests/{digest}")
    assert deleted.status == 202


async def test_a_bare_token_without_a_scheme_is_not_echoed(authgw: GatewayProcess) -> None:
    """A client that sends its token with no scheme gets 401, and the token is not in the
    answer (nor in the log)."""
    secret = "ghp_" + uuid.uuid4().hex
    async with aiohttp.ClientSession() as session:
        answer = await request(session, "GET", f"{authgw.url}/v2/",
                               {"Authorization": secret})
    assert answer.status == 401
    assert secret.lower() not in answer.body.decode().lower()
    assert not any(secret.lower() in line.lower() for line in authgw.log_lines)


async def test_a_refusal_says_what_to_do(alice: OciClient, authgw: GatewayProcess,
                                         session: aiohttp.ClientSession) -> None:
    """Clients print a refusal's message, nothing else of it: one without a login says to
    log in; one the rules refuse names who may not do what, with a token as with Basic."""
    other = unique("team-b")
    before_login = await request(session, "POST", f"{authgw.url}/v2/{other}/blobs/uploads/")
    assert before_login.status == 401
    message = before_login.json()["errors"][0]["message"]
    assert message.startswith("authentication required") and "log in" in message, message
    token = await token_for(session, authgw.url, [f"repository:{other}:pull,push"],
                            ("alice", "alice-pw"))
    for credentials in (basic("alice", "alice-pw"), {"Authorization": f"Bearer {token}"}):
        refused = await request(session, "POST", f"{authgw.url}/v2/{other}/blobs/uploads/",
                                credentials)
        assert refused.status == 403 and refused.code == "DENIED", refused.body
        message = refused.json()["errors"][0]["message"]
        assert message.startswith("requested access to the resource is denied"), message
        assert f"alice may not push to {other}" in message, message
    catalog = await request(session, "GET", f"{authgw.url}/v2/_catalog",
                            basic("carol", "carol-pw"))
    assert "carol may not list the catalog" in catalog.json()["errors"][0]["message"]
