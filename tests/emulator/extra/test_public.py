"""ECR Public in the emulator: its API's own actions (repositories, DescribeImageTags,
registries, catalog data, tokens, tags) and its read-only public registry endpoint."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ecr_emulator.settings import MiB, Settings
from tests.emulator.api.helpers import (
    OCI_MANIFEST,
    digest,
    image_manifest,
    push_image,
    push_layer,
)
from tests.emulator.extra.helpers import (
    ALIAS,
    basic_of,
    policy,
    public_client,
    registry_token,
    user,
)
from tests.support.emulator import ACCOUNT_ID, EmulatorProcess, ecr_client, new_access_key

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


def name() -> str:
    return f"pub-{uuid.uuid4().hex[:10]}"


async def test_repositories_and_catalog_data(pub: Any, ecr: Any) -> None:
    """CreateRepository with catalog data and tags, in ECR Public's shapes; the private
    registry does not see it."""
    repo = name()
    created = await pub.create_repository(
        repositoryName=repo, tags=[{"Key": "team", "Value": "registry"}],
        catalogData={"description": "A test image", "architectures": ["x86-64", "ARM 64"],
                     "operatingSystems": ["Linux"], "logoImageBlob": PNG,
                     "aboutText": "# About", "usageText": "docker pull it"})
    arn = f"arn:aws:ecr-public::{ACCOUNT_ID}:repository/{repo}"
    assert created["repository"] == {
        "repositoryArn": arn, "registryId": ACCOUNT_ID, "repositoryName": repo,
        "repositoryUri": f"public.ecr.aws/{ALIAS}/{repo}",
        "createdAt": created["repository"]["createdAt"]}
    data = created["catalogData"]
    assert data["description"] == "A test image" and "marketplaceCertified" not in data
    assert data["architectures"] == ["x86-64", "ARM 64"] and data["logoUrl"]
    async with aiohttp.ClientSession() as session, session.get(data["logoUrl"]) as r:
        assert r.status == 200 and await r.read() == PNG
        assert r.headers["Content-Type"] == "image/png"
    updated = await pub.put_repository_catalog_data(repositoryName=repo,
                                                    catalogData={"description": "Changed"})
    assert updated["catalogData"]["description"] == "Changed"
    assert updated["catalogData"]["usageText"] == "docker pull it"  # members not given stay
    assert (await pub.get_repository_catalog_data(repositoryName=repo))["catalogData"] == \
        updated["catalogData"]
    assert (await pub.list_tags_for_resource(resourceArn=arn))["tags"] == [
        {"Key": "team", "Value": "registry"}]
    described = (await pub.describe_repositories(repositoryNames=[repo]))["repositories"]
    assert described == [created["repository"]]
    with pytest.raises(ecr.exceptions.RepositoryNotFoundException):
        await ecr.describe_repositories(repositoryNames=[repo])
    deleted = await pub.delete_repository(repositoryName=repo)
    assert deleted["repository"] == created["repository"]


async def test_catalog_data_of_a_repository_created_without_any(pub: Any) -> None:
    """Every repository has catalog data: CreateRepository without any answers
    ``catalogData: {}`` (the AWS CLI's example) and GetRepositoryCatalogData reads it as
    ``{}`` (Terraform reads it after every create and fails on any error); AWS leaves out
    marketplaceCertified for a repository that is not certified."""
    repo = name()
    created = await pub.create_repository(repositoryName=repo)
    assert created["catalogData"] == {}
    assert (await pub.get_repository_catalog_data(repositoryName=repo))["catalogData"] == {}
    put = await pub.put_repository_catalog_data(repositoryName=repo,
                                                catalogData={"description": "Now some"})
    assert put["catalogData"] == {"description": "Now some"}
    assert (await pub.get_repository_catalog_data(repositoryName=repo))["catalogData"] == \
        {"description": "Now some"}


async def test_batch_delete_image_takes_the_registry_alias(pub: Any) -> None:
    """BatchDeleteImage's registryId is a RegistryIdOrAlias in ECR Public's model, as for
    the layer plane and PutImage: the alias names the registry. Another one names no
    repository (the action declares no RegistryNotFoundException)."""
    repo = name()
    await pub.create_repository(repositoryName=repo)
    await push_image(pub, repo, "v1")
    with pytest.raises(pub.exceptions.RepositoryNotFoundException):
        await pub.batch_delete_image(repositoryName=repo, registryId="someone-else",
                                     imageIds=[{"imageTag": "v1"}])
    deleted = await pub.batch_delete_image(repositoryName=repo, registryId=ALIAS,
                                           imageIds=[{"imageTag": "v1"}])
    assert [i["imageTag"] for i in deleted["imageIds"]] == ["v1"] and not deleted["failures"]
    assert (await pub.describe_images(repositoryName=repo))["imageDetails"] == []


async def test_rules_on_repository_arns_hold_for_calls_naming_the_alias(
        pub: Any, extra_emulator: EmulatorProcess) -> None:
    """A key allowed ``ecr-public:*`` on its repositories' ARNs pushes whether the call
    names the registry by its id, its alias or not at all: the alias is the account's
    registry, not an account of its own (the ARN the rules were matched against was
    ``arn:aws:ecr-public::emulator:repository/...``)."""
    repo, pusher = f"team-{uuid.uuid4().hex[:8]}/app", new_access_key("AKIDPUSHER")
    await pub.create_repository(repositoryName=repo)
    extra_emulator.control("PUT", "policies", {pusher: [
        {"Effect": "Allow", "Action": "ecr-public:*",
         "Resource": f"arn:aws:ecr-public::{ACCOUNT_ID}:repository/{repo}"}]})
    try:
        async with public_client(extra_emulator.url, access_key_id=pusher) as as_pusher:
            for registry in (None, ACCOUNT_ID, ALIAS):
                named = {"registryId": registry} if registry else {}
                assert (await as_pusher.initiate_layer_upload(repositoryName=repo, **named))[
                    "uploadId"]
            # The repository's own policy applies to calls naming the alias as well.
            await pub.set_repository_policy(repositoryName=repo, policyText=policy(
                {"Effect": "Deny", "Principal": {"AWS": user(ACCOUNT_ID, pusher)},
                 "Action": "ecr-public:InitiateLayerUpload"}))
            with pytest.raises(as_pusher.exceptions.ClientError) as info:
                await as_pusher.initiate_layer_upload(repositoryName=repo, registryId=ALIAS)
            assert "explicit deny in a resource-based policy" in \
                info.value.response["Error"]["Message"]
    finally:
        extra_emulator.control("DELETE", "policies")


async def test_authorization_token_needs_sts_get_service_bearer_token(
        extra_emulator: EmulatorProcess) -> None:
    """ECR Public's GetAuthorizationToken needs ecr-public:GetAuthorizationToken and
    sts:GetServiceBearerToken: a key allowed only the first is refused, naming the second."""
    without, with_sts = new_access_key("AKIDNOSTS"), new_access_key("AKIDSTS")
    extra_emulator.control("PUT", "policies", {
        without: [{"Effect": "Allow", "Action": "ecr-public:*"}],
        with_sts: [{"Effect": "Allow", "Action": ["ecr-public:GetAuthorizationToken",
                                                  "sts:GetServiceBearerToken"]}]})
    try:
        async with public_client(extra_emulator.url, access_key_id=without) as refused:
            with pytest.raises(refused.exceptions.ClientError) as info:
                await refused.get_authorization_token()
        error = info.value.response["Error"]
        assert error["Code"] == "AccessDeniedException"
        assert "not authorized to perform: sts:GetServiceBearerToken" in error["Message"]
        async with public_client(extra_emulator.url, access_key_id=with_sts) as allowed:
            data = (await allowed.get_authorization_token())["authorizationData"]
        assert await registry_token(extra_emulator.url, basic_of(data))
    finally:
        extra_emulator.control("DELETE", "policies")


async def test_upload_quotas_are_ecr_publics(tmp_path: Path) -> None:
    """ECR Public's upload quotas are its own (1,000 parts, 10,000 MiB layers, where ECR
    allows 4,200 and 52,000 MiB), set apart from ECR's: with the public ones lowered, the
    public registry refuses a third part and a layer past its size while the private one,
    at its defaults, takes both."""
    env = {"ECR_EMULATOR_PUBLIC_MAX_PARTS": "2", "ECR_EMULATOR_PUBLIC_MAX_LAYER_SIZE": "4"}
    with EmulatorProcess(tmp_path / "ecr", env=env) as emu:
        async with public_client(emu.url) as pub, ecr_client(
                emu.url, retries={"total_max_attempts": 1}) as ecr:
            for client, limited in ((pub, True), (ecr, False)):
                repo = name()
                await client.create_repository(repositoryName=repo)
                parts = (await client.initiate_layer_upload(repositoryName=repo))["uploadId"]
                big = (await client.initiate_layer_upload(repositoryName=repo))["uploadId"]
                for part in range(3):
                    call = client.upload_layer_part(
                        repositoryName=repo, uploadId=parts, partFirstByte=part,
                        partLastByte=part, layerPartBlob=b"z")
                    if limited and part == 2:
                        with pytest.raises(client.exceptions.LimitExceededException):
                            await call
                    else:
                        await call
                call = client.upload_layer_part(repositoryName=repo, uploadId=big,
                                                partFirstByte=0, partLastByte=4,
                                                layerPartBlob=b"12345")
                if limited:
                    with pytest.raises(client.exceptions.LimitExceededException):
                        await call
                else:
                    await call


def test_default_upload_quotas_are_the_published_ones() -> None:
    settings = Settings()
    assert (settings.public_max_parts, settings.public_max_layer_size) == (1000, 10_000 * MiB)
    assert (settings.max_parts, settings.max_layer_size) == (4200, 52_000 * MiB)


async def test_images_and_image_tags(pub: Any) -> None:
    """The layer and image plane, and DescribeImageTags with paging; answers carry only
    ECR Public's members (no imageStatus)."""
    repo = name()
    await pub.create_repository(repositoryName=repo)
    first, text = await push_image(pub, repo, "b-tag")
    await pub.put_image(repositoryName=repo, imageManifest=text, imageTag="a-tag")
    second, _ = await push_image(pub, repo, "c-tag")
    images = (await pub.describe_images(repositoryName=repo))["imageDetails"]
    assert [sorted(i["imageTags"]) for i in images] == [["a-tag", "b-tag"], ["c-tag"]]
    assert all("imageStatus" not in i for i in images)
    page = await pub.describe_image_tags(repositoryName=repo, maxResults=2)
    rest = await pub.describe_image_tags(repositoryName=repo, nextToken=page["nextToken"])
    details = page["imageTagDetails"] + rest["imageTagDetails"]
    assert [(d["imageTag"], d["imageDetail"]["imageDigest"]) for d in details] == [
        ("a-tag", first), ("b-tag", first), ("c-tag", second)]
    assert details[0]["imageDetail"]["imageManifestMediaType"] == OCI_MANIFEST
    assert set(details[0]) == {"imageTag", "createdAt", "imageDetail"}
    deleted = await pub.batch_delete_image(repositoryName=repo,
                                           imageIds=[{"imageDigest": first}])
    assert {i["imageTag"] for i in deleted["imageIds"]} == {"a-tag", "b-tag"}


