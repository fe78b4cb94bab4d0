"""Client mistakes are 4xx with the OCI error that fits the operation, never 5xx/Retry-After.

Names the OCI grammar allows but ECR cannot hold, parameters botocore refuses before sending,
and ECR's own InvalidParameterException on each action all end as a clear 400.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from gateway.ecr.calls import call
from gateway.ecr.retry import RetryPolicy
from gateway.oci.errors import OciError
from tests.integration.reliability.helpers import faults_admin, image_manifest, set_faults
from tests.support.emulator import EmulatorProcess, ecr_client
from tests.support.gateway import GatewayProcess
from tests.support.oci import OCI_MANIFEST, OciClient, Reply

MiB = 1024 * 1024
DIGEST = "sha256:" + "ab" * 32


@pytest.fixture(scope="module")
def routed(upstream: EmulatorProcess,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """``deep/<name>`` is stored under a 250-character ECR prefix; other names as they are."""
    config = {"routes": [{"prefix": "deep", "repository_prefix": "p" * 250},
                         {"prefix": "", "repository_prefix": ""}],
              "upstream": {"retry_budget_seconds": 1.0}}
    with GatewayProcess(tmp_path_factory.mktemp("gw"), config,
                        upstream_url=upstream.url) as gateway:
        yield gateway


@pytest.fixture
async def client(routed: GatewayProcess, upstream: EmulatorProcess) -> AsyncIterator[OciClient]:
    faults_admin(upstream, "DELETE")
    async with aiohttp.ClientSession() as session:
        yield OciClient(session, routed.url)
    faults_admin(upstream, "DELETE")


async def _request(client: OciClient, method: str, path: str, **kwargs: object) -> Reply:
    async with client.session.request(method, client.url(path), **kwargs) as r:  # type: ignore[arg-type]
        return Reply(r.status, r.headers, await r.read())


def _client_error(reply: Reply, status: int, code: str) -> dict[str, object]:
    assert reply.status == status, (reply.status, reply.body)
    assert "Retry-After" not in reply.headers
    error: dict[str, object] = json.loads(reply.body)["errors"][0]
    assert error["code"] == code, error
    return error


@pytest.mark.parametrize("name", [
    "a",  # one character: ECR needs two
    "deep/abcdefgh",  # 250 + 9 characters once routed: over ECR's 256
])
async def test_names_ecr_cannot_hold_are_name_invalid(client: OciClient,
                                                      upstream: EmulatorProcess,
                                                      name: str) -> None:
    upstream.clear_requests()
    for method, path in [("POST", f"/v2/{name}/blobs/uploads/"),
                         ("HEAD", f"/v2/{name}/blobs/{DIGEST}"),
                         ("GET", f"/v2/{name}/manifests/v1"),
                         ("GET", f"/v2/{name}/tags/list")]:
        reply = await _request(client, method, path)
        if method == "HEAD":
            assert reply.status == 400 and "Retry-After" not in reply.headers
            continue
        error = _client_error(reply, 400, "NAME_INVALID")
        assert name.rsplit("/", 1)[-1] in error["detail"]["repository"]  # type: ignore[index]
    assert upstream.requests() == []  # refused before any upstream call


async def test_a_routed_name_within_ecr_limits_is_served(client: OciClient) -> None:
    reply = await _request(client, "POST", "/v2/deep/ab/blobs/uploads/")
    assert reply.status == 202, reply.body  # 250 + 3 characters: ECR can hold it


@pytest.mark.parametrize("action,params,code,named", [
    ("InitiateLayerUpload", {"repositoryName": "a"}, "NAME_INVALID", "repositoryName"),
    ("BatchCheckLayerAvailability", {"repositoryName": "ok/repo", "layerDigests": []},
     "DIGEST_INVALID", "layerDigests"),
    ("PutImage", {"repositoryName": "ok/repo", "imageManifest": ""}, "MANIFEST_INVALID",
     "imageManifest"),
])
async def test_parameters_botocore_refuses_are_400_naming_them(
        upstream: EmulatorProcess, action: str, params: dict[str, object], code: str,
        named: str) -> None:
    """botocore refuses these before sending: never retried, never 5xx or Retry-After."""
    async with ecr_client(upstream.url) as ecr:
        with pytest.raises(OciError) as refused:
            await call(ecr, action, RetryPolicy(budget_seconds=5), **params)
    error = refused.value
    assert error.status == 400 and error.error.code == code and not error.headers
    assert error.detail["parameters"] == [named]
    assert named in error.message


async def test_a_broken_constraint_of_a_listing_is_not_a_manifest_error(
        client: OciClient) -> None:
    repo = f"errors/{os.urandom(3).hex()}"
    await client.push_image(repo, "v1", [os.urandom(100)])
    # ECR takes artifact types of at most 255 characters.
    reply = await _request(client, "GET", f"/v2/{repo}/referrers/{DIGEST}",
                           params={"artifactType": "application/" + "x" * 300})
    error = _client_error(reply, 400, "UNSUPPORTED")
    assert error["detail"] == {"ecr_action": "ListImageReferrers",
                               "ecr_error": "InvalidParameterException"}


async def test_invalid_parameter_maps_by_action(client: OciClient,
                                                upstream: EmulatorProcess) -> None:
    repo = f"errors/{os.urandom(3).hex()}"
    layer, config = os.urandom(6 * MiB), b'{"architecture":"amd64","os":"linux"}'
    await client.push_blob(repo, config)

    # UploadLayerPart: a blob upload error, not a manifest one.
    set_faults(upstream, [{"action": "UploadLayerPart", "error": "InvalidParameterException"}],
               seed=1)
    location = await client.start(repo)
    _client_error(await client.patch(location, layer), 400, "BLOB_UPLOAD_INVALID")
    set_faults(upstream, [{"action": "UploadLayerPart", "error": "LimitExceededException"}],
               seed=1)
    location = await client.start(repo)
    _client_error(await client.patch(location, layer), 400, "BLOB_UPLOAD_INVALID")
    faults_admin(upstream, "DELETE")
    await client.push_blob(repo, layer)

    # PutImage: the manifest is invalid.
    set_faults(upstream, [{"action": "PutImage", "error": "InvalidParameterException"}], seed=1)
    reply = await _request(client, "PUT", f"/v2/{repo}/manifests/v1",
                           data=image_manifest(config, [layer]),
                           headers={"Content-Type": OCI_MANIFEST})
    _client_error(reply, 400, "MANIFEST_INVALID")

    # ListImages: neither a manifest nor a blob error.
    set_faults(upstream, [{"action": "ListImages", "error": "InvalidParameterException"}], seed=1)
    reply = await _request(client, "GET", f"/v2/{repo}/tags/list")
    error = _client_error(reply, 400, "PAGINATION_NUMBER_INVALID")
    assert error["detail"] == {"ecr_action": "ListImages",
                               "ecr_error": "InvalidParameterException"}
