"""The gateway on ECR Public: pushes through the ecr-public API, pulls from the public
registry endpoint (with a cached bearer token), catalog data from annotations, the
public.ecr.aws mirror, and the repository template create_on_push applies (ECR and ECR
Public)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.emulator.extra.helpers import (
    ALIAS,
    keep_last,
    lifecycle,
    public_client,
    user,
)
from tests.support.clients import free_port
from tests.support.emulator import ACCOUNT_ID, REGION, EmulatorProcess, ecr_client
from tests.support.gateway import GatewayProcess
from tests.support.oci import OCI_MANIFEST, OciClient, digest_of

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
GATEWAY_KEY = "AKIDGATEWAYTEST"  # what tests.support.gateway signs with
POLICY = {"Version": "2012-10-17", "Statement": [
    {"Sid": "pull", "Effect": "Allow", "Principal": {"AWS": user(ACCOUNT_ID, "AKIDREADER")},
     "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]}]}
PUBLIC_POLICY = {"Version": "2012-10-17", "Statement": [
    {"Sid": "nodelete", "Effect": "Deny", "Principal": "*",
     "Action": "ecr-public:DeleteRepository"}]}
KEEP_THREE = json.loads(lifecycle(keep_last(3)))


def config(emulator_url: str) -> dict[str, Any]:
    return {
        "routes": [
            {"prefix": "pub", "upstream_kind": "ecr-public", "registry_url": emulator_url,
             "catalog_data": "from_annotations",
             "repository": {"tags": {"team": "public"}, "repository_policy": PUBLIC_POLICY}},
            {"prefix": "dead", "upstream_kind": "ecr-public", "registry_alias": ALIAS,
             "registry_url": f"http://127.0.0.1:{free_port()}"},
            {"prefix": "", "repository": {"tags": {"team": "private"},
                                          "repository_policy": POLICY,
                                          "lifecycle_policy": KEEP_THREE}},
        ],
        "mirrors": {"public.ecr.aws": {"registry_url": emulator_url}},
        "cache": {"tag_ttl_seconds": 0},
    }


@pytest.fixture(scope="module")
def public_gateway(upstream: EmulatorProcess,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    with GatewayProcess(tmp_path_factory.mktemp("gw-public"), config(upstream.url),
                        upstream_url=upstream.url) as gw:
        yield gw


@pytest.fixture
async def oci(public_gateway: GatewayProcess) -> AsyncIterator[OciClient]:
    async with aiohttp.ClientSession() as session:
        yield OciClient(session, public_gateway.url)


def uid() -> str:
    return uuid.uuid4().hex[:10]


def config_blob(architecture: str = "amd64", **labels: str) -> bytes:
    return json.dumps({"architecture": architecture, "os": "linux",
                       "config": {"Labels": labels}, "nonce": uid()}).encode()


def public_log(upstream: EmulatorProcess, repository: str) -> list[dict[str, Any]]:
    return [e for e in upstream.requests() if e["action"].startswith("ecr-public:")
            and e.get("repository") == repository]


async def test_push_and_pull_through_ecr_public(oci: OciClient, upstream: EmulatorProcess,
                                                public_gateway: GatewayProcess) -> None:
    """A push becomes ECR Public's actions; pulls, HEADs, tag lists and referrers go to the
    registry endpoint with an authenticated bearer token, obtained once."""
    app = f"app-{uid()}"
    layers = [uuid.uuid4().bytes * 100, b"second layer " + uid().encode()]
    manifest_digest, manifest = await oci.push_image(f"pub/{app}", "v1", layers,
                                                     config=config_blob())
    await oci.push_image(f"pub/{app}", "v2", layers[:1], config=config_blob())
    session, url = oci.session, public_gateway.url
    for _ in range(3):
        async with session.get(f"{url}/v2/pub/{app}/manifests/v1",
                               headers={"Accept": OCI_MANIFEST}) as r:
            assert r.status == 200 and await r.read() == manifest
            assert r.headers["Docker-Content-Digest"] == manifest_digest
    async with session.head(f"{url}/v2/pub/{app}/manifests/{manifest_digest}",
                            headers={"Accept": OCI_MANIFEST}) as r:
        assert r.status == 200 and int(r.headers["Content-Length"]) == len(manifest)
    for layer in layers:
        async with session.get(f"{url}/v2/pub/{app}/blobs/{digest_of(layer)}",
                               allow_redirects=False) as r:
            assert r.status == 307
            assert "/_emulator/public/layers/" in r.headers["Location"]
        assert await oci.get_blob(f"pub/{app}", digest_of(layer)) == layer
    async with session.get(f"{url}/v2/pub/{app}/tags/list") as r:
        assert (await r.json())["tags"] == ["v1", "v2"]
    async with session.get(f"{url}/v2/pub/{app}/referrers/{manifest_digest}") as r:
        assert r.status == 200 and (await r.json())["manifests"] == []
    async with session.get(f"{url}/v2/_catalog") as r:
        assert f"pub/{app}" in (await r.json())["repositories"]

    actions = [e["action"].removeprefix("ecr-public:") for e in public_log(upstream, app)]
    assert {"CreateRepository", "InitiateLayerUpload", "UploadLayerPart",
            "CompleteLayerUpload", "PutImage", "PutRepositoryCatalogData",
            "RegistryManifest", "RegistryBlob", "RegistryTagList"} <= set(actions), actions
    private = {e["action"] for e in upstream.requests() if e.get("repository") == app}
    assert not private & {"BatchGetImage", "ListImages", "GetDownloadUrlForLayer"}
    reads = [e for e in public_log(upstream, app) if e["action"].startswith(
        "ecr-public:Registry")]
    assert {(e["token"], e["access_key_id"]) for e in reads} == {("authenticated",
                                                                   GATEWAY_KEY)}
    tokens = [e for e in upstream.requests("ecr-public:GetAuthorizationToken")
              if e["access_key_id"] == GATEWAY_KEY]
    assert len(tokens) == 1 and len(upstream.requests("ecr-public:RegistryToken")) >= 1


async def test_untag_keeps_the_image(oci: OciClient, public_gateway: GatewayProcess,
                                     upstream: EmulatorProcess) -> None:
    """OCI untag on ECR Public: BatchDeleteImage of the tag, DescribeImages to see whether
    the image went with it, PutImage by digest to put it back."""
    app = f"untag-{uid()}"
    manifest_digest, manifest = await oci.push_image(f"pub/{app}", "v1", [b"only"],
                                                     config=config_blob())
    session, url = oci.session, public_gateway.url
    async with session.delete(f"{url}/v2/pub/{app}/manifests/v1") as r:
        assert r.status == 202, await r.text()
    async with session.get(f"{url}/v2/pub/{app}/tags/list") as r:
        assert (await r.json())["tags"] == []
    async with session.get(f"{url}/v2/pub/{app}/manifests/{manifest_digest}",
                           headers={"Accept": OCI_MANIFEST}) as r:
        assert r.status == 200 and await r.read() == manifest
    actions = [e["action"] for e in public_log(upstream, app)]
    assert "ecr-public:DescribeImages" in actions and "ecr-public:BatchDeleteImage" in actions


async def test_catalog_data_from_annotations(oci: OciClient, upstream: EmulatorProcess) -> None:
    app = f"cat-{uid()}"
    labels = {"org.opencontainers.image.description": "From the config's labels",
              "org.opencontainers.image.licenses": "Apache-2.0"}
    await oci.push_image(f"pub/{app}", "v1", [b"cat layer"],
                         config=config_blob("arm64", **labels))
    async with public_client(upstream.url) as pub:
        data = (await pub.get_repository_catalog_data(repositoryName=app))["catalogData"]
    assert data["description"] == "From the config's labels"
    assert data["architectures"] == ["ARM 64"] and data["operatingSystems"] == ["Linux"]
    assert "* Licenses: Apache-2.0" in data["aboutText"]
    assert f"docker pull public.ecr.aws/{ALIAS}/{app}:v1" in data["usageText"]

    # An index: its annotations, and every platform it lists.
    children = []
    for arch in ("amd64", "arm64"):
        child_digest, child = await oci.push_image(f"pub/{app}", f"child-{arch}",
                                                   [arch.encode() * 9],
                                                   config=config_blob(arch))
        children.append({"mediaType": OCI_MANIFEST, "digest": child_digest,
                         "size": len(child), "platform": {"architecture": arch,
                                                          "os": "linux"}})
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children,
                        "annotations": {"org.opencontainers.image.title": "Multi",
                                        "org.opencontainers.image.description": "Two arches",
                                        "org.opencontainers.image.source": "https://x.test"}})
    async with oci.session.put(f"{oci.base}/v2/pub/{app}/manifests/multi", data=index,
                               headers={"Content-Type": OCI_INDEX}) as r:
        assert r.status == 201, await r.text()
    async with public_client(upstream.url) as pub:
        data = (await pub.get_repository_catalog_data(repositoryName=app))["catalogData"]
    assert data["description"] == "Two arches"
    assert data["architectures"] == ["x86-64", "ARM 64"]
    assert data["aboutText"].startswith("# Multi\n\nTwo arches")
    assert "* Source: https://x.test" in data["aboutText"]


async def test_catalog_data_from_documents_of_odd_shapes(oci: OciClient,
                                                         upstream: EmulatorProcess) -> None:
    """Configs and index platforms are the client's JSON: members of another type than the
    image spec's say nothing to the catalog, and the push succeeds all the same."""
    app = f"odd-{uid()}"
    title = {"org.opencontainers.image.title": "Odd"}
    for n, config in enumerate([{"architecture": "amd64", "config": "not an object"},
                                {"architecture": ["amd64"], "config": {"Labels": ["x"]}}]):
        blob = json.dumps({**config, "nonce": uid()}).encode()
        config_digest = await oci.push_blob(f"pub/{app}", blob)
        layer = await oci.push_blob(f"pub/{app}", f"odd layer {n}".encode())
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST, "annotations": title,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config_digest, "size": len(blob)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": layer, "size": len(f"odd layer {n}")}]})
        async with oci.session.put(f"{oci.base}/v2/pub/{app}/manifests/v{n}", data=manifest,
                                   headers={"Content-Type": OCI_MANIFEST}) as r:
            assert r.status == 201, await r.text()
    child = {"mediaType": OCI_MANIFEST, "digest": digest_of(manifest.encode()),
             "size": len(manifest)}
    for n, platform in enumerate(["linux/amd64", ["amd64"], 7]):
        index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "annotations": title,
                            "manifests": [{**child, "platform": platform}]})
        async with oci.session.put(f"{oci.base}/v2/pub/{app}/manifests/multi{n}", data=index,
                                   headers={"Content-Type": OCI_INDEX}) as r:
            assert r.status == 201, await r.text()
    async with public_client(upstream.url) as pub:
        data = (await pub.get_repository_catalog_data(repositoryName=app))["catalogData"]
    assert data["description"] == "Odd"
    assert f"{app}:multi2" in data["usageText"]  # the last index filled it
    assert data["architectures"] == ["x86-64"]  # the one config that names it as a string