async def test_registry_token_and_catalog(pub: Any, extra_emulator: EmulatorProcess) -> None:
    registries = (await pub.describe_registries())["registries"]
    assert registries == [{
        "registryId": ACCOUNT_ID,
        "registryArn": f"arn:aws:ecr-public::{ACCOUNT_ID}:registry/{ACCOUNT_ID}",
        "registryUri": f"public.ecr.aws/{ALIAS}", "verified": False,
        "aliases": [{"name": ALIAS, "status": "ACTIVE", "primaryRegistryAlias": True,
                     "defaultRegistryAlias": True}]}]
    assert (await pub.put_registry_catalog_data(displayName="Emulated"))[
        "registryCatalogData"] == {"displayName": "Emulated"}
    assert (await pub.get_registry_catalog_data())["registryCatalogData"] == {
        "displayName": "Emulated"}
    data = (await pub.get_authorization_token())["authorizationData"]
    assert set(data) == {"authorizationToken", "expiresAt"}
    assert abs(data["expiresAt"].timestamp() - time.time() - 12 * 3600) < 120
    # The password is the one the registry endpoint's /token accepts.
    assert await registry_token(extra_emulator.url, basic_of(data))
    async with ecr_client(extra_emulator.url) as ecr:  # not ECR's registry credential
        private = (await ecr.get_authorization_token())["authorizationData"][0]
    async with aiohttp.ClientSession() as session, session.get(
            f"{extra_emulator.url}/token",
            headers={"Authorization": f"Basic {private['authorizationToken']}"}) as r:
        assert r.status == 401


