"""The repository the access rules judge is the one the backend acts on: a name that routes
to another kind of registry (an ECR Public route) is read there, never as a repository of
the same name in the private registry, even as the source of a cross-repository mount."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.integration.auth.helpers import (
    basic,
    fetch_token,
    granted,
    request,
    write_htpasswd,
)
from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess
from tests.support.oci import OciClient, digest_of

PASSWORDS = {"owner": "owner-pw", "mallory": "mallory-pw"}
RULES: list[dict[str, Any]] = [
    {"repository": "secret/**", "users": ["owner"], "actions": ["pull", "push"]},
    {"repository": "mallory/**", "users": ["mallory"], "actions": ["pull", "push"]},
    # ECR Public repositories are world-readable anyway: every user may pull them here.
    {"repository": "pub/**", "users": ["*"], "actions": ["pull"]},
]


@pytest.fixture(scope="module")
def gateway(upstream: EmulatorProcess,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    folder: Path = tmp_path_factory.mktemp("names")
    htpasswd = write_htpasswd(folder / "htpasswd", PASSWORDS)
    config = {
        "auth": {"mode": "htpasswd", "htpasswd_file": str(htpasswd), "rules": RULES},
        "routes": [
            {"prefix": "pub", "upstream_kind": "ecr-public", "registry_url": upstream.url},
            {"prefix": ""},
        ],
    }
    with GatewayProcess(folder / "gw", config, upstream_url=upstream.url) as gw:
        yield gw


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def test_a_mount_source_on_a_public_route_is_not_read_from_the_private_registry(
        gateway: GatewayProcess, session: aiohttp.ClientSession) -> None:
    """pub/secret/x names ECR Public's secret/x; the private registry's secret/x (which
    mallory may not read) must not serve as the source of her mount."""
    app = uuid.uuid4().hex[:10]
    layer = os.urandom(2000)
    async with aiohttp.ClientSession(headers=basic("owner", "owner-pw")) as owner:
        await OciClient(owner, gateway.url).push_image(f"secret/{app}", "v1", [layer])
    digest = digest_of(layer)
    mine = f"mallory/{app}"
    answer = await request(
        session, "POST",
        f"{gateway.url}/v2/{mine}/blobs/uploads/?mount={digest}&from=pub/secret/{app}",
        basic("mallory", "mallory-pw"))
    # An ordinary upload: the blob is not in ECR Public's secret/<app>.
    assert answer.status == 202, (answer.status, answer.body)
    blob = await request(session, "GET", f"{gateway.url}/v2/{mine}/blobs/{digest}",
                         basic("mallory", "mallory-pw"))
    assert blob.status == 404, (blob.status, blob.body[:200])


@pytest.mark.parametrize("source", ["x%0d%0aSet-Cookie:%20a=b", "x%00y", "Secret/app",
                                    "secret%2F..%2Fmallory", "x%22,realm=%22http://evil"])
@pytest.mark.parametrize("user", [None, "mallory"])
async def test_a_mount_source_is_a_repository_name(gateway: GatewayProcess,
                                                   session: aiohttp.ClientSession,
                                                   source: str, user: str | None) -> None:
    """The source is checked as a name before anyone judges it: 400 NAME_INVALID, never a
    5xx nor a challenge carrying it."""
    digest = "sha256:" + "a" * 64
    headers = basic(user, f"{user}-pw") if user else {}
    answer = await request(
        session, "POST",
        f"{gateway.url}/v2/mallory/app/blobs/uploads/?mount={digest}&from={source}", headers)
    assert answer.status == 400, (answer.status, answer.body[:300])
    assert answer.code == "NAME_INVALID"
    assert "WWW-Authenticate" not in answer.headers


async def test_the_token_server_grants_only_repository_names(
        gateway: GatewayProcess, session: aiohttp.ClientSession) -> None:
    """secret/** is owner's; the token server judges only names a request can carry, as the
    registry does, and signs nothing for the others."""
    odd = ["secret/../mallory/x", "secret/App", "secret/x%2F..%2Fy", "secret/" + "a" * 300,
           "secret/x\nmallory/y"]
    answer = await fetch_token(session, gateway.url,
                               [f"repository:{name}:pull" for name in odd]
                               + ["repository:secret/app:pull"], ("owner", "owner-pw"))
    assert answer.status == 200, answer.body
    assert granted(answer.json()["token"]) == {"repository:secret/app": {"pull"}}