async def test_create_on_push_applies_the_repository_template(
        oci: OciClient, upstream: EmulatorProcess) -> None:
    """The route's repository policy, lifecycle policy and tags land on each repository it
    creates, in ECR and in ECR Public."""
    private, public = f"team/{uid()}", f"tpl-{uid()}"
    await oci.push_image(private, "v1", [b"private layer"])
    await oci.push_image(f"pub/{public}", "v1", [b"public layer"], config=config_blob())
    async with ecr_client(upstream.url) as ecr:
        text = (await ecr.get_repository_policy(repositoryName=private))["policyText"]
        assert json.loads(text) == POLICY
        assert json.loads((await ecr.get_lifecycle_policy(repositoryName=private))[
            "lifecyclePolicyText"]) == KEEP_THREE
        arn = f"arn:aws:ecr:{REGION}:{ACCOUNT_ID}:repository/{private}"
        assert (await ecr.list_tags_for_resource(resourceArn=arn))["tags"] == [
            {"Key": "team", "Value": "private"}]
    async with public_client(upstream.url) as pub:
        text = (await pub.get_repository_policy(repositoryName=public))["policyText"]
        assert json.loads(text) == PUBLIC_POLICY
        arn = f"arn:aws:ecr-public::{ACCOUNT_ID}:repository/{public}"
        assert (await pub.list_tags_for_resource(resourceArn=arn))["tags"] == [
            {"Key": "team", "Value": "public"}]
        with pytest.raises(pub.exceptions.ClientError) as info:  # the policy is enforced
            await pub.delete_repository(repositoryName=public, force=True)
        assert info.value.response["Error"]["Code"] == "AccessDeniedException"