async def _pushed(pub: Any, repo: str) -> tuple[str, str, bytes]:
    """An image with one layer in a new repository: (manifest digest, text, layer)."""
    await pub.create_repository(repositoryName=repo)
    layer = uuid.uuid4().bytes * 64
    manifest_digest, text = await push_image(pub, repo, "v1", layers=[layer])
    return manifest_digest, text, layer


async def test_the_registry_endpoint_serves_pulls(pub: Any,
                                                  extra_emulator: EmulatorProcess) -> None:
    repo = name()
    manifest_digest, text, layer = await _pushed(pub, repo)
    base = f"{extra_emulator.url}/v2/{ALIAS}/{repo}"
    token = await registry_token(extra_emulator.url)
    auth = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{extra_emulator.url}/v2/") as r:
            assert r.status == 401
            challenge = r.headers["WWW-Authenticate"]
            assert challenge == (f'Bearer realm="{extra_emulator.url}/token",'
                                 'service="public.ecr.aws",scope="aws"')
        async with session.get(f"{extra_emulator.url}/v2/", headers=auth) as r:
            assert r.status == 200
        for reference in ("v1", manifest_digest):
            async with session.get(f"{base}/manifests/{reference}", headers=auth) as r:
                assert r.status == 200 and await r.read() == text.encode()
                assert r.headers["Content-Type"] == OCI_MANIFEST
                assert r.headers["Docker-Content-Digest"] == manifest_digest
        async with session.head(f"{base}/manifests/v1", headers=auth) as r:
            assert r.status == 200 and int(r.headers["Content-Length"]) == len(text.encode())
        async with session.head(f"{base}/blobs/{digest(layer)}", headers=auth) as r:
            assert r.status == 200 and int(r.headers["Content-Length"]) == len(layer)
        async with session.get(f"{base}/blobs/{digest(layer)}", headers=auth,
                               allow_redirects=False) as r:
            assert r.status == 307
            location = r.headers["Location"]
        async with session.get(location) as r:  # presigned: no token needed
            assert r.status == 200 and await r.read() == layer
        unreferenced = await push_layer(pub, repo, b"uploaded but in no image")
        for path, code in ((f"{base}/blobs/{unreferenced}", "BLOB_UNKNOWN"),
                           (f"{base}/manifests/v9", "MANIFEST_UNKNOWN"),
                           (f"{extra_emulator.url}/v2/other-alias/{repo}/manifests/v1",
                            "NAME_UNKNOWN"),
                           (f"{extra_emulator.url}/v2/{ALIAS}/nothing-here/tags/list",
                            "NAME_UNKNOWN")):
            async with session.get(path, headers=auth) as r:
                assert r.status == 404 and (await r.json())["errors"][0]["code"] == code
        async with session.put(f"{base}/manifests/v2", headers=auth, data=text) as r:
            assert r.status == 405 and (await r.json())["errors"][0]["code"] == "UNSUPPORTED"
        async with session.get(f"{base}/manifests/v1",
                               headers={"Authorization": "Bearer forged.token"}) as r:
            assert r.status == 401


async def test_tags_paging_and_referrers(pub: Any, extra_emulator: EmulatorProcess) -> None:
    repo = name()
    subject, _, _ = await _pushed(pub, repo)
    for tag in ("v3", "v2"):
        await push_image(pub, repo, tag)
    config = b'{"artifact": "signature"}'
    await push_layer(pub, repo, config)
    referrer = image_manifest(config, [], config_type="application/vnd.example.sig",
                              subject={"mediaType": OCI_MANIFEST, "digest": subject,
                                       "size": 100})
    await pub.put_image(repositoryName=repo, imageManifest=referrer, imageTag="sig")
    auth = {"Authorization": f"Bearer {await registry_token(extra_emulator.url)}"}
    base = f"{extra_emulator.url}/v2/{ALIAS}/{repo}"
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/tags/list", params={"n": "2"}, headers=auth) as r:
            assert (await r.json())["tags"] == ["sig", "v1"]
            assert r.headers["Link"] == f'</v2/{ALIAS}/{repo}/tags/list?n=2&last=v1>; ' \
                                        'rel="next"'
        async with session.get(f"{base}/tags/list", params={"n": "2", "last": "v1"},
                               headers=auth) as r:
            assert (await r.json())["tags"] == ["v2", "v3"] and "Link" not in r.headers
        async with session.get(f"{base}/referrers/{subject}", headers=auth) as r:
            index = await r.json()
        assert [m["digest"] for m in index["manifests"]] == [digest(referrer)]
        assert index["manifests"][0]["artifactType"] == "application/vnd.example.sig"