async def test_mirror_of_public_ecr_aws(oci: OciClient, public_gateway: GatewayProcess,
                                        upstream: EmulatorProcess) -> None:
    """containerd's ns=public.ecr.aws: public.ecr.aws/<alias>/<name> comes from the registry
    endpoint; blob checks ask the endpoint too (the repository is not the gateway's)."""
    app = f"mir-{uid()}"
    layer = b"mirrored " + uid().encode()
    _, manifest = await oci.push_image(f"pub/{app}", "v1", [layer], config=config_blob())
    upstream.clear_requests()
    session, base = oci.session, f"{public_gateway.url}/v2/{ALIAS}/{app}"
    ns = {"ns": "public.ecr.aws"}
    async with session.get(f"{base}/manifests/v1", params=ns,
                           headers={"Accept": OCI_MANIFEST}) as r:
        assert r.status == 200 and await r.read() == manifest
    async with session.head(f"{base}/blobs/{digest_of(layer)}", params=ns) as r:
        assert r.status == 200 and int(r.headers["Content-Length"]) == len(layer)
    async with session.get(f"{base}/blobs/{digest_of(layer)}", params=ns) as r:
        assert r.status == 200 and await r.read() == layer
    async with session.get(f"{public_gateway.url}/v2/{ALIAS}/nothing/manifests/v1",
                           params=ns) as r:
        assert r.status == 404 and (await r.json())["errors"][0]["code"] == "NAME_UNKNOWN"
    actions = {e["action"] for e in upstream.requests()}
    assert {"ecr-public:RegistryManifest", "ecr-public:RegistryBlob"} <= actions
    assert "ecr-public:BatchCheckLayerAvailability" not in actions