async def test_pull_rate_limits(tmp_path: Path) -> None:
    """Anonymous tokens get 1 manifest read per second (bursts of 10), tokens obtained with
    GetAuthorizationToken 10 per second (bursts of 100): the 11th quick anonymous read is
    429 TOOMANYREQUESTS with Retry-After; the authenticated holder is not limited there."""
    with EmulatorProcess(tmp_path / "ecr") as emu:
        async with public_client(emu.url) as pub:
            repo = name()
            await _pushed(pub, repo)
            data = (await pub.get_authorization_token())["authorizationData"]
        anonymous = {"Authorization": f"Bearer {await registry_token(emu.url)}"}
        authenticated = {"Authorization": f"Bearer {await registry_token(emu.url, basic_of(data))}"}
        url = f"{emu.url}/v2/{ALIAS}/{repo}/manifests/v1"
        async with aiohttp.ClientSession() as session:
            statuses = []
            for _ in range(11):
                async with session.get(url, headers=anonymous) as r:
                    statuses.append(r.status)
                    retry_after = r.headers.get("Retry-After")
            assert statuses == [200] * 10 + [429] and retry_after == "1"
            for _ in range(11):
                async with session.get(url, headers=authenticated) as r:
                    assert r.status == 200
        kinds = {e["token"] for e in emu.requests("ecr-public:RegistryManifest")}
        assert kinds == {"anonymous", "authenticated"}


async def test_only_us_east_1(extra_emulator: EmulatorProcess) -> None:
    async with public_client(extra_emulator.url, region="eu-west-1") as elsewhere:
        with pytest.raises(elsewhere.exceptions.UnsupportedCommandException) as info:
            await elsewhere.describe_registries()
    assert info.value.response["Error"]["Message"] == \
        "The action isn't supported in this Region."


@pytest.mark.parametrize("n", ["²", "9" * 5000])  # str.isdigit() took both; int() did not
async def test_tags_list_refuses_a_malformed_page_size(pub: Any, extra_emulator: EmulatorProcess,
                                                       n: str) -> None:
    repo = name()
    await pub.create_repository(repositoryName=repo)
    auth = {"Authorization": f"Bearer {await registry_token(extra_emulator.url)}"}
    async with aiohttp.ClientSession() as session, session.get(
            f"{extra_emulator.url}/v2/{ALIAS}/{repo}/tags/list", params={"n": n},
            headers=auth) as r:
        assert r.status == 400
        assert (await r.json())["errors"][0]["code"] == "PAGINATION_NUMBER_INVALID"