async def test_anonymous_pulls_when_aws_refuses_a_token(
        upstream: EmulatorProcess, tmp_path: Path) -> None:
    """An identity that may not call GetAuthorizationToken still pulls, with the endpoint's
    anonymous token and its lower limit: beyond it the gateway answers 429 TOOMANYREQUESTS
    with Retry-After, as the endpoint did."""
    key = f"AKIDANON{uid().upper()}"
    _policies(upstream, {key: [{"Effect": "Allow", "Action": "*"},
                               {"Effect": "Deny", "Action": "ecr-public:GetAuthorizationToken"}]})
    try:
        app = f"anon-{uid()}"
        gw = GatewayProcess(tmp_path / "gw", config(upstream.url), upstream_url=upstream.url)
        gw.use_upstream_key(key)
        with gw:
            async with aiohttp.ClientSession() as session:
                await OciClient(session, gw.url).push_image(f"pub/{app}", "v1", [b"anon"],
                                                            config=config_blob())
                statuses = []
                for _ in range(14):
                    async with session.get(f"{gw.url}/v2/pub/{app}/manifests/v1",
                                           headers={"Accept": OCI_MANIFEST}) as r:
                        statuses.append(r.status)
                        if r.status == 429:
                            assert r.headers["Retry-After"]
                            assert (await r.json())["errors"][0]["code"] == "TOOMANYREQUESTS"
            assert statuses[0] == 200 and 429 in statuses, statuses
            assert any("anonymously" in line for line in gw.log_lines)
        reads = [e for e in public_log(upstream, app) if e["action"] ==
                 "ecr-public:RegistryManifest"]
        assert reads and {e["token"] for e in reads} == {"anonymous"}
    finally:
        _policies(upstream, None)


async def test_an_unreachable_registry_endpoint(
        oci: OciClient, public_gateway: GatewayProcess, upstream: EmulatorProcess) -> None:
    """The dead route's endpoint is down (its API is not): pulls answer 503 UNAVAILABLE, but
    the tag list of the gateway's own repository comes from DescribeImageTags."""
    app = f"down-{uid()}"
    await oci.push_image(f"pub/{app}", "v1", [b"up"], config=config_blob())
    async with oci.session.get(f"{public_gateway.url}/v2/dead/{app}/manifests/v1") as r:
        assert r.status == 503 and r.headers["Retry-After"]
        error = (await r.json())["errors"][0]
    assert error["code"] == "UNAVAILABLE" and "unreachable" in error["message"]
    async with oci.session.get(f"{public_gateway.url}/v2/dead/{app}/tags/list") as r:
        assert r.status == 200 and (await r.json())["tags"] == ["v1"]
    assert [e["outcome"] for e in public_log(upstream, app)
            if e["action"] == "ecr-public:DescribeImageTags"] == ["ok"]


def _policies(emulator: EmulatorProcess, document: dict[str, Any] | None) -> None:
    if document:
        emulator.control("PUT", "policies", document)
    else:
        emulator.control("DELETE", "policies")


async def test_a_mirror_of_others_repositories_takes_no_writes(
        upstream: EmulatorProcess, tmp_path: Path) -> None:
    """A route with ``registry_alias: ""`` reads others' public repositories (names carry
    the alias). A push there would land in this account's own public registry under a name
    that says otherwise: every write is refused (405) before any ECR Public call."""
    routes = {"routes": [
        {"prefix": "pub", "upstream_kind": "ecr-public", "registry_url": upstream.url},
        {"prefix": "others", "upstream_kind": "ecr-public", "registry_alias": "",
         "registry_url": upstream.url},
        {"prefix": ""}]}
    app = f"others-{uid()}"
    with GatewayProcess(tmp_path / "gw", routes, upstream_url=upstream.url) as gw:
        async with aiohttp.ClientSession() as session:
            oci = OciClient(session, gw.url)
            _, manifest = await oci.push_image(f"pub/{app}", "v1", [b"mirrored " + uid().encode()],
                                               config=config_blob())
            upstream.clear_requests()
            base = f"{gw.url}/v2/others/{ALIAS}/{app}"
            async with session.get(f"{base}/manifests/v1", headers={"Accept": OCI_MANIFEST}) as r:
                assert r.status == 200 and await r.read() == manifest
            writes = [session.post(f"{base}/blobs/uploads/"),
                      session.post(f"{base}/blobs/uploads/?mount={digest_of(b'x')}"
                                   f"&from=pub/{app}"),
                      session.put(f"{base}/manifests/v2", data=manifest,
                                  headers={"Content-Type": OCI_MANIFEST}),
                      session.delete(f"{base}/manifests/v1")]
            for write in writes:
                async with write as r:
                    body = await r.json()
                    assert (r.status, body["errors"][0]["code"]) == (405, "UNSUPPORTED"), body
    written = {e["action"] for e in upstream.requests()} & {
        "ecr-public:CreateRepository", "ecr-public:InitiateLayerUpload",
        "ecr-public:PutImage", "ecr-public:BatchDeleteImage"}
    assert written == set()
